"""Chat messages: every token tagged by the role of its turn, checked token-exactly against hand-written renders."""

from __future__ import annotations

import copy

import pytest

from plw.data.encode import RecordError, TooLongError, encode
from plw.data.messages import ROLES, encode_messages, messages_problem, render_segments, split_messages

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]
SYSTEM = {"role": "system", "content": "Answer in one word."}
SMOL_DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)

# A ChatML template without a default system prompt, written here so the test does not depend on a model's.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chatml_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHATML
    return tok


def expected_segments(with_system: bool, default_system: str | None) -> list[tuple[str, str]]:
    """The segments written out by hand: the generation prompt belongs to the turn before the assistant's."""
    head = [("system", "<|im_start|>system\nAnswer in one word.<|im_end|>\n")] if with_system else []
    if not with_system and default_system:
        head = [("system", default_system)]
    return head + [
        ("user", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
        ("assistant", "Hello!<|im_end|>\n"),
        ("user", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
        ("assistant", "4<|im_end|>\n"),
    ]


def runs(row: dict, tok) -> list[tuple[str, str]]:
    """Group consecutive tokens of one role and decode each group (a run may merge turns of the same role)."""
    out: list[tuple[str, list[int]]] = []
    for token, role in zip(row["input_ids"], row["role_ids"], strict=True):
        if out and out[-1][0] == ROLES[role]:
            out[-1][1].append(token)
        else:
            out.append((ROLES[role], [token]))
    return [(role, tok.decode(ids)) for role, ids in out]


@pytest.mark.parametrize("with_system", [False, True])
@pytest.mark.parametrize("template", ["smollm2", "chatml"])
def test_segments_and_tokens_are_exact(tokenizer, chatml_tokenizer, template, with_system):
    tok = tokenizer if template == "smollm2" else chatml_tokenizer
    messages = ([SYSTEM] if with_system else []) + CONVERSATION
    expected = expected_segments(with_system, SMOL_DEFAULT_SYSTEM if template == "smollm2" else None)
    assert render_segments(tok, messages) == expected
    row = encode_messages(tok, messages)
    # Token-exact: the ids are the tokenization of the whole rendered conversation ...
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full == "".join(text for _, text in expected)
    assert row["input_ids"] == tok(full, add_special_tokens=False)["input_ids"]
    # ... and each turn's tokens decode to that turn's text.
    assert runs(row, tok) == expected
    completion = [t for t, c in zip(row["input_ids"], row["completion_mask"], strict=True) if c]
    assert tok.decode(completion) == "4<|im_end|>\n"
    assert [p + c for p, c in zip(row["prompt_mask"], row["completion_mask"], strict=True)] == [1] * len(
        row["input_ids"]
    )
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    prompt_text, completion_text = split_messages(tok, messages)
    assert prompt_text == tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert completion_text == "4<|im_end|>\n"


def test_single_exchange_matches_prompt_completion_encoding(tokenizer):
    """One user turn + one assistant turn encodes exactly like the {prompt, completion} record, and the assistant
    role is the completion."""
    for system in (None, "Be brief."):
        messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION[:2]
        record = {"prompt": "Hi there", "completion": "Hello!"} | ({"system": system} if system else {})
        row, ref = encode_messages(tokenizer, messages), encode(tokenizer, record)
        for key in ("input_ids", "prompt_mask", "completion_mask"):
            assert row[key] == ref[key], key
        assert [int(ROLES[r] == "assistant") for r in row["role_ids"]] == ref["completion_mask"]


def test_all_assistant_turns_as_completion(chatml_tokenizer):
    tok = chatml_tokenizer
    row = encode_messages(tok, {"messages": CONVERSATION}, completion="all")
    targets = [t for t, c in zip(row["input_ids"], row["completion_mask"], strict=True) if c]
    assert tok.decode(targets) == "Hello!<|im_end|>\n4<|im_end|>\n"
    assert row["completion_mask"] == [int(ROLES[r] == "assistant") for r in row["role_ids"]]


def test_truncation(chatml_tokenizer):
    tok = chatml_tokenizer
    full = encode_messages(tok, CONVERSATION)
    n = len(full["input_ids"])
    with pytest.raises(TooLongError):
        encode_messages(tok, CONVERSATION, max_length=n - 1)
    cut = encode_messages(tok, CONVERSATION, max_length=n - 5, truncation="truncate_prompt_left")
    for key in ("input_ids", "role_ids", "completion_mask", "prompt_mask"):
        assert cut[key] == full[key][5:], key
    with pytest.raises(TooLongError):  # the completion is never cut
        encode_messages(tok, CONVERSATION, max_length=3, truncation="truncate_prompt_left")


def test_problems_are_named(tokenizer, chatml_tokenizer):
    assert messages_problem(CONVERSATION) is None
    assert messages_problem([]) == "messages is not a non-empty list"
    assert messages_problem(CONVERSATION[:1]) == "no assistant turn"
    assert messages_problem(CONVERSATION[:3]) == "turns after the last assistant turn"
    assert messages_problem([{"role": "robot", "content": "x"}]) == "unknown role 'robot'"
    assert messages_problem([{"role": "user"}]) == "a turn is not {role: str, content: str}"
    assert messages_problem([CONVERSATION[0], {"role": "assistant", "content": " "}]) == "empty completion"
    with pytest.raises(RecordError, match="no assistant turn"):
        encode_messages(tokenizer, CONVERSATION[:1])
    tok = copy.deepcopy(chatml_tokenizer)
    tok.chat_template = CHATML + "{{ 'END' }}"  # every render ends with END: prefixes are not prefixes
    with pytest.raises(RecordError, match="cannot be located"):
        render_segments(tok, CONVERSATION)
