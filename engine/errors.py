"""Errors the user can act on. Each message names the file, row or field at fault."""


class InputError(ValueError):
    """Bad user input (spec, dataset, score file, model name).

    Raised before anything is written; the CLI prints the message without a traceback and exits 2.
    """


class EngineStateError(RuntimeError):
    """A step was handed a model or features it cannot work with (a model left in training mode, an adapter
    without LoRA blocks, feature shards of different LoRA blocks): not the user's input, but nothing useful
    can be computed. Raised before anything is written; the CLI prints the message and exits 2."""
