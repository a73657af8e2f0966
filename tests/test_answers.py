"""Answer extraction and normalisation (plw.answers) against hand-written cases, one table per task."""

from __future__ import annotations

import pytest

from plw.answers import answers_match, detect_rule, extract_answer, normalise
from plw.data.synthetic import make_synthetic_mcqa

LETTERS = ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Lisbon", "lisbon"),
        ("  Lisbon.  ", "lisbon"),
        ("LISBON!", "lisbon"),
        ('"Lisbon".', "lisbon"),
        ("the  old\n bridge", "the old bridge"),
        ("3.5", "3.5"),  # an inner full stop stays
        ("...", ""),
    ],
)
def test_normalise(text, want):
    assert normalise(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("She sells 9 eggs.\n#### 18", "18.0"),
        ("#### 1,000", "1000.0"),
        ("#### $5", "5.0"),
        ("#### -3", "-3.0"),
        ("#### 2.50", "2.5"),
        ("first #### 4 then\n#### 7", "7.0"),  # the last marker is the answer
        ("The answer is 18", None),  # no marker: no answer
        ("#### eighteen", None),
    ],
)
def test_gsm8k_answer(text, want):
    assert extract_answer(text, "gsm8k") == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("B", "B"),
        ("B\nThe passage says ...", "B"),
        ("(C)", "C"),
        ("D. Lisbon", "D"),
        ("A, Oslo", "A"),
        ("The passage says so, so the answer is C, Lima.", "C"),
        ("Bergen", None),  # starts with B but is a word
        ("a cat", None),  # lower-case a is not the letter
        ("E", None),  # not one of the choices
        ("", None),
    ],
)
def test_choice_letter(text, want):
    assert extract_answer(text, "choice", LETTERS) == want


def test_whole_and_answer_line():
    assert extract_answer("Lisbon\nLisbon is a city.", "whole") == "lisbon lisbon is a city"
    assert extract_answer("\n\nLisbon.\nLisbon is a city.", "answer_line") == "lisbon"
    with pytest.raises(ValueError, match="answer rule must be one of"):
        extract_answer("x", "auto")


@pytest.mark.parametrize(
    ("generated", "reference", "rule", "want"),
    [
        ("lisbon.", "Lisbon", "whole", True),
        ("Lisbon is nice", "Lisbon", "whole", False),
        ("Porto\nbecause ...", "Porto\nPorto is on the coast.", "answer_line", True),
        ("Janet makes money.\n#### 18.00", "... = 18\n#### 18", "gsm8k", True),
        ("#### 17", "#### 18", "gsm8k", False),
        ("Janet makes $18", "#### 18", "gsm8k", False),  # truncated before the marker
        ("B. Oslo", "B", "choice", True),
        ("C", "B", "choice", False),
        ("", "", "whole", True),  # both empty: the same (empty) answer
        ("anything", "no marker", "gsm8k", False),  # a reference without an answer never matches
    ],
)
def test_answers_match(generated, reference, rule, want):
    assert answers_match(generated, reference, rule, LETTERS) is want


def test_detect_rule_per_task():
    def completions(**kw):
        return [r["completion"] for r in make_synthetic_mcqa(8, seed=1, **kw)]

    assert detect_rule(completions(), LETTERS) == "choice"
    assert detect_rule(completions(style="explanation"), LETTERS) == "choice"
    assert detect_rule(completions(answer="text")) == "whole"
    assert detect_rule(completions(answer="text", style="explanation")) == "answer_line"
    assert detect_rule(["Step.\n#### 3", "#### 1,200"]) == "gsm8k"
    # Text answers with choices known are not letters: the whole answer.
    assert detect_rule(completions(answer="text"), LETTERS) == "whole"
