"""The stop tokens of a model: what generation stops on, so that a completion can end with one of them.

A chat template's end-of-turn is usually a stop token, but not always: GLM-Edge's template writes ``<|assistant|>``
after every conversation, so the first special token after the answer opens another assistant turn. The model's
``generation_config.json`` lists the ids it really stops on (``eos_token_id``: an int or a list). When plw knows
them, a special token after the answer that is not one of them is a header and is cut off
(:func:`plw.data.conversation.stop_cut`).

Where the ids come from, first match wins:

1. ``stop_tokens`` given by the user (token strings or ids), which overrides the generation config;
2. ``generation_config.json`` next to the tokenizer (its ``name_or_path``: a local folder, or a hub id already in the
   local Hugging Face cache; nothing is downloaded);
3. none: the template's end-of-turn rule of :mod:`plw.data.conversation` applies.

In cases 1 and 2 the tokenizer's EOS is a stop token too (it is what ``add_eos`` appends).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

GENERATION_CONFIG = "generation_config.json"


def check_stop_tokens(value: Any) -> tuple[str | int, ...] | None:
    """``stop_tokens`` as a tuple of token strings and ids (None: not given); a one-line ValueError otherwise."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int)) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"stop_tokens must be a non-empty list of token strings or ids, got {value!r}")
    for item in items:
        ok_id = isinstance(item, int) and not isinstance(item, bool) and item >= 0
        if not (ok_id or (isinstance(item, str) and item)):
            raise ValueError(f"stop_tokens: {item!r} is neither a token string nor a token id >= 0")
    return tuple(items)


def _generation_config_file(name_or_path: str) -> Path | None:
    """The generation config of a model folder or of a locally cached hub id (None when there is none)."""
    if not name_or_path:
        return None
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        path = folder / GENERATION_CONFIG
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name_or_path, GENERATION_CONFIG)
    except ValueError:  # not a valid hub id
        return None
    return Path(cached) if isinstance(cached, str) else None


@lru_cache(maxsize=32)
def _eos_ids_in(path: str, mtime_ns: int) -> tuple[int, ...] | None:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({' '.join(str(err).split())})") from None
    eos = config.get("eos_token_id") if isinstance(config, dict) else None
    if eos is None:
        return None
    ids = [eos] if isinstance(eos, int) else eos
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{path}: eos_token_id must be a token id or a list of them, got {eos!r}")
    return tuple(ids) or None


def generation_stop_ids(name_or_path: str) -> tuple[int, ...] | None:
    """``eos_token_id`` of the model's ``generation_config.json`` as a tuple of ids (None: no such file or key)."""
    path = _generation_config_file(name_or_path)
    if path is None:
        return None
    return _eos_ids_in(str(path), path.stat().st_mtime_ns)


def _token_id(tokenizer: Any, token: str | int) -> int:
    if isinstance(token, int):
        if token >= len(tokenizer):
            raise ValueError(f"stop_tokens: id {token} is outside the tokenizer's vocabulary ({len(tokenizer)} ids)")
        return token
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token", None)
    if tid is None or (tid == getattr(tokenizer, "unk_token_id", None) and token != unk):
        raise ValueError(f"stop_tokens: {token!r} is not a token of the tokenizer")
    return int(tid)


def stop_ids(tokenizer: Any, stop_tokens: tuple[str | int, ...] | None = None) -> frozenset[int] | None:
    """The ids a completion may end with: ``stop_tokens`` if given, else the generation config's, each with the
    tokenizer's EOS added; None when neither is known (then the template's end-of-turn decides)."""
    if stop_tokens is not None:
        ids = [_token_id(tokenizer, t) for t in stop_tokens]
    else:
        found = generation_stop_ids(str(getattr(tokenizer, "name_or_path", "") or ""))
        if found is None:
            return None
        ids = list(found)
    eos = getattr(tokenizer, "eos_token_id", None)
    return frozenset(ids + ([eos] if eos is not None else []))
