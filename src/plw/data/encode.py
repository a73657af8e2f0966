"""Records -> token ids with exact prompt/completion masks.

A record ``{"prompt": str, "completion": str}`` (optionally ``"system": str``) or ``{"messages": [...]}`` becomes
token sequences in which every token is either prompt or completion:

* **chat template** (the default when the tokenizer has one, or a ``chat_template`` is given): the record is a
  conversation (``[system?, user=prompt, assistant=completion]``) encoded by
  :func:`plw.data.conversation.encode_chat`. The prompt is everything the template renders up to and including the
  generation prompt (``<|im_start|>assistant\\n`` for SmolLM2); the completion is the rest of the assistant turn
  and ends with a stop token: one of the model's (``stop_tokens``, else its ``generation_config.json``; a special
  token after the answer that is not one of them is cut off) or, when those are unknown, the template's
  end-of-turn; else EOS appended (``add_eos``). The ids are those of the
  whole rendered conversation, split by character offsets, so the split is exact for byte-level BPE and
  SentencePiece (Metaspace) tokenizers alike.
* **plain** (no template, or ``template="plain"``): ``[BOS] prompt + separator`` is the prompt, ``completion + EOS``
  the completion. BOS is added only when the tokenizer adds it to ordinary text; the default separator is ``"\\n"``.

Records longer than ``max_length`` are never cut inside the completion: ``drop`` (default) leaves them out,
``truncate_prompt_left`` removes tokens from the start of the prompt. :func:`encode_records` counts in a
:class:`~plw.data.report.LoadReport` what each policy touched, and how many completions got an EOS appended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .chat import ChatOptions, chat_options, has_template
from .conversation import tokenize_with_offsets
from .errors import RecordError, TooLongError
from .messages import TRUNCATION_POLICIES, encode_conversation, split_messages, truncate
from .report import LoadReport
from .stops import stop_ids

TEMPLATES = ("auto", "chat", "plain")

__all__ = [
    "TEMPLATES",
    "TRUNCATION_POLICIES",
    "RecordError",
    "TooLongError",
    "encode",
    "encode_record",
    "encode_records",
    "render",
    "validate_record",
]


def validate_record(record: Any, where: str = "record") -> None:
    """Check the fields of a prompt/completion record; raise :class:`RecordError` naming ``where``."""
    if not isinstance(record, dict):
        raise RecordError(
            f"{where}: expected a JSON object with 'prompt' and 'completion', got {type(record).__name__}"
        )
    for key in ("prompt", "completion"):
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
        if not isinstance(record[key], str):
            raise RecordError(f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}")
    if not record["completion"].strip():
        raise RecordError(f"{where}: empty completion (nothing to learn)")
    if "system" in record and record["system"] is not None and not isinstance(record["system"], str):
        raise RecordError(f"{where}: field 'system' must be a string")


def use_chat_template(tokenizer: Any, template: str, options: ChatOptions | None = None) -> bool:
    """Whether records go through a chat template (``template`` is auto, chat or plain)."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    available = has_template(tokenizer, options or ChatOptions())
    if template == "chat" and not available:
        raise ValueError("template='chat' but the tokenizer has no chat template (give chat_template)")
    return template == "chat" or (template == "auto" and available)


def _as_messages(record: dict) -> list[dict]:
    messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    if record.get("system") is not None:
        messages.insert(0, {"role": "system", "content": record["system"]})
    return messages


def render(
    tokenizer: Any, record: dict, template: str = "auto", separator: str = "\n", options: ChatOptions | None = None
) -> tuple[str, str]:
    """Return ``(prompt_text, completion_text)`` as the template renders them (plain mode: without BOS/EOS)."""
    if not use_chat_template(tokenizer, template, options):
        return record["prompt"] + separator, record["completion"]
    return split_messages(tokenizer, _as_messages(record), options)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer starts ordinary text with BOS (plain mode keeps that convention)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _encode_plain(tokenizer: Any, record: dict, separator: str, add_eos: str) -> tuple[dict, bool]:
    prompt = record["prompt"] + separator
    ids, offsets = tokenize_with_offsets(tokenizer, prompt + record["completion"])
    first = next((j for j, (s, e) in enumerate(offsets) if e > len(prompt)), len(ids))
    if first == len(ids):
        raise RecordError("the completion renders to no tokens")
    if _adds_bos(tokenizer):
        ids, first = [tokenizer.bos_token_id] + ids, first + 1
    eos = getattr(tokenizer, "eos_token_id", None)
    appended = add_eos != "never"
    if appended:
        if eos is None:
            raise ValueError("plain template needs a tokenizer with an EOS token (or add_eos: never)")
        ids.append(eos)
    completion = [0] * first + [1] * (len(ids) - first)
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "prompt_mask": [1 - c for c in completion]}
    row["completion_mask"] = completion
    return row, appended


def _options(tokenizer: Any, options: ChatOptions | None, **keys: Any) -> ChatOptions:
    """The options of a call (``options`` wins over the separate keys); given stop tokens are checked against the
    tokenizer here, once, so a wrong one fails before any record is read."""
    if options is None:
        options = chat_options(**{k: v for k, v in keys.items() if v is not None})
    if options.stop_tokens is not None:
        stop_ids(tokenizer, options.stop_tokens)
    return options


def encode_record(
    tokenizer: Any,
    record: dict,
    max_length: int | None = None,
    truncation: str = "drop",
    template: str = "auto",
    separator: str = "\n",
    options: ChatOptions | None = None,
) -> Iterator[tuple[dict[str, list[int]] | None, dict[str, bool]]]:
    """The rows of one record (several for a conversation under ``multi_turn: expand``), each with its flags
    ``{eos_appended, tail_cut, history_rewritten}`` (a row is None for an expanded turn that is too long). This is the one encoder behind training and ``plw stats``."""
    options = options or ChatOptions()
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    chat = use_chat_template(tokenizer, template, options)
    if isinstance(record, dict) and "messages" in record:
        if not chat:
            raise RecordError("messages records need the chat template (template: auto or chat), not plain")
        messages = record["messages"]
        ends = [len(messages)]
        if options.multi_turn == "expand" and isinstance(messages, list):
            ends = [k + 1 for k, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"]
        for end in ends:
            try:
                row, enc = encode_conversation(tokenizer, messages[:end], max_length, truncation, "last", options)
            except TooLongError:
                if len(ends) == 1:
                    raise
                yield None, {}  # one turn of an expanded conversation is too long: the others stay
                continue
            yield row, {"eos_appended": enc.eos_appended, "tail_cut": enc.tail_cut,
                        "history_rewritten": enc.history_rewritten}  # fmt: skip
        return
    validate_record(record)
    if not chat:
        row, appended = _encode_plain(tokenizer, record, separator, options.add_eos)
        yield truncate(row, max_length, truncation), {"eos_appended": appended}
        return
    row, enc = encode_conversation(tokenizer, _as_messages(record), max_length, truncation, "last", options)
    row.pop("role_ids")
    row.pop("turn_ids")
    yield row, {"eos_appended": enc.eos_appended, "tail_cut": enc.tail_cut}


def encode(
    tokenizer: Any,
    record: dict,
    max_length: int | None = None,
    truncation: str = "drop",
    template: str = "auto",
    separator: str = "\n",
    chat_template: str | Path | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    add_eos: str = "auto",
    options: ChatOptions | None = None,
    stop_tokens: list[str | int] | None = None,
) -> dict[str, list[int]]:
    """Encode one record into ``input_ids``, ``attention_mask``, ``prompt_mask`` and ``completion_mask`` (a
    ``messages`` record adds ``role_ids`` and ``turn_ids``; its last assistant turn is the completion).

    ``chat_template`` (a Jinja file or text) replaces the tokenizer's template; ``chat_template_kwargs`` are passed
    to it (``enable_thinking``, ``tools``, ...); ``add_eos`` is ``auto``, ``always`` or ``never``; ``stop_tokens``
    (token strings or ids) are what a completion may end with, overriding the generation config found next to the
    tokenizer (:mod:`plw.data.stops`); ``options`` (a :class:`ChatOptions`) replaces all four. Raises
    :class:`TooLongError` when the record exceeds ``max_length`` and cannot be shortened under ``truncation``.

    >>> row = encode(tok, {"prompt": "2+2?", "completion": "4"})     # doctest: +SKIP
    >>> tok.decode([t for t, c in zip(row["input_ids"], row["completion_mask"]) if c])  # doctest: +SKIP
    '4<|im_end|>\\n'
    """
    opts = _options(
        tokenizer,
        options,
        chat_template=chat_template,
        chat_template_kwargs=chat_template_kwargs,
        add_eos=add_eos,
        stop_tokens=stop_tokens,
    )
    row, _ = next(encode_record(tokenizer, record, max_length, truncation, template, separator, opts))
    return row  # type: ignore[return-value]  # a single conversation raises TooLongError instead of None


def encode_records(
    tokenizer: Any,
    records: Iterable[dict],
    max_length: int | None = None,
    truncation: str = "drop",
    template: str = "auto",
    separator: str = "\n",
    names: Iterable[str] | None = None,
    chat_template: str | Path | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    add_eos: str = "auto",
    multi_turn: str = "last",
    options: ChatOptions | None = None,
    stop_tokens: list[str | int] | None = None,
) -> tuple[list[dict[str, list[int]]], LoadReport]:
    """Encode many records; return the rows and a :class:`LoadReport`.

    Invalid records and template failures raise :class:`RecordError` naming the record (``names`` gives each one
    a location such as ``file.jsonl:12``); records that are too long are dropped or truncated as ``truncation``
    says and counted, as are completions that got an EOS appended. With ``multi_turn="expand"`` a conversation
    gives one row per assistant turn (``kept`` counts rows). The chat keys and ``stop_tokens`` are those of
    :func:`encode`; a completion cut at a header that is not a stop token counts as ``tail_cut`` and, with EOS
    appended, as ``eos_appended``.
    """
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    opts = _options(
        tokenizer,
        options,
        chat_template=chat_template,
        chat_template_kwargs=chat_template_kwargs,
        add_eos=add_eos,
        multi_turn=multi_turn,
        stop_tokens=stop_tokens,
    )
    report = LoadReport()
    rows = []
    name_iter = iter(names) if names is not None else None
    for i, record in enumerate(records):
        where = next(name_iter) if name_iter is not None else f"record {i}"
        report.read += 1
        try:
            validate = not (isinstance(record, dict) and "messages" in record)
            if validate:
                validate_record(record, where)
            for row, flags in encode_record(tokenizer, record, max_length, truncation, template, separator, opts):
                if row is None:
                    report.drop("too_long", where)
                    continue
                report.count(truncated=bool(row.pop("truncated_tokens", 0)), **flags)
                attach_data_weight(row, record, where)
                rows.append(row)
        except TooLongError:
            report.drop("too_long", where)
        except RecordError as err:
            msg = str(err)
            raise RecordError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    return rows, report


def attach_data_weight(row: dict, record: Any, where: str) -> None:
    """Record and message weights as the row's per-token ``data_weight`` (:mod:`plw.data.weights`)."""
    from .weights import attach_data_weight as attach

    attach(row, record, where)
