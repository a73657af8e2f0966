"""A built-in synthetic multiple-choice reading task, RACE-shaped and fully offline.

Each record is a short passage describing several people (where each lives, what each does, which pet each
keeps), a question about one of them, four lettered options and a one-letter answer. The facts are drawn at
random for every record and every option is a value that the passage mentions, so a model that does not read
the passage can only guess (25%). Gold letters cycle through A-D, so answers are exactly balanced when the
number of records is a multiple of four. The same ``seed`` always gives the same records.
"""

from __future__ import annotations

import random

LETTERS = ("A", "B", "C", "D")

NAMES = (
    "Alice Bob Carmen Dmitri Elena Farid Grace Hiro Ines Jonas Keiko Liam Maya Nikos Olga Pablo Quinn Rosa Samir "
    "Tara Umar Vera Wen Ximena Yusuf Zoe Anders Bianca Chidi Daria Emeka Fatima Goran Hana Ivan Jamila Kofi Lena "
    "Mateo Nadia"
).split()
CITIES = (
    "Lisbon Oslo Nairobi Lima Kyoto Quebec Tunis Hanoi Perth Bergen Cusco Dakar Porto Riga Seville Tallinn Utrecht "
    "Valencia Zagreb Bruges Cairo Delft Geneva Krakow"
).split()
JOBS = (
    "baker nurse pilot carpenter teacher chemist farmer lawyer painter tailor plumber librarian dentist sailor "
    "architect florist butcher jeweller"
).split()
PETS = "cat dog parrot rabbit goldfish turtle hamster pony lizard canary ferret goat".split()
FILLERS = (
    "The weather that spring was mild and the markets were busy every morning.",
    "Many of the neighbours met on Sundays to share food and stories.",
    "A new railway line had just opened, and trains now ran every hour.",
    "The town library started a reading club that met on Thursday evenings.",
    "Prices at the harbour rose a little after the long winter.",
    "Several families planted gardens along the river that year.",
    "A local band played in the square on the first evening of each month.",
    "The old bridge was repaired, and cyclists used it again.",
)
QUESTIONS = {
    "city": ("In which city does {name} live?", "lives in {value}"),
    "job": ("What is {name}'s job?", "works as a {value}"),
    "pet": ("Which pet does {name} keep?", "keeps a {value}"),
}
INSTRUCTIONS = {
    "letter": "Read the passage and answer the question with the letter of the correct option (A, B, C or D).",
    "text": "Read the passage and answer the question with the correct option, written exactly as it is listed.",
}
INSTRUCTION = INSTRUCTIONS["letter"]
ANSWERS = tuple(INSTRUCTIONS)
# Answer styles: what follows the answer. They move the generation ratio Rg (completion / prompt tokens) while the
# decision to learn stays the same: the answer comes first in every style, so the answer-token metrics compare.
STYLES = ("bare", "sentence", "explanation")


def _passage(rng: random.Random, people: list[dict], fillers: int, only: str | None = None) -> str:
    sentences = [_fact(p, only) for p in people]
    sentences += rng.sample(FILLERS, k=min(fillers, len(FILLERS)))
    rng.shuffle(sentences)
    return " ".join(sentences)


def _fact(p: dict, only: str | None = None) -> str:
    """The passage's sentence about one person: all three facts, or ``only`` one attribute (shorter passages)."""
    if only is not None:
        return f"{p['name']} {QUESTIONS[only][1].format(value=p[only])}."
    return f"{p['name']} lives in {p['city']}, works as a {p['job']} and keeps a {p['pet']}."


def _explanation(
    question: str, subject: dict, attribute: str, cast: list[dict], options: list[str], only: str | None
) -> str:
    """A worked explanation: the supporting sentence, then who each option belongs to, then the conclusion."""
    verb = QUESTIONS[attribute][1]
    owner = {p[attribute]: p["name"] for p in reversed(cast[:4])}
    lines = [f'The passage says: "{_fact(subject, only)}"', f"The question asks: {question}"]
    for letter, option in zip(LETTERS, options, strict=True):
        lines.append(f"Option {letter}, {option}: {owner[option]} {verb.format(value=option)}.")
    gold = LETTERS[options.index(subject[attribute])]
    lines.append(f"Only {subject['name']} is asked about, so the answer is {gold}, {subject[attribute]}.")
    return "\n".join(lines)


def make_record(
    rng: random.Random,
    gold: str,
    people: int = 8,
    fillers: int = 4,
    answer: str = "letter",
    style: str = "bare",
    facts: int = 3,
) -> dict:
    """One record whose correct option is ``gold`` (a letter); every option appears in the passage.

    ``answer`` is ``letter`` (the completion starts with the option's letter) or ``text`` (with the option as
    written); ``style`` adds nothing (``bare``), the supporting sentence (``sentence``) or a worked explanation
    (``explanation``) after the answer, on new lines. ``facts`` is 3 (each person's sentence gives city, job and
    pet) or 1 (only the asked attribute: a shorter passage with the same decision to make).
    """
    if facts not in (1, 3):
        raise ValueError(f"facts must be 1 or 3, got {facts}")
    if not 4 <= people <= len(NAMES):
        raise ValueError(f"people must be in [4, {len(NAMES)}], got {people}")
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    attribute = rng.choice(sorted(QUESTIONS))
    pool = {"city": CITIES, "job": JOBS, "pet": PETS}[attribute]
    values = rng.sample(pool, k=min(people, len(pool)))
    names = rng.sample(NAMES, k=people)
    cast = []
    for i, name in enumerate(names):
        person = {"name": name, "city": rng.choice(CITIES), "job": rng.choice(JOBS), "pet": rng.choice(PETS)}
        # The asked attribute takes distinct values among the first four people, so the options are unambiguous.
        person[attribute] = values[i % len(values)]
        cast.append(person)
    subject = cast[0]
    others = [p[attribute] for p in cast[1:4]]
    options = list(others)
    options.insert(LETTERS.index(gold), subject[attribute])
    question = QUESTIONS[attribute][0].format(name=subject["name"])
    only = attribute if facts == 1 else None
    passage = _passage(rng, cast, fillers, only)
    lettered = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True))
    prompt = (
        f"{INSTRUCTIONS[answer]}\n\nPassage:\n{passage}\n\nQuestion: {question}\n\nOptions:\n{lettered}\n\nAnswer:"
    )
    completion = gold if answer == "letter" else subject[attribute]
    if style == "sentence":
        completion += "\n" + _fact(subject, only)
    elif style == "explanation":
        completion += "\n" + _explanation(question, subject, attribute, cast, options, only)
    return {
        "prompt": prompt,
        "completion": completion,
        "passage": passage,
        "question": question,
        "options": options,
        "answer": gold,
        "subject": subject["name"],
        "attribute": attribute,
    }


def make_synthetic_mcqa(
    n: int,
    seed: int = 0,
    people: int = 8,
    fillers: int = 4,
    answer: str = "letter",
    style: str = "bare",
    facts: int = 3,
) -> list[dict]:
    """``n`` records of the synthetic reading task; deterministic for ``seed``.

    ``people`` (facts per passage) and ``fillers`` (distractor sentences) set the passage length: the defaults
    give about 180 prompt tokens with the SmolLM2 template, ``people=20, fillers=8`` about 400. ``answer`` and
    ``style`` set the completion and ``facts`` the sentences (see :func:`make_record`); the people, questions and
    gold options depend only on ``seed``, ``people`` and ``fillers``, so every format asks the same questions.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [make_record(rng, LETTERS[i % 4], people, fillers, answer, style, facts) for i in range(n)]
