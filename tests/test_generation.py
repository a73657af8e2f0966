"""Greedy generation (plw.generation) and the per-row outcomes an evaluation writes to predictions.jsonl.

References are independent of the code under test: a greedy loop that calls the model's own forward on the unpadded
prompt one token at a time (no cache, no batching, no ``generate``), and each row's completion loss recomputed from
the model's own logits on that row alone.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

import plw
from plw.analysis import load_run
from plw.data.encode import encode
from plw.generation import GeneratedAccuracy, generation_rows, greedy_generate, merge_row_tables, rank_share
from plw.runner import MetricsJsonlCallback
from tests.conftest import make_tiny_model


@torch.no_grad()
def brute_greedy(model, prompt, stops, max_new):
    ids = list(prompt)
    new = []
    for _ in range(max_new):
        token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if token in stops:
            return new, True
        new.append(token)
        ids.append(token)
    return new, False


@pytest.fixture(scope="module")
def small_model():
    # Untied: a tiny random model with tied embeddings only repeats its last input token.
    return make_tiny_model(512, seed=3, tie=False).eval()


PROMPTS = [[5, 17, 300, 42], [9], [100, 101, 102, 103, 104, 105, 106, 107, 108, 7, 8], [450, 3, 3]]


def test_batched_generation_equals_one_token_at_a_time(small_model):
    stops = frozenset({511})
    got = greedy_generate(small_model, PROMPTS, stops, max_new_tokens=6, batch_size=3)
    assert got == [brute_greedy(small_model, p, stops, 6) for p in PROMPTS]


def test_generation_stops_at_the_stop_token_and_at_the_bound(small_model):
    free, _ = brute_greedy(small_model, PROMPTS[0], frozenset(), 8)
    # A stop token the model first produces at step k > 0: generation ends before it.
    k = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    [(ids, stopped)] = greedy_generate(small_model, [PROMPTS[0]], frozenset({free[k]}), max_new_tokens=8)
    assert (ids, stopped) == (free[:k], True)
    [(ids, stopped)] = greedy_generate(small_model, [PROMPTS[0]], frozenset({511}), max_new_tokens=2)
    assert (ids, stopped) == (free[:2], False) and 511 not in free[:2]
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(small_model, PROMPTS, frozenset({511}), max_new_tokens=0)


def test_rank_shares_are_equal_length_and_cover_every_row_once():
    rows = list(range(7))
    shares = [rank_share(rows, r, 3) for r in range(3)]
    assert {len(mine) for mine, _ in shares} == {3}
    assert sorted(x for mine, real in shares for x in mine[:real]) == rows


def test_merge_row_tables_aligns_on_id():
    merged = merge_row_tables({"id": [1, 2], "exact": [0, 1]}, {"id": [2, 3], "generated": ["b", "c"]})
    assert merged == {"id": [1, 2, 3], "exact": [0, 1, None], "generated": [None, "b", "c"]}


def completion_losses(model, rows):
    """Each row's mean NLL over its completion targets, from the model's logits on that row alone."""
    out = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1].float(), ids[0, 1:], reduction="none")
            mask = torch.tensor(row["completion_mask"][1:]).bool()
            out.append(float(nll[mask].mean()))
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_evaluation_writes_generated_answers_and_row_losses(tokenizer, tmp_path, packing):
    model = make_tiny_model(len(tokenizer), seed=5, tie=False).eval()
    prompts = [f"Question {i}: name a city." for i in range(5)]
    stops = frozenset({tokenizer.eos_token_id})
    probe = encode(tokenizer, {"prompt": prompts[0], "completion": "x"})
    prompt_ids = probe["input_ids"][: probe["completion_mask"].index(1)]
    answer = tokenizer.decode(brute_greedy(model, prompt_ids, stops, 4)[0], skip_special_tokens=True)
    # Row 0's reference is what the model answers (so it is right); the others' are answers it does not give.
    completions = [answer, "Lisbon", "Oslo is far away in the north", "Porto", "Lima"]
    rows = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        row = encode(tokenizer, {"prompt": p, "completion": c})
        row["row_id"] = [10 + i] * len(row["input_ids"])
        rows.append(row)
    generated = GeneratedAccuracy(generation_rows(rows, tokenizer), tokenizer, stops, max_new_tokens=4, rule="whole")
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = plw.PLWTrainer(
        model=model,
        args=args,
        eval_dataset=rows,
        processing_class=tokenizer,
        prompt_loss_weight=0.5,
        packing=packing,
        max_length=256,
        generated_accuracy=generated,
    )
    writer = MetricsJsonlCallback(tmp_path / "metrics.jsonl", 0.5, lambda: trainer.last_row_outcomes)
    trainer.add_callback(writer.callback)
    metrics = trainer.evaluate()

    line = load_run(tmp_path).predictions[0]  # read back from predictions.jsonl
    assert line["id"] == [10, 11, 12, 13, 14]
    assert line["completion_loss"] == pytest.approx(completion_losses(model, rows), rel=1e-5)
    want_text = []
    for row in rows:
        ids, _ = brute_greedy(model, row["input_ids"][: row["completion_mask"].index(1)], stops, 4)
        want_text.append(tokenizer.decode(ids, skip_special_tokens=True))
    assert line["generated"] == want_text
    assert line["generated_correct"] == [1, 0, 0, 0, 0]
    assert metrics["eval_generated_accuracy"] == pytest.approx(0.2)
    assert metrics["eval_generated_rows"] == 5
    assert line["exact"] == [int(x) for x in line["exact"]]  # the teacher-forced outcomes stay next to them


def test_a_run_with_generated_accuracy_writes_it_per_row(tokenizer, tmp_path):
    """`eval_generated_accuracy: true` in a run's config: the metric in metrics.jsonl, the rows in predictions.jsonl,
    and the report's accuracy for these text answers is the generated one."""
    from plw.analysis import accuracy_key
    from plw.config import from_dict
    from plw.runner import train_run
    from tests.conftest import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model", tokenizer, seed=4)
    data = {"source": "synthetic", "rows": 4, "people": 4, "fillers": 0, "answer": "text"}
    config = {
        "name": "gen",
        "output_dir": str(tmp_path / "runs"),
        "model": str(model_dir),
        "train_data": dict(data, seed=1),
        "eval_data": dict(data, seed=2),
        "max_steps": 1,
        "batch_size": 2,
        "eval_steps": 1,
        "report_to": [],
        "bf16": False,
        "checkpoints": False,
        "eval_generated_accuracy": True,
        "eval_max_new_tokens": 3,
    }
    run = load_run(train_run(from_dict(config), progress=False))
    assert [line["step"] for line in run.lines] == [0, 1]
    assert accuracy_key(run.lines) == "eval_generated_accuracy"
    for line in run.lines:
        row = run.predictions[line["step"]]
        assert row["id"] == [0, 1, 2, 3] and len(row["generated"]) == 4 and len(row["completion_loss"]) == 4
        assert line["eval_generated_rows"] == 4
        assert line["eval_generated_accuracy"] == sum(row["generated_correct"]) / 4
        assert all(len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 4 for text in row["generated"])
