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
