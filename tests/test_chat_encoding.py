"""Chat-template encoding, case by case, on small templates written here and tiny tokenizers of every kind.

Each test states a behaviour and checks it against the template and the tokenizer called directly (the whole
rendered conversation and its ids), not against plw's own splitting.
"""

from __future__ import annotations

import json
import re

import pytest
from tokenizers import processors

from plw.config import ConfigError, from_dict
from plw.data.encode import encode, encode_records
from plw.data.errors import RecordError
from plw.data.messages import ROLES, encode_messages
from plw.data.sources import load_records
from plw.roles import parse_role_weights
from plw.stats import compute_stats
from tests.tiny_tokenizers import KINDS, tiny_tokenizer

TURN = "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
GEN = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
CHATML = "{% for m in messages %}" + TURN + "{% endfor %}" + GEN
# The last message gets no end-of-turn (as Qwen1.5-style templates do).
NO_END_LAST = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{% if not loop.last or add_generation_prompt %}{{ '<|im_end|>\\n' }}{% endif %}{% endfor %}" + GEN
)
# Always opens a next assistant turn after the conversation (as Hammer2.1-style templates do).
ALWAYS_HEADER = "{% for m in messages %}" + TURN + "{% endfor %}{{ '<|im_start|>assistant\\n' }}"
# System text folded into the first user turn; BOS before each [INST]; the answer ends with EOS.
FOLDED = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}{% if m['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
# Drops the reasoning of every assistant turn but the last (history rewriting, as Qwen3-style templates do).
DROPS_REASONING = (
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' }}{% endfor %}" + GEN
)
# Template options: a date and a thinking switch that changes the generation prompt only.
OPTIONS = (
    "{{ 'Date: ' + (date_string | default('none')) + '\\n' }}{% for m in messages %}" + TURN + "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think></think>' }}{% endif %}{% endif %}"
)
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
)
ADDS_NUMBER = "{% for m in messages %}{{ m['content'] + 1 }}{% endfor %}"

SPECIALS = ["<|im_start|>", "<|im_end|>"]
QA = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like the sky."}]
SYSTEM_QA = [{"role": "system", "content": "Be brief and answer in one word."}] + QA
RECORD = {"prompt": "Name a colour.", "completion": "Blue, like the sky."}


def tok_for(template: str, kind: str = "bpe", eos: str = "<|endoftext|>"):
    return tiny_tokenizer(kind, SPECIALS, "<s>", eos, template, template)


def whole(tok, messages, **kwargs):
    """The template and tokenizer called directly: the rendered text and its ids with offsets."""
    text = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, enc["input_ids"], enc["offset_mapping"]


def completion_text(tok, row) -> str:
    return tok.decode([t for t, c in zip(row["input_ids"], row["completion_mask"], strict=True) if c])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("template", [CHATML, FOLDED])
def test_ids_are_the_whole_conversations_ids_for_every_tokenizer_kind(kind, template):
    tok = tok_for(template, kind, eos="</s>")
    for messages in (QA, SYSTEM_QA):
        row = encode_messages(tok, messages)
        text, ids, offsets = whole(tok, messages)
        assert row["input_ids"] == ids
        # The boundary is where the template's generation prompt ends.
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        assert text.startswith(prompt)
        assert row["completion_mask"].index(1) == sum(e <= len(prompt) for _, e in offsets)
    if kind != "bpe" and template == CHATML:
        # The hazard this guards against: the pieces tokenized apart are not the whole (a ``▁`` is prepended).
        pieces = (
            tok(prompt, add_special_tokens=False)["input_ids"]
            + tok(text[len(prompt) :], add_special_tokens=False)["input_ids"]
        )
        assert pieces != ids


def test_completion_ends_with_the_templates_end_of_turn():
    tok = tok_for(CHATML)
    rows, report = encode_records(tok, [{"messages": QA}, RECORD])
    for row in rows:
        assert completion_text(tok, row) == "Blue, like the sky.<|im_end|>\n"
    assert report.eos_appended == 0 and "EOS appended" not in report.summary()


def test_eos_is_appended_when_the_template_writes_no_stop_token():
    tok = tok_for(NO_END_LAST)
    rows, report = encode_records(tok, [{"messages": QA}, RECORD])
    _, ids, _ = whole(tok, QA)
    for row in rows:
        assert row["input_ids"] == ids + [tok.eos_token_id]
        assert completion_text(tok, row) == "Blue, like the sky.<|endoftext|>"
    assert report.eos_appended == 2 and "EOS appended to 2 rows" in report.summary()
    never = encode(tok, RECORD, add_eos="never")
    assert never["input_ids"] == ids
    assert encode_records(tok, [RECORD], add_eos="never")[1].eos_appended == 0


def test_add_eos_always_appends_once():
    chatml = tok_for(CHATML)
    row = encode(chatml, RECORD, add_eos="always")
    assert completion_text(chatml, row) == "Blue, like the sky.<|im_end|>\n<|endoftext|>"
    folded = tok_for(FOLDED, eos="</s>")  # the template already ends the answer with EOS: not doubled
    row = encode(folded, RECORD, add_eos="always")
    assert row["input_ids"] == whole(folded, QA)[1]
    assert row["input_ids"][-1] == folded.eos_token_id and row["input_ids"][-2] != folded.eos_token_id
    with pytest.raises(ValueError, match="add_eos"):
        encode(folded, RECORD, add_eos="sometimes")


@pytest.mark.parametrize("kind", ["bpe", "metaspace"])
def test_the_next_turns_header_is_cut_from_the_completion(kind):
    tok = tok_for(ALWAYS_HEADER, kind)
    rows, report = encode_records(tok, [{"messages": QA}, RECORD])
    _, ids, _ = whole(tok, QA)
    for row in rows:
        text = completion_text(tok, row)
        assert text.rstrip() == "Blue, like the sky.<|im_end|>" or text.strip() == "Blue, like the sky.<|im_end|>"
        assert "<|im_start|>" not in text
        assert row["input_ids"] == ids[: len(row["input_ids"])]
        assert row["input_ids"][-2:] == tok("<|im_end|>\n", add_special_tokens=False)["input_ids"][-2:]
    assert report.tail_cut == 2 and report.eos_appended == 0


def test_tokenizer_that_adds_bos_and_eos_itself():
    tok = tok_for(FOLDED, eos="</s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)]
    )
    # Plain text: exactly what the tokenizer makes of "prompt\ncompletion" with its own BOS and EOS.
    row = encode(tok, RECORD, template="plain")
    expected = tok(RECORD["prompt"] + "\n" + RECORD["completion"])["input_ids"]
    assert expected[0] == tok.bos_token_id and expected[-1] == tok.eos_token_id
    assert row["input_ids"] == expected
    # Chat: what apply_chat_template itself tokenizes (the template writes BOS; no second one).
    chat = encode(tok, RECORD)
    ref = tok.apply_chat_template(QA, tokenize=True, return_dict=True)["input_ids"]
    assert chat["input_ids"] == list(ref) and chat["input_ids"].count(tok.bos_token_id) == 1


@pytest.mark.parametrize("kind", ["bpe", "metaspace", "legacy"])
def test_system_text_folded_into_the_user_turn_is_tagged_system(kind):
    tok = tok_for(FOLDED, kind, eos="</s>")
    row = encode_messages(tok, SYSTEM_QA)
    text, ids, offsets = whole(tok, SYSTEM_QA)
    system = SYSTEM_QA[0]["content"]
    start = text.index(system)
    roles = [ROLES[r] for r in row["role_ids"]]
    inside = [i for i, (s, e) in enumerate(offsets) if start <= s and e <= start + len(system) and e > s]
    assert inside and all(roles[i] == "system" for i in inside)
    ustart = text.index(QA[0]["content"])
    user = [i for i, (s, e) in enumerate(offsets) if ustart < s and e <= ustart + len(QA[0]["content"])]
    assert user and all(roles[i] == "user" for i in user)
    # role_weights.system now acts on the system text.
    weights = parse_role_weights({"system": 0}).token_weights(row["role_ids"], row["turn_ids"], row["completion_mask"])
    assert all(weights[i] == 0 for i in inside) and all(weights[i] == 1 for i in user)
    assert row["turn_ids"][inside[0]] == 0  # the index of the system message: the hook for per-message fields


def _reasoning_conversation():
    return [
        {"role": "user", "content": "Hello world"},
        {"role": "assistant", "content": "<think>greet back</think>Hello!"},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>add</think>The answer is 4."},
    ]


def test_history_rewriting_template_last_and_expand():
    tok = tok_for(DROPS_REASONING)
    messages = _reasoning_conversation()
    (row,), report = encode_records(tok, [{"messages": messages}])
    assert report.history_rewritten == 1 and "history-rewriting" in report.summary()
    assert row["input_ids"] == whole(tok, messages)[1]
    assert completion_text(tok, row) == "<think>add</think>The answer is 4.<|im_end|>\n"
    rows, report = encode_records(tok, [{"messages": messages}], multi_turn="expand")
    assert len(rows) == 2 and report.read == 1 and report.kept == 2
    for row, end in zip(rows, (2, 4), strict=True):
        assert row["input_ids"] == whole(tok, messages[:end])[1]  # each as rendered at its point
    assert completion_text(tok, rows[0]) == "<think>greet back</think>Hello!<|im_end|>\n"
    with pytest.raises(RecordError, match="multi_turn: expand"):
        encode_messages(tok, messages, completion="all")


def test_template_file_and_options(tmp_path):
    path = tmp_path / "train.jinja"
    path.write_text(OPTIONS)
    tok = tiny_tokenizer("bpe", SPECIALS, "<s>", "<|endoftext|>", OPTIONS)  # no template of its own
    options = {"date_string": "1 Jan 2025", "enable_thinking": False}
    row = encode(tok, RECORD, chat_template=str(path), chat_template_kwargs=options)
    prompt = tok.decode([t for t, p in zip(row["input_ids"], row["prompt_mask"], strict=True) if p])
    assert prompt.startswith("Date: 1 Jan 2025\n")
    # The generation prompt gains "<think></think>", the rendered answer does not: split where they part.
    assert completion_text(tok, row) == "Blue, like the sky.<|im_end|>\n"
    tok.chat_template = OPTIONS
    assert row["input_ids"] == whole(tok, QA, **options)[1]
    plain = encode(tok, RECORD)
    assert tok.decode(plain["input_ids"]).startswith("Date: none\n")
    with pytest.raises(ValueError, match="add_generation_prompt"):
        encode(tok, RECORD, chat_template_kwargs={"add_generation_prompt": True})


def test_chat_config_keys_are_checked(tmp_path):
    base = {"train_data": "x.jsonl"}
    with pytest.raises(ConfigError, match="chat_template: .*missing.jinja: no such file"):
        from_dict(base | {"chat_template": str(tmp_path / "missing.jinja")})
    with pytest.raises(ConfigError, match="chat_template_kwargs"):
        from_dict(base | {"chat_template_kwargs": {"tokenize": True}})
    with pytest.raises(ConfigError, match="add_eos"):
        from_dict(base | {"add_eos": "yes"})
    with pytest.raises(ConfigError, match="multi_turn"):
        from_dict(base | {"multi_turn": "all"})
    (tmp_path / "t.jinja").write_text(CHATML)
    config = from_dict(base | {"chat_template": str(tmp_path / "t.jinja"), "multi_turn": "expand"})
    assert config.multi_turn == "expand" and config.add_eos == "auto"


@pytest.mark.parametrize(
    ("template", "message"),
    [(NO_SYSTEM, "System role not supported"), (ADDS_NUMBER, "can only concatenate str")],
)
def test_template_errors_are_one_line_naming_the_record(tmp_path, template, message):
    path = tmp_path / "data.jsonl"
    good = {"messages": QA}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"messages": SYSTEM_QA}) + "\n")
    loaded = load_records(str(path))
    tok = tok_for(template)
    with pytest.raises(RecordError) as err:
        encode_records(tok, loaded.records, names=loaded.names)
    text = str(err.value)
    assert "\n" not in text and message in text and "the chat template failed" in text
    assert text.startswith(f"{path}:1" if template == ADDS_NUMBER else f"{path}:2")


def test_stats_and_encode_count_the_same_tokens(tmp_path):
    """``plw stats`` and ``plw.encode`` give the same prompt/completion token counts for the same rows, for a
    tokenizer with a BOS it does not add to plain text (the case where they used to differ by one)."""
    records = [
        {"prompt": "What is 2 + 2?", "completion": "The answer is 4."},
        {"prompt": "Name a colour.", "completion": "Blue, like the sky.", "system": "Be brief."},
    ]
    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps(r) + "\n" for r in records))
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": _reasoning_conversation()}) + "\n")
    tok = tok_for(NO_END_LAST, "metaspace")
    assert tok.bos_token_id is not None and tok("a")["input_ids"][0] != tok.bos_token_id
    for path, template, multi_turn in [(pc, "plain", "last"), (pc, "chat", "last"), (chat, "chat", "expand")]:
        rows, report = encode_records(tok, load_records(str(path)).records, template=template, multi_turn=multi_turn)
        from plw.data.chat import ChatOptions

        (stats,), rgs = compute_stats(
            [str(path)], tok, template, progress=False, options=ChatOptions(multi_turn=multi_turn)
        )
        counts = sorted((sum(r["prompt_mask"]), sum(r["completion_mask"])) for r in rows)
        assert stats["rows"] == len(rows)
        assert stats["prompt_tokens_mean"] == pytest.approx(sum(p for p, _ in counts) / len(rows))
        assert stats["completion_tokens_mean"] == pytest.approx(sum(c for _, c in counts) / len(rows))
        assert sorted(rgs[path.stem]) == pytest.approx(sorted(c / p for p, c in counts))
        assert stats["rows_eos_appended"] == report.eos_appended


def test_plw_stats_reports_eos_appended_and_reads_a_template_file(tmp_path, capsys):
    from plw.cli import main

    folder = tmp_path / "tok"
    tok_for(CHATML).save_pretrained(folder)  # a tokenizer whose own template ends turns with <|im_end|>
    (tmp_path / "no_end.jinja").write_text(NO_END_LAST)
    data = tmp_path / "pc.jsonl"
    data.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD | {"prompt": "Again?"}) + "\n")
    assert main(["stats", str(data), "--tokenizer", str(folder), "--no-progress"]) == 0
    assert "EOS appended" not in capsys.readouterr().out
    args = ["stats", str(data), "--tokenizer", str(folder), "--no-progress", "--chat-template"]
    assert main([*args, str(tmp_path / "no_end.jinja")]) == 0
    assert "pc: EOS appended to 2 rows" in capsys.readouterr().out


def test_run_config_keys_reach_the_encoder(tmp_path):
    """The config keys drive the rows of a run and its data report (``plw train`` calls ``prepare_rows``)."""
    from plw.runner import prepare_rows

    (tmp_path / "no_end.jinja").write_text(NO_END_LAST)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": _reasoning_conversation()}) + "\n")
    keys = {"train_data": str(data), "chat_template": str(tmp_path / "no_end.jinja"), "multi_turn": "expand"}
    tok = tok_for(CHATML)
    rows, info, _ = prepare_rows(from_dict(keys), tok, "train")
    assert len(rows) == 2 and info["eos_appended"] == 2
    assert all(r["input_ids"][-1] == tok.eos_token_id for r in rows)
    rows, info, _ = prepare_rows(from_dict(keys | {"add_eos": "never", "multi_turn": "last"}), tok, "train")
    assert len(rows) == 1 and info["eos_appended"] == 0 and rows[0]["input_ids"][-1] != tok.eos_token_id


# GLM-Edge-style (written here from its description): every rendering ends with a header that opens another
# assistant turn, after the last answer too; the model's generation config lists the tokens it stops on.
ALWAYS_OPENS = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}{% endfor %}{{ '<|assistant|>' }}"
)
GLM_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
GLM_STOPS = ["<|endoftext|>", "<|user|>", "<|observation|>"]


def _glm_folder(kind: str, folder, eos_token_id=None):
    """A tiny GLM-Edge-style tokenizer saved in ``folder`` with a generation config (unless ``eos_token_id`` is
    False); returns the in-memory tokenizer and the one loaded from the folder the way a run loads it."""
    from plw.models import load_tokenizer

    tok = tiny_tokenizer(kind, GLM_SPECIALS, None, "<|endoftext|>", ALWAYS_OPENS, ALWAYS_OPENS)
    tok.save_pretrained(folder)
    if eos_token_id is not False:
        ids = eos_token_id if eos_token_id is not None else tok.convert_tokens_to_ids(GLM_STOPS)
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return tok, load_tokenizer(str(folder))


@pytest.mark.parametrize("kind", ["bpe", "metaspace"])
def test_a_header_after_the_answer_is_cut_when_the_generation_config_names_the_stop_tokens(kind, tmp_path):
    plain_tok, tok = _glm_folder(kind, tmp_path)
    text, ids, offsets = whole(tok, QA)
    header = tok.convert_tokens_to_ids("<|assistant|>")
    assert text.endswith("<|assistant|>") and ids[-1] == header  # the template's last special token is a header
    rows, report = encode_records(tok, [{"messages": QA}, RECORD])
    for row in rows:
        # The ids of the whole conversation without the trailing header, then EOS, a real stop token.
        assert row["input_ids"] == ids[:-1] + [tok.eos_token_id]
        assert completion_text(tok, row).strip() == "Blue, like the sky.<|endoftext|>"
        completion = [t for t, c in zip(row["input_ids"], row["completion_mask"], strict=True) if c]
        assert header not in completion and completion[-1] in tok.convert_tokens_to_ids(GLM_STOPS)
    assert report.tail_cut == 2 and report.eos_appended == 2 and "EOS appended to 2 rows" in report.summary()
    # Without a generation config (a tokenizer built in memory): the end-of-turn rule of today, which takes the
    # first special token after the answer, the header, as the stop token (documented in docs/chat-templates.md).
    rows, report = encode_records(plain_tok, [{"messages": QA}, RECORD])
    for row in rows:
        assert row["input_ids"] == ids
        assert completion_text(plain_tok, row).strip() == "Blue, like the sky.<|assistant|>"
    assert report.tail_cut == 0 and report.eos_appended == 0


def test_a_single_eos_id_and_no_generation_config(tmp_path):
    (tmp_path / "one").mkdir()
    _, tok = _glm_folder("bpe", tmp_path / "one", eos_token_id=3)  # an int, not a list: one stop token
    from plw.data.stops import generation_stop_ids

    assert generation_stop_ids(str(tmp_path / "one")) == (3,)
    (tmp_path / "none").mkdir()
    _, tok = _glm_folder("bpe", tmp_path / "none", eos_token_id=False)
    assert generation_stop_ids(str(tmp_path / "none")) is None
    assert encode(tok, RECORD)["input_ids"] == whole(tok, QA)[1]  # today's rule: nothing cut, nothing appended


def test_stop_tokens_override_the_generation_config(tmp_path):
    _, tok = _glm_folder("bpe", tmp_path)
    ids = whole(tok, QA)[1]
    # Declaring the header a stop token restores the template's own ending.
    assert encode(tok, RECORD, stop_tokens=["<|assistant|>"])["input_ids"] == ids
    rows, report = encode_records(tok, [{"messages": QA}], stop_tokens=[tok.convert_tokens_to_ids("<|assistant|>")])
    assert rows[0]["input_ids"] == ids and report.eos_appended == 0
    assert encode(tok, RECORD, stop_tokens=["<|user|>"])["input_ids"] == ids[:-1] + [tok.eos_token_id]
    for bad, message in [
        (["<|nope|>"], "'<|nope|>' is not a token of the tokenizer"),
        ([10**6], "outside the tokenizer's vocabulary"),
        ([], "non-empty list"),
        ([True], "neither a token string nor a token id"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            encode_records(tok, [RECORD], stop_tokens=bad)


def test_generation_config_of_a_hub_id_in_the_local_cache(tmp_path, monkeypatch):
    """A hub id is looked up in the Hugging Face cache only (its documented layout), never downloaded."""
    import huggingface_hub.constants

    from plw.data.stops import generation_stop_ids

    snapshot = tmp_path / "models--someone--glm-edge-tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7]}))
    (tmp_path / "models--someone--glm-edge-tiny" / "refs").mkdir()
    (tmp_path / "models--someone--glm-edge-tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert generation_stop_ids("someone/glm-edge-tiny") == (5, 7)
    assert generation_stop_ids("someone/not-cached") is None


def test_plw_stats_stop_tokens(tmp_path, capsys):
    from plw.cli import main

    _glm_folder("metaspace", tmp_path / "tok")
    data = tmp_path / "pc.jsonl"
    data.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD | {"prompt": "Again?"}) + "\n")
    args = ["stats", str(data), "--tokenizer", str(tmp_path / "tok"), "--no-progress"]
    assert main(args) == 0
    assert "pc: EOS appended to 2 rows" in capsys.readouterr().out  # the generation config's stop tokens
    assert main([*args, "--stop-tokens", "<|assistant|>"]) == 0
    assert "EOS appended" not in capsys.readouterr().out
    assert main([*args, "--stop-tokens", "<|nope|>"]) == 2
    assert "'<|nope|>' is not a token of the tokenizer" in capsys.readouterr().err


def test_the_run_key_stop_tokens_reaches_the_encoder_and_generation(tmp_path):
    """``stop_tokens`` in a run config overrides the generation config in the rows of ``plw train`` and in the stop
    tokens of the generated-answer evaluation; a bad one is a one-line config error."""
    from plw.generation import GeneratedAccuracy
    from plw.runner import prepare_rows

    _, tok = _glm_folder("bpe", tmp_path / "tok")
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": QA}) + "\n")
    ids = whole(tok, QA)[1]
    header = tok.convert_tokens_to_ids("<|assistant|>")
    rows, info, _ = prepare_rows(from_dict({"train_data": str(data)}), tok, "train")
    assert rows[0]["input_ids"] == ids[:-1] + [tok.eos_token_id] and info["tail_cut"] == 1  # the generation config
    keys = {"train_data": str(data), "stop_tokens": ["<|assistant|>"]}
    rows, info, _ = prepare_rows(from_dict(keys), tok, "train")
    assert rows[0]["input_ids"] == ids and info["tail_cut"] == 0 and info["eos_appended"] == 0
    generated = GeneratedAccuracy.from_rows(rows, tok, stop_tokens=keys["stop_tokens"])
    assert generated.stop_ids == {header, tok.eos_token_id}
    assert GeneratedAccuracy.from_rows(rows, tok).stop_ids == set(tok.convert_tokens_to_ids(GLM_STOPS))
    with pytest.raises(ConfigError, match="stop_tokens: 1.5 is neither a token string nor a token id"):
        from_dict({"train_data": str(data), "stop_tokens": [1.5]})
