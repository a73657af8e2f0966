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
INSTRUCTION = "Read the passage and answer the question with the letter of the correct option (A, B, C or D)."


def _passage(rng: random.Random, people: list[dict], fillers: int) -> str:
    sentences = []
    for p in people:
        sentences.append(f"{p['name']} lives in {p['city']}, works as a {p['job']} and keeps a {p['pet']}.")
    sentences += rng.sample(FILLERS, k=min(fillers, len(FILLERS)))
    rng.shuffle(sentences)
    return " ".join(sentences)


def make_record(rng: random.Random, gold: str, people: int = 8, fillers: int = 4) -> dict:
    """One record whose correct option is ``gold`` (a letter); every option appears in the passage."""
    if not 4 <= people <= len(NAMES):
        raise ValueError(f"people must be in [4, {len(NAMES)}], got {people}")
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
    passage = _passage(rng, cast, fillers)
    lettered = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True))
    prompt = f"{INSTRUCTION}\n\nPassage:\n{passage}\n\nQuestion: {question}\n\nOptions:\n{lettered}\n\nAnswer:"
    return {
        "prompt": prompt,
        "completion": gold,
        "passage": passage,
        "question": question,
        "options": options,
        "answer": gold,
        "subject": subject["name"],
        "attribute": attribute,
    }


def make_synthetic_mcqa(n: int, seed: int = 0, people: int = 8, fillers: int = 4) -> list[dict]:
    """``n`` records of the synthetic reading task; deterministic for ``seed``.

    ``people`` (facts per passage) and ``fillers`` (distractor sentences) set the passage length: the defaults
    give about 180 prompt tokens with the SmolLM2 template, ``people=20, fillers=8`` about 400.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [make_record(rng, LETTERS[i % 4], people, fillers) for i in range(n)]
