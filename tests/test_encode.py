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


def test_render_splits_the_templates_own_text_where_the_answer_starts(tokenizer):
    from plw.data import render

    record = {**RECORD, "system": "Be brief."}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": RECORD["prompt"]},
        {"role": "assistant", "content": RECORD["completion"]},
    ]
    prompt_text, completion_text = render(tokenizer, record)
    # Independent reference: the tokenizer's own rendering of the conversation, and of it without the answer.
    assert prompt_text + completion_text == tokenizer.apply_chat_template(messages, tokenize=False)
    assert prompt_text == tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert completion_text.startswith("4")
    # The encoder's completion tokens decode to the rendered completion.
    assert segments(tokenizer, encode(tokenizer, record))[1] == completion_text
    # Plain mode: the prompt and the separator, then the completion as written (no BOS/EOS).
    assert render(tokenizer, RECORD, template="plain", separator=" ## ") == (RECORD["prompt"] + " ## ", "4")


def bos_tokenizer(bos="<s>", eos="</s>"):
    """A tiny byte-level BPE tokenizer that starts ordinary text with BOS, as Llama's do."""
    from tokenizers import processors

    from tests.tiny_tokenizers import tiny_tokenizer

    tok = tiny_tokenizer("bpe", bos=bos, eos=eos)
    if bos:
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)]
        )
    return tok


def test_plain_mode_keeps_the_tokenizers_bos_convention_and_eos_choice():
    from tests.tiny_tokenizers import tiny_tokenizer

    record = {"prompt": "Hello world", "completion": "Paris"}
    tok = bos_tokenizer()
    assert tok("a")["input_ids"][0] == tok.bos_token_id  # the convention under test
    row = encode(tok, record, template="plain")
    check_row_shape(row)
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    # Reference: BOS once, then the tokenizer's own ids of the text, then EOS; the split is where "Paris" starts.
    body = tok("Hello world\nParis", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == [tok.bos_token_id, *body, tok.eos_token_id]
    assert segments(tok, row) == ("<s>Hello world\n", "Paris</s>")
    # Without BOS in the tokenizer, none is added; add_eos never leaves the completion without a stop token.
    no_bos = tiny_tokenizer("bpe", eos="</s>")
    assert segments(no_bos, encode(no_bos, record, template="plain")) == ("Hello world\n", "Paris</s>")
    row = encode(no_bos, record, template="plain", add_eos="never")
    assert segments(no_bos, row) == ("Hello world\n", "Paris") and no_bos.eos_token_id not in row["input_ids"]
    no_eos = tiny_tokenizer("bpe")
    with pytest.raises(ValueError) as err:
        encode(no_eos, record, template="plain")
    assert str(err.value) == "plain template needs a tokenizer with an EOS token (or add_eos: never)"
    _, report = encode_records(no_bos, [record, record], template="plain")
    assert report.eos_appended == 2


@pytest.mark.parametrize("bad", [1, 0, -5, 2.5, "3", True])
def test_encode_records_refuses_a_max_length_under_two_or_not_an_integer(tokenizer, bad):
    with pytest.raises(ValueError) as err:
        encode_records(tokenizer, [RECORD], max_length=bad)
    assert str(err.value) == f"max_length must be an integer >= 2, got {bad!r}"


def test_encode_records_accepts_max_length_two(tokenizer):
    # Two tokens is the least a row can be (one prompt token, one completion token): the record is dropped, not
    # refused.
    rows, report = encode_records(tokenizer, [RECORD], max_length=2)
    assert rows == [] and report.dropped == {"too_long": 1}


def test_an_expanded_turn_too_long_is_dropped_and_counted_and_later_turns_kept(tokenizer):
    messages = [
        {"role": "user", "content": "Say a lot."},
        {"role": "assistant", "content": "word " * 120},  # alone longer than max_length: cannot be kept
        {"role": "user", "content": "Now one word."},
        {"role": "assistant", "content": "Fine."},  # fits once the history is cut on the left
    ]
    rows, report = encode_records(
        tokenizer,
        [{"messages": messages}, {"messages": messages[:2]}],
        max_length=80,
        truncation="truncate_prompt_left",
        multi_turn="expand",
        names=["chat.jsonl:1", "chat.jsonl:2"],
    )
    assert report.dropped == {"too_long": 2}
    assert report.examples["too_long"] == ["chat.jsonl:1", "chat.jsonl:2"]
    assert (report.read, report.kept, report.truncated) == (2, 1, 1)
    assert len(rows) == 1 and segments(tokenizer, rows[0])[1] == "Fine.<|im_end|>\n"


def test_record_errors_name_the_record_once(tokenizer):
    good = {"prompt": "a", "completion": "b"}
    cases = [
        ({"prompt": 1, "completion": "b"}, "field 'prompt' must be a string, got int"),
        ({"prompt": "a", "completion": "b", "weight": -1}, "weight must be a finite number >= 0, got -1"),
        (["not", "a", "dict"], "expected a JSON object with 'prompt' and 'completion', got list"),
    ]
    for bad, message in cases:
        with pytest.raises(RecordError) as err:
            encode_records(tokenizer, [good, bad], names=["data.jsonl:1", "data.jsonl:2"])
        assert str(err.value) == f"data.jsonl:2: {message}"
        with pytest.raises(RecordError) as err:
            encode_records(tokenizer, [good, bad])
        assert str(err.value) == f"record 1: {message}"


def test_options_and_template_arguments_reach_the_template(tokenizer):
    from plw.data import chat_options

    shout = "{% for m in messages %}{{ (m['content'] | upper if loud else m['content']) + '|' }}{% endfor %}"
    shout += "{% if add_generation_prompt %}{{ '>' }}{% endif %}"
    record = {"prompt": "hi", "completion": "yes"}
    kwargs = {"chat_template": shout, "chat_template_kwargs": {"loud": True}}
    assert segments(tokenizer, encode(tokenizer, record, **kwargs))[0] == "HI|"
    rows, _ = encode_records(tokenizer, [record], **kwargs)
    assert segments(tokenizer, rows[0])[0] == "HI|"
    options = chat_options(chat_template=shout, chat_template_kwargs={"loud": False})
    assert segments(tokenizer, encode(tokenizer, record, options=options))[0] == "hi|"
    rows, _ = encode_records(tokenizer, [record], options=options)
    assert segments(tokenizer, rows[0])[0] == "hi|"


def test_validate_record_messages_and_template_choice(tokenizer):
    from plw.data import chat_options, render, validate_record
    from plw.data.encode import use_chat_template

    cases = [
        (["x"], "record: expected a JSON object with 'prompt' and 'completion', got list"),
        ({"prompt": "a"}, "record: missing field 'completion'"),
        ({"prompt": "a", "completion": 3}, "record: field 'completion' must be a string, got int"),
        ({"prompt": "a", "completion": "  "}, "record: empty completion (nothing to learn)"),
        ({"prompt": "a", "completion": "b", "system": 7}, "record: field 'system' must be a string"),
    ]
    for record, message in cases:
        with pytest.raises(RecordError) as err:
            validate_record(record)
        assert str(err.value) == message
    validate_record({"prompt": "a", "completion": "b", "system": None})  # an absent system prompt is fine
    with pytest.raises(ValueError) as err:
        use_chat_template(tokenizer, "jinja")
    assert str(err.value).startswith("template must be one of") and str(err.value).endswith("got 'jinja'")
    # render() honours options (here a template that replaces the tokenizer's) and the default separator.
    options = chat_options(chat_template=CHATML_NO_SYSTEM)
    assert render(tokenizer, RECORD, options=options) == (
        f"<|im_start|>user\n{RECORD['prompt']}<|im_end|>\n<|im_start|>assistant\n",
        "4<|im_end|>\n",
    )
    assert render(tokenizer, RECORD, template="plain") == (RECORD["prompt"] + "\n", "4")
    # A tokenizer without a template renders plain text, unless the options bring one.
    bare = with_template(tokenizer, None)
    assert render(bare, RECORD) == (RECORD["prompt"] + "\n", "4")
    assert render(bare, RECORD, options=options) == render(tokenizer, RECORD, options=options)
