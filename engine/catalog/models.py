"""The built-in base models, by name (torch-free): what a spec's ``model.name`` offers besides a local folder or a
cached Hugging Face id. Loading them: ``engine.model.base``."""

BUILTIN_MODELS: tuple[str, ...] = ("tiny", "smollm2-135m")  # tiny: random-init, built on the fly for tests
