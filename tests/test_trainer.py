"""PLWTrainer: step-level normalisation under gradient accumulation, streamed metrics, best-checkpoint selection."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import TrainingArguments

import plw
from plw.data.encode import encode
from plw.data.synthetic import make_synthetic_mcqa
from tests.conftest import make_tiny_model


def uneven_rows(tokenizer):
    """Four rows with very different prompt and completion lengths."""
    records = [
        {"prompt": "Describe the weather. " * 30, "completion": "Sunny."},
        {"prompt": "Hi", "completion": "Hello there! " * 12},
        {"prompt": "List three fruits.", "completion": "Apple, pear, plum."},
        {"prompt": "Long question " * 12, "completion": "A long answer " * 8},
    ]
    return [encode(tokenizer, r) for r in records]


def one_sgd_step(tokenizer, rows, plw_value, batch, accumulation, tmp_path):
    model = make_tiny_model(len(tokenizer), seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch}a{accumulation}"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = plw.PLWTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, prompt_loss_weight=plw_value
    )
    trainer.train()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}  # = lr * gradient


def brute_force_gradient(tokenizer, rows, plw_value):
    """Gradient of sum(w * nll) / sum(w) over all rows, one row at a time, no plw code involved."""
    model = make_tiny_model(len(tokenizer), seed=1)
    total_w = sum(plw_value * sum(r["prompt_mask"][1:]) + sum(r["completion_mask"][1:]) for r in rows)
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        w = plw_value * torch.tensor(row["prompt_mask"][1:]).float() + torch.tensor(row["completion_mask"][1:]).float()
        logits = model(input_ids=ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        ((w * nll).sum() / total_w).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("plw_value", [0.0, 0.1, 1.0])
def test_gradient_accumulation_does_not_change_the_update(tokenizer, tmp_path, plw_value):
    rows = uneven_rows(tokenizer)
    acc = one_sgd_step(tokenizer, rows, plw_value, batch=1, accumulation=4, tmp_path=tmp_path)
    big = one_sgd_step(tokenizer, rows, plw_value, batch=4, accumulation=1, tmp_path=tmp_path)
    ref = brute_force_gradient(tokenizer, rows, plw_value)
    for name in ref:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(big[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)


def brute_force_metrics(model, rows, plw_value, choice_ids):
    """Per-row forwards; every metric from Python sums over positions."""
    s = {k: 0.0 for k in ("pn", "pc", "cn", "cc", "wn", "w", "cok", "ans", "acc", "chacc")}
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        first = row["completion_mask"].index(1)
        for t in range(1, len(row["input_ids"])):
            nll = -logp[t - 1, row["input_ids"][t]].item()
            if row["prompt_mask"][t]:
                s["pn"] += nll
                s["pc"] += 1
                s["wn"] += plw_value * nll
                s["w"] += plw_value
            else:
                s["cn"] += nll
                s["cc"] += 1
                s["wn"] += nll
                s["w"] += 1
                s["cok"] += int(logits[t - 1].argmax().item() == row["input_ids"][t])
        gold = row["input_ids"][first]
        if gold in choice_ids:
            s["ans"] += 1
            s["acc"] += int(logits[first - 1].argmax().item() == gold)
            best_choice = max(choice_ids, key=lambda c: logits[first - 1, c].item())
            s["chacc"] += int(best_choice == gold)
    return {
        "eval_prompt_loss": s["pn"] / s["pc"],
        "eval_completion_loss": s["cn"] / s["cc"],
        "eval_full_loss": (s["pn"] + s["cn"]) / (s["pc"] + s["cc"]),
        "eval_weighted_loss": s["wn"] / s["w"],
        "eval_completion_token_accuracy": s["cok"] / s["cc"],
        "eval_accuracy": s["acc"] / s["ans"],
        "eval_choice_accuracy": s["chacc"] / s["ans"],
        "eval_answer_rows": s["ans"],
        "eval_rows": len(rows),
    }


def test_streamed_metrics_equal_brute_force(tokenizer, tmp_path):
    records = make_synthetic_mcqa(44, seed=3, people=4, fillers=1)
    # Mix in rows whose first completion token is not a choice: they count for losses but not for accuracy.
    records += [{"prompt": f"Say something {i}.", "completion": "Sure, here it is."} for i in range(6)]
    random.Random(0).shuffle(records)
    rows = [encode(tokenizer, r) for r in records]
    model = make_tiny_model(len(tokenizer), seed=2)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = plw.PLWTrainer(
        model=model,
        args=args,
        eval_dataset=rows,
        processing_class=tokenizer,
        prompt_loss_weight=0.2,
        answer_choices=["A", "B", "C", "D"],
    )
    got = trainer.evaluate()
    want = brute_force_metrics(model, rows, 0.2, trainer.choice_token_ids)
    assert want["eval_answer_rows"] == 44
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert got["eval_loss"] == got["eval_weighted_loss"]


def test_best_checkpoint_by_completion_loss(tokenizer, tmp_path):
    rows = [encode(tokenizer, r) for r in make_synthetic_mcqa(16, seed=5, people=4, fillers=0)]
    model = make_tiny_model(len(tokenizer), seed=3)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=8,
        learning_rate=3e-3,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_completion_loss",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_total_limit=1,
    )
    trainer = plw.PLWTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=rows[:8],
        processing_class=tokenizer,
        prompt_loss_weight=0.0,
        answer_choices=["A", "B", "C", "D"],
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_completion_loss" in h]
    best = min(evals, key=lambda h: h["eval_completion_loss"])
    assert trainer.state.best_metric == pytest.approx(best["eval_completion_loss"])
    assert trainer.state.best_global_step == best["step"]
    # The loaded model is the best one: evaluating it again gives the best value.
    assert trainer.evaluate()["eval_completion_loss"] == pytest.approx(best["eval_completion_loss"], rel=1e-5)


def test_bad_prompt_loss_weight_is_refused(tiny_model, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"prompt_loss_weight must be in \[0, 1\]"):
        plw.PLWTrainer(model=tiny_model, args=args, prompt_loss_weight=1.5)
