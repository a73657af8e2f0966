"""Chat ``messages`` records: multi-turn conversations encoded with every token tagged by the role of its turn.

A record ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}`` is rendered with the
tokenizer's chat template and cut into one text segment per turn by rendering prefixes of the conversation: turn
``k`` is what ``messages[:k+1]`` adds to ``messages[:k]``. Two conventions keep the roles consistent with the
prompt/completion split of DESIGN.md:

* the generation prompt that opens an assistant turn (``<|im_start|>assistant\\n`` for SmolLM2) belongs to the
  turn before it, so for a single exchange ``role == assistant`` is exactly the completion of
  :func:`plw.data.encode.encode`;
* text the template adds before the first turn (a default system prompt that it injects, a BOS token) is tagged
  ``system``: it is found by rendering the first turn once with and once without an explicit system turn.

By default the last assistant turn is the completion and everything before it the prompt (``completion="last"``);
``completion="all"`` makes every assistant turn completion. ``role_ids`` index :data:`ROLES` and ``turn_ids`` number
the segments, so :mod:`plw.roles` can weight roles and turn positions separately.
"""

from __future__ import annotations

from typing import Any

from .encode import TRUNCATION_POLICIES, RecordError, TooLongError

ROLES = ("system", "user", "assistant", "tool")
_SENTINEL = "\u2063plw-sentinel\u2063"


def messages_problem(messages: Any) -> str | None:
    """Why ``messages`` is not a usable conversation (a short reason), or None when it is."""
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for turn in messages:
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("role"), str)
            or not isinstance(turn.get("content"), str)
        ):
            return "a turn is not {role: str, content: str}"
        if turn["role"] not in ROLES:
            return f"unknown role {turn['role']!r}"
    roles = [t["role"] for t in messages]
    if "assistant" not in roles:
        return "no assistant turn"
    if roles[-1] != "assistant":
        return "turns after the last assistant turn"
    if not messages[-1]["content"].strip():
        return "empty completion"
    return None


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _preamble(tokenizer: Any, first: dict, rendered_first: str) -> str:
    """Text the template puts before the first (non-system) turn, e.g. an injected default system prompt."""
    try:
        system = [{"role": "system", "content": _SENTINEL}]
        with_system = _render(tokenizer, system + [first])
        turn = with_system[len(_render(tokenizer, system)) :]
    except Exception:  # a template without system turns: no preamble to separate
        return ""
    if _SENTINEL in turn or not turn or not rendered_first.endswith(turn):
        return ""
    return rendered_first[: len(rendered_first) - len(turn)]


def render_segments(tokenizer: Any, messages: list[dict]) -> list[tuple[str, str]]:
    """``[(role, text), ...]`` whose texts concatenate to the rendered conversation, one segment per turn (plus a
    leading ``system`` segment for a template preamble). Raises :class:`RecordError` when prefixes of the
    conversation do not render as prefixes of the whole (the turns then cannot be located)."""
    problem = messages_problem(messages)
    if problem:
        raise RecordError(problem)
    if not getattr(tokenizer, "chat_template", None):
        raise RecordError("messages records need a tokenizer with a chat template")
    full = _render(tokenizer, messages)
    ends = []
    for k in range(1, len(messages) + 1):
        opens_assistant = k < len(messages) and messages[k]["role"] == "assistant"
        prefix = _render(tokenizer, messages[:k], generation_prompt=opens_assistant)
        if not full.startswith(prefix) or (ends and len(prefix) < ends[-1]):
            raise RecordError(
                f"the chat template does not render the first {k} turns as a prefix of the whole conversation, "
                "so the turns cannot be located"
            )
        ends.append(len(prefix))
    ends[-1] = len(full)
    segments = []
    start = 0
    if messages[0]["role"] != "system":
        preamble = _preamble(tokenizer, messages[0], _render(tokenizer, messages[:1]))
        if preamble:
            segments.append(("system", preamble))
            start = len(preamble)
    for turn, end in zip(messages, ends, strict=True):
        segments.append((turn["role"], full[start:end]))
        start = end
    return segments


def split_messages(tokenizer: Any, messages: list[dict]) -> tuple[str, str]:
    """``(prompt_text, completion_text)``: everything up to and including the generation prompt of the last
    assistant turn, and that turn (used for token counts and Rg)."""
    segments = render_segments(tokenizer, messages)
    return "".join(text for _, text in segments[:-1]), segments[-1][1]


def encode_messages(
    tokenizer: Any,
    messages: list[dict] | dict,
    max_length: int | None = None,
    truncation: str = "drop",
    completion: str = "last",
) -> dict[str, list[int]]:
    """Encode a conversation into ``input_ids``, ``attention_mask``, ``prompt_mask``, ``completion_mask``,
    ``role_ids`` (indices into :data:`ROLES`) and ``turn_ids`` (index of each token's segment, in order).

    Each segment of :func:`render_segments` is tokenized on its own, so every token has exactly one role and
    decoding the tokens of a turn gives back its rendered text. ``max_length`` and ``truncation`` work as in
    :func:`plw.data.encode.encode` (a completion is never cut; ``truncate_prompt_left`` cuts the oldest tokens).
    """
    if isinstance(messages, dict):
        messages = messages.get("messages")
    if completion not in ("last", "all"):
        raise ValueError(f"completion must be 'last' or 'all', got {completion!r}")
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    segments = render_segments(tokenizer, messages)
    ids: list[int] = []
    roles: list[int] = []
    turns: list[int] = []
    is_completion: list[int] = []
    last = len(segments) - 1
    for i, (role, text) in enumerate(segments):
        seg = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids += seg
        roles += [ROLES.index(role)] * len(seg)
        turns += [i] * len(seg)
        target = i == last if completion == "last" else role == "assistant"
        is_completion += [int(target)] * len(seg)
    if not any(is_completion):
        raise RecordError("the completion renders to no tokens")
    if max_length is not None and len(ids) > max_length:
        excess = len(ids) - max_length
        first_completion = is_completion.index(1)
        if truncation == "drop" or excess > first_completion - 1:
            raise TooLongError(f"{len(ids)} tokens > max_length {max_length} (truncation={truncation!r})")
        ids, roles, turns, is_completion = ids[excess:], roles[excess:], turns[excess:], is_completion[excess:]
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "prompt_mask": [1 - c for c in is_completion],
        "completion_mask": is_completion,
        "role_ids": roles,
        "turn_ids": turns,
    }
