"""Chat ``messages`` records: conversations encoded with every token tagged by the role of its turn.

A record ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}`` is rendered with the
chat template and encoded by :func:`plw.data.conversation.encode_chat`: the ids are those of the whole rendered
conversation, and turns are found by characters. Two conventions keep the roles consistent with the
prompt/completion split of docs/reference.md ("What plw computes, exactly"):

* the generation prompt that opens an assistant turn (``<|im_start|>assistant\\n`` for SmolLM2) belongs to the
  turn before it, so for a single exchange ``role == assistant`` is exactly the completion of
  :func:`plw.data.encode.encode`;
* text the template adds before the first turn (a default system prompt that it injects, a BOS token) is tagged
  ``system``, and so is system text that the template folds into the first user turn.

By default the last assistant turn is the completion and everything before it the prompt (``completion="last"``);
``completion="all"`` makes every assistant turn completion (refused for templates that rewrite history). ``role_ids``
index :data:`ROLES`; ``turn_ids`` give the index of the message each token belongs to (-1 for template text before
the first message), so :mod:`plw.roles` can weight roles and turn positions, and per-message fields (a ``weight``)
can be looked up per token.
"""

from __future__ import annotations

from typing import Any

from .chat import ChatOptions, has_template
from .chat import render as render_chat
from .conversation import ROLES, Encoded, char_messages, completion_start, encode_chat
from .errors import RecordError, TooLongError

TRUNCATION_POLICIES = ("drop", "truncate_prompt_left")

__all__ = ["ROLES", "TRUNCATION_POLICIES", "encode_messages", "messages_problem", "render_segments", "split_messages"]


def _content_ok(turn: dict) -> bool:
    content = turn.get("content")
    if isinstance(content, str):
        return True
    # An assistant turn that only calls tools may have no content.
    return content is None and turn.get("role") == "assistant" and bool(turn.get("tool_calls"))


def messages_problem(messages: Any) -> str | None:
    """Why ``messages`` is not a usable conversation (a short reason), or None when it is."""
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for turn in messages:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not _content_ok(turn):
            return "a turn is not {role: str, content: str}"
        if turn["role"] not in ROLES:
            return f"unknown role {turn['role']!r}"
    roles = [t["role"] for t in messages]
    if "assistant" not in roles:
        return "no assistant turn"
    if roles[-1] != "assistant":
        return "turns after the last assistant turn"
    if not (messages[-1].get("content") or "").strip() and not messages[-1].get("tool_calls"):
        return "empty completion"
    return None


def _check(tokenizer: Any, messages: Any, options: ChatOptions) -> None:
    problem = messages_problem(messages)
    if problem:
        raise RecordError(problem)
    if not has_template(tokenizer, options):
        raise RecordError("messages records need a tokenizer with a chat template (or a chat_template file)")


def render_segments(tokenizer: Any, messages: list[dict], options: ChatOptions | None = None) -> list[tuple[str, str]]:
    """``[(role, text), ...]``: the rendered conversation cut where the owning message changes (a leading ``system``
    segment for a template preamble); the texts concatenate to the rendered conversation up to the end of the
    last turn. Raises :class:`RecordError` when the last assistant turn cannot be located."""
    options = options or ChatOptions()
    _check(tokenizer, messages, options)
    full = render_chat(tokenizer, messages, False, options)
    c0 = completion_start(tokenizer, messages, full, options)
    owner, _ = char_messages(tokenizer, messages, full, c0, options)
    segments: list[tuple[int, str]] = []
    for i, m in enumerate(owner):
        if segments and segments[-1][0] == m:
            segments[-1] = (m, segments[-1][1] + full[i])
        else:
            segments.append((m, full[i]))
    segments.append((len(messages) - 1, full[c0:]))
    return [("system" if m < 0 else messages[m]["role"], text) for m, text in segments]


def split_messages(tokenizer: Any, messages: list[dict], options: ChatOptions | None = None) -> tuple[str, str]:
    """``(prompt_text, completion_text)``: the rendered text up to and including the generation prompt of the last
    assistant turn, and the rest (before any stop-token handling)."""
    segments = render_segments(tokenizer, messages, options)
    return "".join(text for _, text in segments[:-1]), segments[-1][1]


def truncate(row: dict[str, list[int]], max_length: int | None, truncation: str) -> dict[str, list[int]]:
    """Apply ``max_length`` to an encoded row: drop it (:class:`TooLongError`) or cut prompt tokens on the left; a
    completion is never cut and keeps at least one prompt token before it. Adds ``truncated_tokens`` when cut."""
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    n = len(row["input_ids"])
    if max_length is None or n <= max_length:
        return row
    excess = n - max_length
    n_prompt = row["completion_mask"].index(1)
    if truncation == "drop" or excess > n_prompt - 1:
        raise TooLongError(
            f"{n} tokens > max_length {max_length} (prompt {n_prompt}, completion {sum(row['completion_mask'])}; "
            f"truncation={truncation!r})"
        )
    out = {k: (v[excess:] if isinstance(v, list) else v) for k, v in row.items()}
    out["truncated_tokens"] = excess
    return out


def encode_messages(
    tokenizer: Any,
    messages: list[dict] | dict,
    max_length: int | None = None,
    truncation: str = "drop",
    completion: str = "last",
    options: ChatOptions | None = None,
) -> dict[str, list[int]]:
    """Encode a conversation into ``input_ids``, ``attention_mask``, ``prompt_mask``, ``completion_mask``,
    ``role_ids`` (indices into :data:`ROLES`) and ``turn_ids`` (index of each token's message).

    ``max_length`` and ``truncation`` work as in :func:`plw.data.encode.encode` (a completion is never cut;
    ``truncate_prompt_left`` cuts the oldest tokens).
    """
    if isinstance(messages, dict):
        messages = messages.get("messages")
    return encode_conversation(tokenizer, messages, max_length, truncation, completion, options)[0]


def encode_conversation(
    tokenizer: Any,
    messages: list[dict],
    max_length: int | None = None,
    truncation: str = "drop",
    completion: str = "last",
    options: ChatOptions | None = None,
) -> tuple[dict[str, list[int]], Encoded]:
    """:func:`encode_messages` and the :class:`~plw.data.conversation.Encoded` behind the row (its flags say
    whether EOS was appended, text after the stop token was cut, the template rewrites history)."""
    options = options or ChatOptions()
    if completion not in ("last", "all"):
        raise ValueError(f"completion must be 'last' or 'all', got {completion!r}")
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    _check(tokenizer, messages, options)
    enc = encode_chat(tokenizer, messages, options)
    target = enc.completion
    if completion == "all":
        if enc.history_rewritten:
            raise RecordError(
                "the chat template renders earlier turns differently once later turns exist, so earlier assistant "
                "turns cannot be trained as rendered here; use multi_turn: expand"
            )
        target = [int(c or ROLES[r] == "assistant") for c, r in zip(enc.completion, enc.role, strict=True)]
    if not any(target):
        raise RecordError("the completion renders to no tokens")
    row = {
        "input_ids": enc.input_ids,
        "attention_mask": [1] * len(enc.input_ids),
        "prompt_mask": [1 - c for c in target],
        "completion_mask": target,
        "role_ids": enc.role,
        "turn_ids": enc.message,
    }
    return truncate(row, max_length, truncation), enc
