"""The built-in synthetic reading task: deterministic, balanced, answerable only by reading the passage, RACE-shaped."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

from plw.data.encode import encode
from plw.data.synthetic import make_synthetic_mcqa

FACT = re.compile(r"(\w+) lives in (\w+), works as a (\w+) and keeps a (\w+)\.")
QUESTION = [
    (re.compile(r"In which city does (\w+) live\?"), 1),
    (re.compile(r"What is (\w+)'s job\?"), 2),
    (re.compile(r"Which pet does (\w+) keep\?"), 3),
]


def read_answer(prompt: str) -> str:
    """Answer a record the way a reader would: parse the passage, find the person the question names, pick the
    option that matches their fact. Uses only the prompt text."""
    passage = prompt.split("Passage:\n", 1)[1].split("\n\nQuestion:", 1)[0]
    question = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
    options = dict(re.findall(r"^([ABCD])\. (\w+)$", prompt, flags=re.M))
    facts = {m.group(1): m.groups() for m in FACT.finditer(passage)}
    for pattern, column in QUESTION:
        if m := pattern.fullmatch(question):
            value = facts[m.group(1)][column]
            matches = [letter for letter, option in options.items() if option == value]
            assert len(matches) == 1, (question, options)
            return matches[0]
    raise AssertionError(f"unknown question {question!r}")


def test_deterministic_for_a_seed():
    assert make_synthetic_mcqa(12, seed=5) == make_synthetic_mcqa(12, seed=5)
    assert make_synthetic_mcqa(12, seed=5) != make_synthetic_mcqa(12, seed=6)
    assert make_synthetic_mcqa(5, seed=5) == make_synthetic_mcqa(12, seed=5)[:5]  # a prefix: size is just n


def test_answers_balanced():
    assert Counter(r["answer"] for r in make_synthetic_mcqa(100, seed=0)) == {"A": 25, "B": 25, "C": 25, "D": 25}
    counts = Counter(r["answer"] for r in make_synthetic_mcqa(103, seed=1))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_answer_recoverable_from_the_passage_and_only_from_it():
    records = make_synthetic_mcqa(200, seed=7, people=6, fillers=2) + make_synthetic_mcqa(200, seed=8)
    for r in records:
        assert r["completion"] == r["answer"]
        assert read_answer(r["prompt"]) == r["answer"]
        # Every option is mentioned in the passage, so spotting "the option the passage mentions" does not help.
        for option in r["options"]:
            assert re.search(rf"\b{option}\b", r["passage"]), (option, r["passage"])


def test_passage_blind_guessers_score_chance():
    """Guessers that see everything but the passage, fitted on 2,000 records and scored on 2,000 others: the
    letter most often right for that question text, and the option whose value was most often the answer."""
    train, test = make_synthetic_mcqa(2000, seed=11), make_synthetic_mcqa(2000, seed=12)
    by_question: dict[str, Counter] = {}
    value_right, value_seen = Counter(), Counter()
    for r in train:
        by_question.setdefault(r["question"], Counter())[r["answer"]] += 1
        for letter, option in zip("ABCD", r["options"], strict=True):
            value_seen[option] += 1
            value_right[option] += letter == r["answer"]
    question_hits = value_hits = 0
    for r in test:
        seen = by_question.get(r["question"])
        question_hits += (seen.most_common(1)[0][0] if seen else "A") == r["answer"]
        rate = [value_right[o] / max(value_seen[o], 1) for o in r["options"]]
        value_hits += "ABCD"[rate.index(max(rate))] == r["answer"]
    assert 0.2 <= question_hits / len(test) <= 0.3
    assert 0.2 <= value_hits / len(test) <= 0.3


def test_passage_length_is_configurable():
    short = make_synthetic_mcqa(20, seed=0, people=4, fillers=0)
    long = make_synthetic_mcqa(20, seed=0, people=20, fillers=8)
    assert len(FACT.findall(short[0]["passage"])) == 4 and len(FACT.findall(long[0]["passage"])) == 20
    assert statistics.mean(len(r["prompt"]) for r in long) > 2.5 * statistics.mean(len(r["prompt"]) for r in short)
    with pytest.raises(ValueError, match="people"):
        make_synthetic_mcqa(1, people=3)


def test_rg_with_the_smollm2_template(tokenizer):
    rg = []
    for r in make_synthetic_mcqa(40, seed=0):
        row = encode(tokenizer, r)
        n_prompt, n_completion = sum(row["prompt_mask"]), sum(row["completion_mask"])
        assert n_completion == 3  # letter, <|im_end|>, "\n"
        rg.append(n_completion / n_prompt)
    assert 0.01 <= statistics.mean(rg) <= 0.05
    assert 0.01 <= min(rg) and max(rg) <= 0.05


# ---- answer formats, the Rg knob and shortcut baselines -----------------------------------------------------------

SHORTCUT_TASKS = [
    {"people": 4, "fillers": 0, "facts": 1},
    {"people": 4, "fillers": 0, "facts": 3},
    {"people": 6, "fillers": 2, "facts": 3},
]


def mentions(passage: str, option: str) -> list[int]:
    return [m.start() for m in re.finditer(rf"\b{re.escape(option)}\b", passage)]


def shortcut_picks(r: dict) -> dict[str, int]:
    """What each shortcut answers (an option index), using the passage without reading who is asked about."""
    options, passage = r["options"], r["passage"]
    first_seen = [mentions(passage, o)[0] for o in options]
    counts = [len(mentions(passage, o)) for o in options]
    lengths = [len(o) for o in options]
    picks = {
        "named first in the passage": first_seen.index(min(first_seen)),
        "named last in the passage": first_seen.index(max(first_seen)),
        "most frequent option word": counts.index(max(counts)),
        "longest option": lengths.index(max(lengths)),
        "shortest option": lengths.index(min(lengths)),
    }
    for i, letter in enumerate("ABCD"):
        picks[f"always {letter}"] = i
    return picks


@pytest.mark.parametrize("task", SHORTCUT_TASKS, ids=lambda t: "-".join(f"{k}{v}" for k, v in t.items()))
def test_shortcuts_stay_near_chance(task):
    """Every shortcut that does not read who the question asks about scores near 25% on 400 rows (the issue's
    bound is 35%); a reader that does read scores 100%."""
    records = make_synthetic_mcqa(400, seed=21, **task, answer="text")
    hits: Counter = Counter()
    for r in records:
        gold = r["options"].index(r["completion"])
        for name, pick in shortcut_picks(r).items():
            hits[name] += pick == gold
        # The reader: the option in the sentence that names the subject.
        sentence = next(s for s in re.split(r"(?<=\.) ", r["passage"]) if s.startswith(r["subject"] + " "))
        hits["reader"] += [o for o in r["options"] if mentions(sentence, o)] == [r["options"][gold]]
    assert hits.pop("reader") == len(records)
    for name, n in hits.items():
        assert n / len(records) <= 0.35, (name, n)


def test_answer_formats_share_passages_and_gold_options():
    letters = make_synthetic_mcqa(40, seed=3, people=4, fillers=0)
    texts = make_synthetic_mcqa(40, seed=3, people=4, fillers=0, answer="text", style="sentence")
    short = make_synthetic_mcqa(40, seed=3, people=4, fillers=0, answer="text", facts=1)
    for a, b, c in zip(letters, texts, short, strict=True):
        assert a["passage"] == b["passage"] and a["options"] == b["options"] == c["options"]
        gold = a["options"]["ABCD".index(a["answer"])]
        assert b["completion"].split("\n")[0] == gold == c["completion"]
        assert b["completion"].split("\n")[1] in b["passage"]  # the supporting sentence, quoted from the passage
        assert all(sentence.count(" ") <= 4 for sentence in re.split(r"(?<=\.) ", c["passage"]))  # one fact each
        assert len(c["passage"]) < len(a["passage"])
    with pytest.raises(ValueError, match="answer"):
        make_synthetic_mcqa(1, answer="number")
    with pytest.raises(ValueError, match="style"):
        make_synthetic_mcqa(1, style="essay")
    with pytest.raises(ValueError, match="facts"):
        make_synthetic_mcqa(1, facts=2)


def test_explanation_reads_like_a_reader(tokenizer):
    """The worked explanation names, for every option, the person the passage gives it to, and ends on the gold."""
    for r in make_synthetic_mcqa(30, seed=4, people=5, fillers=1, style="explanation"):
        lines = r["completion"].split("\n")
        assert lines[0] == r["answer"]
        for letter, option in zip("ABCD", r["options"], strict=True):
            line = next(x for x in lines if x.startswith(f"Option {letter}, {option}: "))
            owner = line.split(": ", 1)[1].split(" ")[0]
            sentence = next(s for s in re.split(r"(?<=\.) ", r["passage"]) if s.startswith(owner + " "))
            assert mentions(sentence, option), (line, sentence)
        assert lines[-1].endswith(f"the answer is {r['answer']}, {r['options']['ABCD'.index(r['answer'])]}.")


@pytest.mark.parametrize(
    "answer, style, low, high",
    [
        ("letter", "bare", 0.005, 0.03),
        ("text", "bare", 0.01, 0.05),
        ("letter", "sentence", 0.08, 0.2),
        ("text", "explanation", 0.3, 1.0),
        ("letter", "explanation", 0.3, 1.0),
    ],
)
def test_answer_styles_move_rg(tokenizer, answer, style, low, high):
    """Measured with the SmolLM2 tokenizer and template: bare ≈ 0.02, + sentence ≈ 0.13, + explanation ≈ 0.66."""
    rg = []
    for r in make_synthetic_mcqa(40, seed=0, people=4, fillers=0, answer=answer, style=style):
        row = encode(tokenizer, {"prompt": r["prompt"], "completion": r["completion"]})
        rg.append(sum(row["completion_mask"]) / sum(row["prompt_mask"]))
    assert low <= statistics.mean(rg) <= high
