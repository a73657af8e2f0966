"""Records -> token ids with exact prompt/completion masks.

A record ``{"prompt": str, "completion": str}`` (optionally ``"system": str``) becomes one token sequence in which
every token is either prompt or completion:

* **chat template** (the default when the tokenizer has one): the prompt is everything the template renders for
  ``[system?, user=prompt]`` with the generation prompt (``<|im_start|>assistant\\n`` for SmolLM2); the completion is
  everything the template renders after that when the assistant turn is added (the answer plus the end-of-turn
  token(s), so the model learns to stop). Prompt and completion text are tokenized separately, exactly as at
  inference time (the prompt is tokenized, the model then produces the completion tokens), so decoding the
  completion tokens gives back the rendered completion text.
* **plain** (no template, or ``template="plain"``): ``[BOS] prompt + separator`` is the prompt, ``completion + EOS``
  the completion. BOS is added only when the tokenizer adds it to ordinary text; the default separator is ``"\\n"``.

Records longer than ``max_length`` are never cut inside the completion: ``drop`` (default) leaves them out,
``truncate_prompt_left`` removes tokens from the start of the prompt. :func:`encode_records` counts what each
policy touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TRUNCATION_POLICIES = ("drop", "truncate_prompt_left")
TEMPLATES = ("auto", "chat", "plain")


class RecordError(ValueError):
    """A record cannot be encoded; the message names the record (file and line, or index)."""


class TooLongError(RecordError):
    """The record does not fit ``max_length`` under the chosen truncation policy."""


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


def _use_chat_template(tokenizer: Any, template: str) -> bool:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_template:
        raise ValueError("template='chat' but the tokenizer has no chat template")
    return template == "chat" or (template == "auto" and has_template)


def render(tokenizer: Any, record: dict, template: str = "auto", separator: str = "\n") -> tuple[str, str]:
    """Return ``(prompt_text, completion_text)`` as the template renders them (plain mode: without BOS/EOS)."""
    if not _use_chat_template(tokenizer, template):
        return record["prompt"] + separator, record["completion"]
    messages = [{"role": "user", "content": record["prompt"]}]
    if record.get("system") is not None:
        messages.insert(0, {"role": "system", "content": record["system"]})
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": record["completion"]}], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise RecordError(
            "the chat template does not render the prompt with the generation prompt as a prefix of the full "
            "conversation, so the completion cannot be located; use template='plain' or fix the template"
        )
    return prompt_text, full_text[len(prompt_text) :]


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer starts ordinary text with BOS (plain mode keeps that convention)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(
    tokenizer: Any,
    record: dict,
    max_length: int | None = None,
    truncation: str = "drop",
    template: str = "auto",
    separator: str = "\n",
) -> dict[str, list[int]]:
    """Encode one record into ``input_ids``, ``attention_mask``, ``prompt_mask`` and ``completion_mask``.

    Raises :class:`TooLongError` when the record exceeds ``max_length`` and cannot be shortened under
    ``truncation`` (``drop``, or a completion that alone does not fit).

    >>> row = encode(tok, {"prompt": "2+2?", "completion": "4"})     # doctest: +SKIP
    >>> tok.decode([t for t, c in zip(row["input_ids"], row["completion_mask"]) if c])  # doctest: +SKIP
    '4<|im_end|>\\n'
    """
    validate_record(record)
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    chat = _use_chat_template(tokenizer, template)
    prompt_text, completion_text = render(tokenizer, record, template, separator)
    prompt_ids = _ids(tokenizer, prompt_text)
    completion_ids = _ids(tokenizer, completion_text)
    if not chat:
        if _adds_bos(tokenizer):
            prompt_ids = [tokenizer.bos_token_id] + prompt_ids
        if tokenizer.eos_token_id is None:
            raise ValueError("plain template needs a tokenizer with an EOS token")
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    if not completion_ids:
        raise RecordError("the completion renders to no tokens")
    truncated = 0
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        excess = len(prompt_ids) + len(completion_ids) - max_length
        # Keep at least one prompt token: the first completion token must be predicted from something.
        if truncation == "drop" or excess > len(prompt_ids) - 1:
            raise TooLongError(
                f"{len(prompt_ids) + len(completion_ids)} tokens > max_length {max_length} "
                f"(prompt {len(prompt_ids)}, completion {len(completion_ids)}; truncation={truncation!r})"
            )
        prompt_ids = prompt_ids[excess:]
        truncated = excess
    n_p, n_c = len(prompt_ids), len(completion_ids)
    row = {
        "input_ids": prompt_ids + completion_ids,
        "attention_mask": [1] * (n_p + n_c),
        "prompt_mask": [1] * n_p + [0] * n_c,
        "completion_mask": [0] * n_p + [1] * n_c,
    }
    if truncated:
        row["truncated_tokens"] = truncated
    return row


@dataclass
class EncodeReport:
    """What encoding did to a set of records: nothing is dropped or shortened without being counted here."""

    read: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if len(self.examples.setdefault(reason, [])) < 5:
            self.examples[reason].append(where)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items()) or "none"
        return f"{self.read} read, {self.kept} kept, {self.truncated} truncated (prompt cut on the left), dropped: {dropped}"


def encode_records(
    tokenizer: Any,
    records: Iterable[dict],
    max_length: int | None = None,
    truncation: str = "drop",
    template: str = "auto",
    separator: str = "\n",
    names: Iterable[str] | None = None,
) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """Encode many records; return the rows and an :class:`EncodeReport`.

    Invalid records raise :class:`RecordError` naming the record (``names`` gives each one a location such as
    ``file.jsonl:12``); records that are too long are dropped or truncated as ``truncation`` says and counted.
    """
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    report = EncodeReport()
    rows = []
    name_iter = iter(names) if names is not None else None
    for i, record in enumerate(records):
        where = next(name_iter) if name_iter is not None else f"record {i}"
        report.read += 1
        try:
            if isinstance(record, dict) and "messages" in record:
                row = _encode_conversation(tokenizer, record, max_length, truncation, template)
            else:
                validate_record(record, where)
                row = encode(tokenizer, record, max_length, truncation, template, separator)
        except TooLongError:
            report.drop("too_long", where)
            continue
        except RecordError as err:
            msg = str(err)
            raise RecordError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        if row.pop("truncated_tokens", 0):
            report.truncated += 1
        attach_data_weight(row, record, where)  # record and message weights (plw.data.weights)
        rows.append(row)
        report.kept += 1
    return rows, report


def attach_data_weight(row: dict, record: Any, where: str) -> None:
    from .weights import attach_data_weight as attach

    attach(row, record, where)


def _encode_conversation(tokenizer: Any, record: dict, max_length: int | None, truncation: str, template: str) -> dict:
    """A ``messages`` record through :func:`plw.data.messages.encode_messages` (chat templates only)."""
    from .messages import encode_messages

    if template == "plain":
        raise RecordError("messages records need the chat template (template: auto or chat), not plain")
    row = encode_messages(tokenizer, record["messages"])
    if max_length is not None and len(row["input_ids"]) > max_length:
        # Raises TooLongError under "drop" or when the completion alone does not fit.
        row = encode_messages(tokenizer, record["messages"], max_length, truncation)
        row["truncated_tokens"] = 1
    return row


def rg_of_row(row: dict[str, list[int]]) -> float:
    """Generation ratio of an encoded row: completion tokens / prompt tokens (inf for an empty prompt)."""
    n_p, n_c = sum(row["prompt_mask"]), sum(row["completion_mask"])
    return n_c / n_p if n_p else math.inf
