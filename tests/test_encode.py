"""Token-exact prompt/completion segments for several chat-template styles, truncation and bad records."""

from __future__ import annotations

import copy

import pytest

import plw
from plw.data.encode import RecordError, TooLongError, encode, encode_records

CHATML_NO_SYSTEM = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA2_INST = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
RECORD = {"prompt": "What is 2 + 2? Answer with a number.", "completion": "4"}


def with_template(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def segments(tok, row):
    prompt = [t for t, m in zip(row["input_ids"], row["prompt_mask"], strict=True) if m]
    completion = [t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m]
    return tok.decode(prompt), tok.decode(completion)


def check_row_shape(row):
    n = len(row["input_ids"])
    assert all(len(row[k]) == n for k in ("attention_mask", "prompt_mask", "completion_mask"))
    assert all(p + c == 1 for p, c in zip(row["prompt_mask"], row["completion_mask"], strict=True))
    # prompt first, then completion: one switch only
    assert row["prompt_mask"] == sorted(row["prompt_mask"], reverse=True)


def test_smollm2_template_segments(tokenizer):
    row = encode(tokenizer, RECORD)
    check_row_shape(row)
    prompt, completion = segments(tokenizer, row)
    # Hand-written expectations for SmolLM2's template (it injects a default system prompt).
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2? Answer with a number.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert completion == "4<|im_end|>\n"
    assert sum(row["completion_mask"]) == 3  # "4", <|im_end|>, "\n"
    # The whole sequence is what the tokenizer itself produces for the full conversation.
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": RECORD["prompt"]}, {"role": "assistant", "content": "4"}], tokenize=True
    )
    full_ids = full["input_ids"] if isinstance(full, dict) or hasattr(full, "keys") else full
    assert row["input_ids"] == list(full_ids)


def test_system_field_replaces_default_system_prompt(tokenizer):
    row = encode(tokenizer, {**RECORD, "system": "Be brief."})
    prompt, _ = segments(tokenizer, row)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_chatml_without_system_prompt(tokenizer):
    tok = with_template(tokenizer, CHATML_NO_SYSTEM)
    row = encode(tok, {"prompt": "Name a colour.", "completion": "Blue, like the sky."})
    check_row_shape(row)
    prompt, completion = segments(tok, row)
    assert prompt == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "Blue, like the sky.<|im_end|>\n"


def test_llama2_inst_template(tokenizer):
    tok = with_template(tokenizer, LLAMA2_INST)
    row = encode(tok, {"prompt": "Name a colour.", "completion": "Blue."})
    check_row_shape(row)
    prompt, completion = segments(tok, row)
    # Llama-2 has no generation prompt: the prompt ends with [/INST], the completion starts with a space.
    assert prompt == f"{tok.bos_token}[INST] Name a colour. [/INST]"
    assert completion == f" Blue. {tok.eos_token}"


def test_plain_fallback_without_template(tokenizer):
    tok = with_template(tokenizer, None)
    row = encode(tok, {"prompt": "Q: 2+2?", "completion": "4"})
    check_row_shape(row)
    prompt, completion = segments(tok, row)
    # SmolLM2's tokenizer does not add BOS to ordinary text, so plain mode adds none either.
    assert prompt == "Q: 2+2?\n"
    assert completion == f"4{tok.eos_token}"
    assert row["input_ids"][-1] == tok.eos_token_id
    with pytest.raises(ValueError, match="no chat template"):
        encode(tok, RECORD, template="chat")


def test_truncation_policies(tokenizer):
    long = {"prompt": "word " * 300, "completion": "The end."}
    full = encode(tokenizer, long)
    n = len(full["input_ids"])
    with pytest.raises(TooLongError):
        encode(tokenizer, long, max_length=100)
    cut = encode(tokenizer, long, max_length=100, truncation="truncate_prompt_left")
    assert len(cut["input_ids"]) == 100
    assert cut.pop("truncated_tokens") == n - 100
    # The completion is intact and the prompt keeps its last tokens (the generation prompt among them).
    assert cut["input_ids"] == full["input_ids"][n - 100 :]
    assert sum(cut["completion_mask"]) == sum(full["completion_mask"])
    # A completion that alone does not fit is never cut: the record is refused under either policy.
    with pytest.raises(TooLongError):
        encode(tokenizer, {"prompt": "hi", "completion": "x " * 200}, max_length=50, truncation="truncate_prompt_left")


def test_encode_records_reports_what_each_policy_touched(tokenizer):
    records = [
        {"prompt": "short", "completion": "ok"},
        {"prompt": "word " * 300, "completion": "ok"},
        {"prompt": "also short", "completion": "fine"},
        {"prompt": "word " * 400, "completion": "ok"},
    ]
    rows, report = encode_records(tokenizer, records, max_length=120)
    assert (report.read, report.kept, report.truncated, report.dropped) == (4, 2, 0, {"too_long": 2})
    assert report.examples["too_long"] == ["record 1", "record 3"]
    rows, report = encode_records(tokenizer, records, max_length=120, truncation="truncate_prompt_left")
    assert (report.read, report.kept, report.truncated, report.dropped) == (4, 4, 2, {})
    assert all(len(r["input_ids"]) <= 120 and "truncated_tokens" not in r for r in rows)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"completion": "x"}, "missing field 'prompt'"),
        ({"prompt": "x"}, "missing field 'completion'"),
        ({"prompt": 3, "completion": "x"}, "'prompt' must be a string"),
        ({"prompt": "x", "completion": ["a"]}, "'completion' must be a string"),
        ({"prompt": "x", "completion": "  "}, "empty completion"),
        (["not", "a", "dict"], "expected a JSON object"),
    ],
)
def test_bad_records_name_the_record(tokenizer, record, message):
    with pytest.raises(RecordError, match=message) as err:
        encode_records(tokenizer, [{"prompt": "fine", "completion": "ok"}, record], names=["f.jsonl:1", "f.jsonl:2"])
    assert str(err.value).startswith("f.jsonl:2")


def test_public_api_exports_encode():
    assert plw.encode is encode
