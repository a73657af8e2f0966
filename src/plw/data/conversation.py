"""One conversation -> token ids of its rendered text, with the completion, role and message of every token.

The rule (docs/chat-templates.md; docs/reference.md, "What plw computes, exactly"): the ids of a row are the ids the tokenizer gives the *whole* rendered conversation,
and the prompt/completion boundary and the turns are found in characters, then carried to tokens through the
tokenizer's offset mapping. Tokenizing pieces separately is not exact: a SentencePiece/Metaspace tokenizer prepends
``▁`` to every piece, a byte-level BPE may merge across a boundary. Here:

1. ``full`` is the template's text for the conversation and ``before`` its text for the turns before the last
   assistant turn with the generation prompt. The completion starts where ``before`` ends. A template that renders the
   generation prompt unlike the header it writes above an answer (``<think>\\n`` in DeepSeek-V3, Nemotron-3) is split
   where the two texts part, provided the earlier turns themselves are a prefix of ``full``.
2. The completion ends with a stop token, followed by whitespace and repeats of it or EOS; anything after that (a
   header of a next turn, as Hammer2.1 appends) is left out of the row. When the model's stop tokens are known
   (:mod:`plw.data.stops`: ``stop_tokens`` or its generation config) the stop token is the first of them after the
   answer, and a special token that is not one of them is a header, cut off with what follows (GLM-Edge writes
   ``<|assistant|>`` after the last answer). Otherwise it is the first special token the template writes after the
   answer (its end-of-turn). When the completion ends with no stop token, EOS is appended (``add_eos``).
3. Each character gets the message it belongs to: the text a prefix of the conversation adds (the header that opens
   an assistant turn belongs to the turn before it), then the characters of each message's content wherever the
   template put them (system text folded into the first user turn is ``system``). Text before the first message (an
   injected default system prompt, BOS) belongs to no message (``-1``) and has role ``system``.
4. Templates that rewrite history (render earlier turns differently once later turns exist) are detected when a
   prefix of the conversation is not a prefix of the whole; the last turn is still exact, and contents are still
   tagged by their characters.

A token belongs to the completion when any of its characters does; it takes the role and message of its first
character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .chat import ChatOptions, render
from .errors import RecordError
from .stops import stop_ids

ROLES = ("system", "user", "assistant", "tool")
_SENTINEL = "\u2063plw-sentinel\u2063"


@dataclass
class Encoded:
    """A conversation as tokens: ``completion[i]`` is 1 for completion tokens; ``message[i]`` is the index of the
    message token i belongs to (-1: template text before the first message); ``role[i]`` indexes :data:`ROLES`."""

    input_ids: list[int]
    completion: list[int]
    role: list[int]
    message: list[int]
    eos_appended: bool = False
    tail_cut: bool = False
    history_rewritten: bool = False


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def completion_start(tokenizer: Any, messages: list[dict], full: str, options: ChatOptions) -> int:
    """Character where the completion (the last assistant turn, after its header) starts in ``full``."""
    before = render(tokenizer, messages[:-1], True, options)
    if full.startswith(before):
        return len(before)
    history = render(tokenizer, messages[:-1], False, options)
    split = _common_prefix(before, full)
    if full.startswith(history) and split >= len(history):
        return split
    raise RecordError(
        "the chat template does not render the turns before the last assistant turn as a prefix of the whole "
        "conversation, so the completion cannot be located (try multi_turn: expand, or a training template in "
        "chat_template)"
    )


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (named ones and added tokens marked special)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids of ``text`` as the tokenizer encodes it (no special tokens added) and each token's character span."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("exact encoding needs a fast tokenizer (character offsets); load it with use_fast=True")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _content_end(messages: list[dict], full: str, start: int) -> int:
    """Where the text of the last message's content ends in ``full`` (``start`` when it cannot be found)."""
    content = messages[-1].get("content")
    content = content.strip() if isinstance(content, str) else ""
    if content and full.find(content, start) >= 0:
        return full.find(content, start) + len(content)
    tail = content[-24:].strip()  # a template may rewrite the start of the answer (drop reasoning, ...)
    if tail and full.rfind(tail, start) >= 0:
        return full.rfind(tail, start) + len(tail)
    return start


def stop_cut(
    tokenizer: Any,
    ids: list[int],
    offsets: list[tuple[int, int]],
    text: str,
    first: int,
    content_end: int,
    header: str,
    stops: frozenset[int] | None = None,
) -> tuple[int, bool]:
    """``(end, stopped)``: the completion keeps tokens ``first..end-1``; ``stopped`` says it ends with a stop token.

    With the model's stop ids (``stops``), a stop token is the first of them after the answer, and any other special
    token is a header: cut off. Without them, a stop token is the first special token after the answer that is
    neither BOS nor part of the header that opens an assistant turn (``header``). After the stop token, whitespace,
    repeats of it and EOS are kept and anything else is the start of another turn, which is cut off.
    """
    specials = special_ids(tokenizer) | (stops or set())
    eos, bos = getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "bos_token_id", None)
    stop = None
    for j in range(first, len(ids)):
        start, end = offsets[j]
        if end <= content_end and start < content_end:
            continue
        tid = ids[j]
        piece = text[start:end]
        if tid in specials:
            if stops is not None:
                is_stop = tid in stops
            else:
                is_stop = tid == eos or (tid != bos and not (piece and piece in header))
            if stop is None and is_stop:
                stop = tid
            elif not (is_stop and tid in (stop, eos)):
                return j, stop is not None
        elif stop is not None and piece.strip():
            return j, True
    return len(ids), stop is not None


def _boundaries(
    tokenizer: Any, messages: list[dict], full: str, c0: int, options: ChatOptions
) -> tuple[list[int | None], bool]:
    """``b[k]``: where message k starts in ``full`` by prefix rendering (None where that is not possible), and
    whether some prefix renders as text that is not a prefix of the whole (the template rewrites history). A prefix
    the template refuses to render alone (a conversation of one system turn) is not a rewrite."""
    out: list[int | None] = [0]
    last, rewritten = 0, False
    for k in range(1, len(messages)):
        if k == len(messages) - 1:
            out.append(c0)
            break
        opens_assistant = messages[k]["role"] == "assistant"
        try:
            prefix = render(tokenizer, messages[:k], opens_assistant, options)
        except RecordError:
            out.append(None)
            continue
        if full.startswith(prefix) and last <= len(prefix) <= c0:
            last = len(prefix)
            out.append(last)
        else:
            out.append(None)
            rewritten = True
    return out, rewritten


def _preamble(tokenizer: Any, messages: list[dict], full: str, options: ChatOptions) -> int:
    """Length of the text the template writes before the first message when it is not a system message (a default
    system prompt it injects, BOS): found by rendering the first turn once with and once without a system turn."""
    if messages[0]["role"] == "system":
        return 0
    first = messages[0]
    try:
        system = [{"role": "system", "content": _SENTINEL}]
        with_system = render(tokenizer, system + [first], False, options)
        turn = with_system[len(render(tokenizer, system, False, options)) :]
        alone = render(tokenizer, [first], False, options)
    except RecordError:  # a template without system turns
        return 0
    if _SENTINEL in turn or not turn or not alone.endswith(turn) or not full.startswith(alone[: -len(turn)]):
        return 0
    return len(alone) - len(turn)


def char_messages(
    tokenizer: Any, messages: list[dict], full: str, c0: int, options: ChatOptions
) -> tuple[list[int], bool]:
    """The message index of every character of ``full[:c0]`` (-1: template text before the first message) and
    whether the template rewrites history (some prefix of the conversation is not a prefix of the whole)."""
    bounds, rewritten = _boundaries(tokenizer, messages, full, c0, options)
    owner = [0] * c0
    # Prefix rendering where it is stable; elsewhere a turn starts where its content starts.
    cursor = 0
    starts: list[int] = []
    for k, b in enumerate(bounds[: len(messages) - 1]):
        if b is None:
            content = (messages[k].get("content") or "").strip()
            pos = full.find(content, cursor, c0) if content else -1
            b = pos if pos >= 0 else cursor
        b = max(b, cursor)
        starts.append(b)
        cursor = b
    starts.append(c0)
    for k in range(len(messages) - 1):
        for i in range(starts[k], starts[k + 1]):
            owner[i] = k
    pre = _preamble(tokenizer, messages, full, options)
    for i in range(min(pre, c0)):
        owner[i] = -1
    # The characters of each prompt message's content are that message's, wherever the template put them.
    cursor = 0
    for k, msg in enumerate(messages[:-1]):
        content = msg.get("content")
        content = content.strip() if isinstance(content, str) else ""
        if not content:
            continue
        pos = full.find(content, starts[k], c0)
        if pos < 0:
            pos = full.find(content, cursor, c0)
        if pos < 0:
            continue
        for i in range(pos, pos + len(content)):
            owner[i] = k
        cursor = pos + len(content)
    return owner, rewritten


def encode_chat(tokenizer: Any, messages: list[dict], options: ChatOptions) -> Encoded:
    """Encode a conversation whose last message is the assistant turn to learn (see the module docstring)."""
    full = render(tokenizer, messages, False, options)
    c0 = completion_start(tokenizer, messages, full, options)
    ids, offsets = tokenize_with_offsets(tokenizer, full)
    first = next((j for j, (s, e) in enumerate(offsets) if e > c0 or (s == e and s >= c0)), len(ids))
    if first == len(ids):
        raise RecordError("the completion renders to no tokens")
    header = render(tokenizer, messages[:-1], True, options)[len(render(tokenizer, messages[:-1], False, options)) :]
    stops = stop_ids(tokenizer, options.stop_tokens)
    end, stopped = stop_cut(tokenizer, ids, offsets, full, first, _content_end(messages, full, c0), header, stops)
    owner, rewritten = char_messages(tokenizer, messages, full, c0, options)
    last = len(messages) - 1
    message = [owner[min(s, c0 - 1)] if c0 else -1 for s, _ in offsets[:first]] + [last] * (end - first)
    role = [ROLES.index(messages[m]["role"]) if m >= 0 else 0 for m in message]
    ids = ids[:end]
    eos = getattr(tokenizer, "eos_token_id", None)
    append = options.add_eos == "always" and ids[-1] != eos or options.add_eos == "auto" and not stopped
    if append:
        if eos is None:
            raise RecordError(
                "the chat template ends the answer with no stop token and the tokenizer has no EOS token to append"
            )
        ids.append(eos)
        message.append(last)
        role.append(ROLES.index("assistant"))
    completion = [0] * first + [1] * (len(ids) - first)
    return Encoded(ids, completion, role, message, append, end < len(offsets), rewritten)
