"""RACE (Lai et al., 2017): English reading-comprehension exams as prompt/completion records.

Three ways in, all giving the same records:

* JSONL rows ``{"id", "article", "question", "options": [4 strings], "answer": "A".."D"}`` (optionally ``split``
  and ``level``), like ``../shared/data/race/*.jsonl``;
* a folder in the original release layout, ``{train,dev,test}/{high,middle}/*.txt``, one JSON object per passage
  with ``article``, ``questions[]``, ``options[][]``, ``answers[]`` and ``id``;
* the Hugging Face hub dataset ``ehovy/race`` (configs ``all``, ``high``, ``middle``; splits ``train``,
  ``validation``, ``test``), when online.

The prompt template (:data:`PROMPT_TEMPLATE`) is the passage, the question, the options lettered A-D and an
instruction to answer with the letter; the completion is the letter alone (with the SmolLM2 chat template:
``B<|im_end|>\\n``, 3 tokens). The original release calls the validation split ``dev``; both names are accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .jsonl import iter_jsonl_rows, row_name
from .report import LoadReport, SourceError

LETTERS = ("A", "B", "C", "D")
CONFIGS = ("all", "high", "middle")
SPLITS = ("train", "validation", "test")
HUB_NAME = "ehovy/race"

INSTRUCTION = "Read the passage, then answer the question with the letter of the correct option (A, B, C or D)."
PROMPT_TEMPLATE = "{instruction}\n\nPassage:\n{article}\n\nQuestion: {question}\n\nOptions:\n{options}\n\nAnswer:"


def format_prompt(article: str, question: str, options: Sequence[str]) -> str:
    """The RACE prompt: instruction, passage, question and the four options as ``A. ...`` lines."""
    lettered = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True))
    return PROMPT_TEMPLATE.format(
        instruction=INSTRUCTION, article=article.strip(), question=question.strip(), options=lettered
    )


def _problem(row: dict[str, Any]) -> tuple[str, str] | None:
    """Why a RACE row cannot become a record (reason, detail), or None when it can."""
    for key in ("article", "question", "options", "answer"):
        if key not in row or row[key] is None:
            return f"missing field {key!r}", ""
    for key in ("article", "question"):
        if not isinstance(row[key], str):
            return f"field {key!r} is not a string", type(row[key]).__name__
    if not row["article"].strip():
        return "empty article", ""
    options = row["options"]
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options):
        return "options are not a list of strings", ""
    if len(options) != 4:
        return "not 4 options", f"got {len(options)}"
    answer = row["answer"]
    if not (answer in LETTERS or (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 4)):
        return "answer not one of A-D", repr(answer)
    return None


def race_record(row: dict[str, Any], where: str, report: LoadReport, rid: str | None = None) -> dict | None:
    """Turn one RACE question into a record, or count why it cannot be (and return None).

    The record has ``prompt``, ``completion`` (the letter), ``answer``, ``id`` and, when known, ``level``.
    """
    problem = _problem(row)
    if problem is not None:
        report.drop(problem[0], row_name(row, where) if rid is None else rid, problem[1], where=where)
        return None
    answer = row["answer"] if isinstance(row["answer"], str) else LETTERS[row["answer"]]
    record = {
        "prompt": format_prompt(row["article"], row["question"], row["options"]),
        "completion": answer,
        "answer": answer,
        "id": rid if rid is not None else row_name(row, where),
    }
    if isinstance(row.get("level"), str):
        record["level"] = row["level"]
    report.kept += 1
    return record


def check_choice(config: str | None, split: str | None) -> tuple[str, str | None]:
    """Validate ``config`` (all/high/middle) and ``split`` (train/validation/dev/test); return them normalised."""
    config = config or "all"
    if config not in CONFIGS:
        raise ValueError(f"RACE config must be one of {CONFIGS}, got {config!r}")
    if split == "dev":
        split = "validation"
    if split is not None and split not in SPLITS:
        raise ValueError(f"RACE split must be one of {SPLITS} (or 'dev'), got {split!r}")
    return config, split


def _wanted(value: Any, wanted: str | None) -> bool:
    return wanted is None or value is None or value == wanted


def iter_race_jsonl(
    path: str | Path, report: LoadReport, config: str = "all", split: str | None = None
) -> Iterator[tuple[str, dict]]:
    """Records of a RACE JSONL file; rows whose ``level``/``split`` field names another subset are counted in
    ``report.skipped``, not dropped: they are not bad rows."""
    config, split = check_choice(config, split)
    for where, row in iter_jsonl_rows(path, report):
        row_split = "validation" if row.get("split") == "dev" else row.get("split")
        if not (_wanted(row.get("level"), None if config == "all" else config) and _wanted(row_split, split)):
            report.skipped += 1
            continue
        record = race_record(row, where, report)
        if record is not None:
            yield record["id"], record


def _numbered(path: Path) -> tuple[str, int, str]:
    digits = re.sub(r"\D", "", path.stem)
    return (path.parent.name, int(digits) if digits else -1, path.name)


def race_folder_files(root: str | Path, config: str = "all", split: str | None = None) -> list[Path]:
    """The passage files of a RACE release folder, in a stable order (level, then file number).

    ``root`` is the release root (holding ``train/ dev/ test/``; ``split`` is then required), one split folder
    (holding ``high/ middle/``) or one level folder of ``*.txt`` files.
    """
    config, split = check_choice(config, split)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RACE folder {str(root)!r} does not exist")
    split_dirs = {"train": "train", "validation": "dev", "test": "test"}
    if any((root / d).is_dir() for d in split_dirs.values()):
        if split is None:
            raise ValueError(f"{root} holds several RACE splits: give split (train, validation or test)")
        root = root / split_dirs[split]
        if not root.is_dir():
            raise FileNotFoundError(f"RACE folder {str(root)!r} does not exist")
    if any((root / level).is_dir() for level in ("high", "middle")):
        levels = ("high", "middle") if config == "all" else (config,)
        files = [f for level in levels for f in (root / level).glob("*.txt")]
    else:
        files = list(root.glob("*.txt"))
    return sorted(files, key=_numbered)


def iter_race_folder(
    root: str | Path, report: LoadReport, config: str = "all", split: str | None = None
) -> Iterator[tuple[str, dict]]:
    """Records of a RACE release folder (see :func:`race_folder_files`), one per question.

    Ids follow the JSONL files: ``dev/high63.txt/0`` (split folder / passage id / question index).
    """
    for path in race_folder_files(root, config, split):
        level = path.parent.name if path.parent.name in ("high", "middle") else None
        split_name = path.parent.parent.name if level else path.parent.name
        try:
            passage = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            report.read += 1
            report.drop("malformed JSON", str(path), str(err))
            continue
        questions = passage.get("questions") if isinstance(passage, dict) else None
        if not isinstance(questions, list):
            report.read += 1
            report.drop("passage without a questions list", str(path))
            continue
        options, answers = passage.get("options") or [], passage.get("answers") or []
        pid = passage.get("id") if isinstance(passage.get("id"), str) else f"{level or ''}{path.name}"
        for i, question in enumerate(questions):
            report.read += 1
            row = {
                "article": passage.get("article"),
                "question": question,
                "options": options[i] if i < len(options) else None,
                "answer": answers[i] if i < len(answers) else None,
                "level": level,
            }
            record = race_record(row, str(path), report, rid=f"{split_name}/{pid}/{i}")
            if record is not None:
                yield record["id"], record


def iter_race_hub(
    report: LoadReport, config: str = "all", split: str | None = "train", name: str = HUB_NAME, **kwargs: Any
) -> Iterator[tuple[str, dict]]:
    """Records of the hub dataset (``datasets.load_dataset(name, config, split=split)``); needs the network or
    the ``datasets`` cache. Rows carry ``example_id`` (the passage file), ``article``, ``question``, ``options``,
    ``answer``; ids become ``validation/high19432.txt/0`` like the other loaders'."""
    config, split = check_choice(config, split)
    if split is None:
        raise ValueError("RACE from the hub needs split (train, validation or test)")
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, **kwargs)
    except Exception as err:  # network, missing cache, unknown config: say what was asked and why it failed
        raise SourceError(f"could not load {name!r} (config {config!r}, split {split!r}): {err}") from err
    seen: dict[str, int] = {}
    for n, row in enumerate(ds):
        report.read += 1
        pid = str(row.get("example_id", n))
        index = seen.get(pid, 0)
        seen[pid] = index + 1
        record = race_record(dict(row), f"{name}[{n}]", report, rid=f"{split}/{pid}/{index}")
        if record is not None:
            yield record["id"], record
