"""Corpus test: real public chat templates x tiny tokenizers of both kinds x four kinds of conversation.

Templates come from ``../shared/data/chat_templates/*.json`` (skipped with a reason when absent) and from the
training templates TRL ships (``trl/chat_templates/*_training.jinja``, when TRL is installed). Each is rendered with
a byte-level BPE and a SentencePiece-like Metaspace tokenizer built in the test with the template's special tokens,
on a single-turn, a system + user, a multi-turn and a tool-call conversation. For each, plw either refuses with a
one-line error, or its row satisfies, checked against the template and the tokenizer called directly:

* the ids are the ids of the whole rendered conversation (up to where plw ends the completion), plus EOS when
  appended;
* the prompt/completion boundary falls exactly where the template's generation prompt ends;
* the completion ends with a stop token of the model (the file's ``stop_tokens`` or EOS);
* the completion does not contain the header that opens the next assistant turn;
* every token inside a prompt message's content carries that message's role (system text folded into the user turn
  is ``system``).

``python -m tests.test_chat_templates`` prints the per-template outcome table of ``docs/chat-templates.md``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from plw.data.chat import ChatOptions
from plw.data.errors import RecordError
from plw.data.messages import ROLES, encode_conversation
from tests.tiny_tokenizers import tiny_tokenizer

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat_templates"
TOOL_CALL = {
    "id": "call12345",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "The answer is 4."}],
    "system": [
        {"role": "system", "content": "Be brief and answer in one word."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ],
    "multi": [
        {"role": "user", "content": "Hello world"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "The answer is 4."},
    ],
    "tool": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "18 C and sunny", "name": "get_weather", "tool_call_id": "call12345"},
        {"role": "assistant", "content": "It is 18 C and sunny in Paris."},
    ],
}
KINDS = ("bpe", "metaspace")
_SPECIAL = re.compile(r"<\|[^|<>\s'\"]{1,40}\|>|<｜[^｜<>'\"]{1,40}｜>|<(?:bos|eos|start_of_turn|end_of_turn)>")
_STOP_WORDS = ("end", "eot", "eos", "return", "eom")


def _trl_templates() -> list[dict]:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "chat_templates"
    # The collection's metadata (special and stop tokens) of the model a TRL template belongs to, where it has one.
    known = {}
    for p in sorted(TEMPLATES_DIR.glob("*.json")):
        meta = json.loads(p.read_text(encoding="utf-8"))
        found = re.search(r"trl/chat_templates/(\w+)\.jinja", meta["source"])
        if found:
            known[found.group(1)] = meta
    out = []
    for path in sorted(folder.glob("*_training.jinja")):
        text = path.read_text(encoding="utf-8")
        meta = known.get(path.stem.removesuffix("_training"))
        if meta:
            out.append(meta | {"name": f"trl:{path.stem}", "chat_template": text})
            continue
        specials = sorted(set(_SPECIAL.findall(text)))
        eos = next((t for t in specials if any(w in t.lower() for w in _STOP_WORDS)), "<|endoftext|>")
        stops = [t for t in specials if any(w in t.lower() for w in _STOP_WORDS)]
        out.append(
            {
                "name": f"trl:{path.stem}",
                "family": "TRL training template",
                "bos_token": None,
                "eos_token": eos,
                "special_tokens": specials,
                "stop_tokens": stops,
                "chat_template": text,
            }  # fmt: skip
        )
    return out


def shared_templates() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(TEMPLATES_DIR.glob("*.json"))]


def load_templates() -> list[dict]:
    return shared_templates() + _trl_templates()


def build(spec: dict, kind: str):
    return tiny_tokenizer(
        kind,
        spec["special_tokens"],
        spec["bos_token"],
        spec["eos_token"],
        spec["chat_template"],
        spec["chat_template"],
    )


def check_row(tok, spec: dict, messages: list[dict], kwargs: dict, stop_tokens: list[str] | None = None) -> str:
    """Encode ``messages`` (template variables ``kwargs``, the model's ``stop_tokens`` if given) and check the row
    against the template and tokenizer called directly; return the outcome (``exact``, ``EOS appended``, ...) or
    ``refused: <reason>``; a failed check raises AssertionError."""
    options = ChatOptions(kwargs=kwargs, stop_tokens=stop_tokens)
    try:
        row, enc = encode_conversation(tok, messages, options=options)
    except RecordError as err:
        assert "\n" not in str(err) and str(err), f"not a one-line error: {err!r}"
        return f"refused: {err}"
    full = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    whole = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = whole["input_ids"], whole["offset_mapping"]
    eos = tok.eos_token_id
    kept = len(row["input_ids"]) - int(enc.eos_appended)
    assert row["input_ids"][:kept] == ids[:kept], "ids differ from the whole conversation's"
    if enc.eos_appended:
        assert row["input_ids"][-1] == eos
    first = row["completion_mask"].index(1)
    assert row["completion_mask"] == [0] * first + [1] * (len(row["input_ids"]) - first)
    # The boundary: where the template's generation prompt ends; a token across it goes to the completion.
    before = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True, **kwargs)
    prefix_stable = full.startswith(before)
    if prefix_stable:
        assert first == sum(e <= len(before) and (s < e or s < len(before)) for s, e in offsets), "wrong boundary"
    shared = offsets[first][0] < len(before) if prefix_stable else False
    # Round trip: the completion tokens decode to the rendered completion text.
    end_char = offsets[kept - 1][1] if kept > first else offsets[first][0]
    decoded = tok.decode(row["input_ids"][first:kept])
    expected = full[offsets[first][0] : end_char]
    # (a Metaspace decoder drops a leading space and turns ``▁`` inside special tokens into spaces)
    same = decoded == expected or decoded.lstrip() == expected.replace("▁", " ").lstrip()
    assert same, f"{decoded!r} != {expected!r}"
    # The completion ends with a stop token (trailing whitespace aside).
    stops = {tok.convert_tokens_to_ids(t) for t in spec["stop_tokens"]} | {eos}
    tail = [t for t in row["input_ids"][first:] if tok.decode([t]).strip() or t in stops]
    assert tail and tail[-1] in stops, f"completion ends with {tok.convert_ids_to_tokens(tail[-1:])}, no stop token"
    # No header of a next turn inside the completion.
    text = full[offsets[first][0] : offsets[kept - 1][1]] if kept > first else ""
    header = before[len(tok.apply_chat_template(messages[:-1], tokenize=False, **kwargs)) :].strip()
    if header and prefix_stable:
        assert header not in text, f"the completion {text!r} contains the header {header!r}"
    # Every token inside a prompt message's content carries that message's role.
    cursor = 0
    for msg in messages[:-1]:
        content = (msg.get("content") or "").strip()
        pos = full.find(content, cursor) if content else -1
        if pos < 0 or pos >= offsets[first][0]:
            continue
        cursor = pos + len(content)
        inside = [i for i, (s, e) in enumerate(offsets[:first]) if s >= pos and e <= cursor and e > s]
        roles = {ROLES[row["role_ids"][i]] for i in inside}
        assert roles <= {msg["role"]}, f"{msg['role']} content tagged {roles}"
    outcome = "exact" if prefix_stable else "exact (generation prompt differs)"
    outcome += " (boundary token shared)" if shared else ""
    notes = [n for n, flag in (("EOS appended", enc.eos_appended), ("tail cut", enc.tail_cut),
                               ("history rewritten", enc.history_rewritten)) if flag]  # fmt: skip
    return ", ".join([outcome, *notes])


def corpus_outcomes(
    templates: list[dict], keep_going: bool = False, with_stops: bool = False
) -> dict[str, dict[str, str]]:
    """``{template name: {"kind/conversation": outcome}}`` over the corpus (checks raise on a wrong row, or with
    ``keep_going`` give ``FAILED: ...`` outcomes); ``with_stops`` gives the encoder each model's stop tokens, as its
    generation config would."""
    out: dict[str, dict[str, str]] = {}
    for spec in templates:
        stops = (list(spec["stop_tokens"]) or [spec["eos_token"]]) if with_stops else None
        for kind in KINDS:
            tok = build(spec, kind)
            for name, messages in CONVERSATIONS.items():
                try:
                    outcome = check_row(tok, spec, messages, {"tools": TOOLS} if name == "tool" else {}, stops)
                except AssertionError as err:
                    if keep_going:
                        outcome = f"FAILED: {err}"
                        out.setdefault(spec["name"], {})[f"{kind}/{name}"] = outcome
                        continue
                    raise AssertionError(f"{spec['name']} / {kind} / {name}: {err}") from None
                out.setdefault(spec["name"], {})[f"{kind}/{name}"] = outcome
    return out


@pytest.mark.skipif(not TEMPLATES_DIR.is_dir(), reason=f"chat template collection not present at {TEMPLATES_DIR}")
def test_real_templates_are_exact_or_refused():
    outcomes = corpus_outcomes(shared_templates())
    # Most of the corpus must be usable: a refusal everywhere would pass the checks above vacuously.
    usable = sum(not o.startswith("refused") for per in outcomes.values() for o in per.values())
    total = sum(len(per) for per in outcomes.values())
    assert usable >= 0.8 * total, f"only {usable} of {total} encodings usable"


@pytest.mark.skipif(not TEMPLATES_DIR.is_dir(), reason=f"chat template collection not present at {TEMPLATES_DIR}")
def test_real_templates_with_the_models_stop_tokens_give_the_same_rows():
    """Knowing the model's stop tokens (as from its generation config) changes nothing where the template's
    end-of-turn already is one of them: every row passes the same checks with the same outcome."""
    templates = shared_templates()
    assert corpus_outcomes(templates, with_stops=True) == corpus_outcomes(templates)


@pytest.mark.skipif(
    not TEMPLATES_DIR.is_dir(),
    reason=f"needs the stop tokens of the models TRL's templates belong to, from {TEMPLATES_DIR} (without them "
    "GLM-4-MoE's <|user|> stop is guessed wrong)",
)
def test_trl_training_templates_are_exact_or_refused():
    templates = _trl_templates()
    if not templates:
        pytest.skip("TRL is not installed (its chat_templates folder is the corpus of this test)")
    corpus_outcomes(templates)


def _table(outcomes: dict[str, dict[str, str]], templates: list[dict]) -> str:
    family = {s["name"]: s["family"] for s in templates}
    lines = ["| template | family | " + " | ".join(CONVERSATIONS) + " |", "|---|---|" + "---|" * len(CONVERSATIONS)]
    for name, per in outcomes.items():
        cells = []
        for conv in CONVERSATIONS:
            values = {per[f"{kind}/{conv}"] for kind in KINDS}
            cells.append(" / ".join(sorted(values)))
        lines.append(f"| {name} | {family[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    templates = load_templates()
    print(_table(corpus_outcomes(templates, keep_going=True), templates))
