"""The answer in a completion, by task, and whether a generated answer matches the reference.

Generated-answer accuracy (:mod:`plw.generation`) compares what a model writes with the reference completion after
both go through the same rule, so that formatting a grader would ignore (case, spacing, a trailing full stop, a
thousands separator) does not count as wrong. The rules, one per kind of task:

* ``whole``: the whole completion (short answers: a word, a name, an option written out);
* ``answer_line``: the first non-empty line (the synthetic task's ``sentence`` and ``explanation`` styles put the
  answer on the first line and the support after it);
* ``gsm8k``: the number after GSM8K's ``#### `` marker, compared as a number (``1,000`` = ``1000.0``);
* ``choice``: the letter of a multiple-choice answer (``B``, ``(B)``, ``B. Lisbon``, ``The answer is B``).

:func:`detect_rule` picks the rule for a validation set from its reference completions alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ANSWER_RULES = ("auto", "whole", "answer_line", "gsm8k", "choice")

_GSM8K = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_TRAILING = ".,;:!?"
_QUOTES = "\"'`“”‘’"


def normalise(text: str) -> str:
    """Lower case, runs of whitespace as one space, without surrounding quotes and trailing punctuation."""
    text = " ".join(text.split()).lower()
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING)
    return text


def normalise_number(text: str) -> str | None:
    """A number written with or without separators, sign or ``$`` as a canonical string (``"1,000.50"`` ->
    ``"1000.5"``); None when it is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(_TRAILING)
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return repr(value + 0.0)  # -0.0 -> 0.0


def first_line(text: str) -> str:
    """The first line that is not blank (the whole text when every line is)."""
    return next((line for line in text.splitlines() if line.strip()), text)


def _choice_letter(text: str, letters: Sequence[str]) -> str | None:
    alternatives = "|".join(re.escape(letter) for letter in sorted(letters, key=len, reverse=True))
    line = first_line(text).strip()
    leading = re.match(rf"^\(?({alternatives})\)?(?=$|[\s.,:;)\]])", line)
    if leading:
        return leading.group(1)
    stated = re.search(rf"(?i:answer is):?\s*\(?({alternatives})\)?(?=$|[\s.,:;)\]])", text)
    return stated.group(1) if stated else None


def extract_answer(text: str, rule: str, choices: Sequence[str] | None = None) -> str | None:
    """The normalised answer in ``text`` under ``rule`` (see the module doc); None when the rule finds none (a GSM8K
    completion without ``####``, a choice answer without a letter), which never matches."""
    if rule == "whole":
        return normalise(text)
    if rule == "answer_line":
        return normalise(first_line(text))
    if rule == "gsm8k":
        found = _GSM8K.findall(text)
        return normalise_number(found[-1]) if found else None
    if rule == "choice":
        return _choice_letter(text, list(choices or ("A", "B", "C", "D")))
    raise ValueError(f"answer rule must be one of {', '.join(ANSWER_RULES[1:])}, got {rule!r}")


def detect_rule(references: Sequence[str], choices: Sequence[str] | None = None) -> str:
    """The rule for a validation set from its reference completions: ``choice`` when answer choices are known and
    every reference starts with one; ``gsm8k`` when every reference has a ``####`` number; ``answer_line`` when
    some reference has more than one line; else ``whole``."""
    refs = [r for r in references if r.strip()]
    if choices and refs and all(_choice_letter(r, list(choices)) for r in refs):
        return "choice"
    if refs and all(_GSM8K.search(r) for r in refs):
        return "gsm8k"
    if any(len([line for line in r.splitlines() if line.strip()]) > 1 for r in refs):
        return "answer_line"
    return "whole"


def answers_match(generated: str, reference: str, rule: str, choices: Sequence[str] | None = None) -> bool:
    """True when the reference has an answer under ``rule`` and the generated text has the same one."""
    want = extract_answer(reference, rule, choices)
    return want is not None and extract_answer(generated, rule, choices) == want
