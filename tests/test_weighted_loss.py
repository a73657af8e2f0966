"""Completion weight, both loss normalisations and per-token data weights, against brute force from the model's
own logits: one SGD step (gradient accumulation, packing) and the evaluation's weighted loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

import plw
from plw.data.encode import encode
from plw.loss import denominator, target_weights
from tests.conftest import make_tiny_model

RECORDS = [
    {"prompt": "Describe the weather today in some detail. " * 4, "completion": "Sunny."},
    {"prompt": "Hi", "completion": "Hello there! " * 5},
    {"prompt": "List three fruits.", "completion": "Apple, pear, plum."},
    {"prompt": "Long question " * 6, "completion": "A long answer " * 4},
]
RECORD_WEIGHTS = [2.0, 0.0, 0.5, 1.0]


def weighted_rows(tokenizer, with_data_weight: bool = True) -> list[dict]:
    """Encoded rows; with ``data_weight`` = the record weight, times 3 on the first half of each row's tokens (a
    stand-in for message weights: the factor varies inside a row)."""
    rows = []
    for record, rw in zip(RECORDS, RECORD_WEIGHTS, strict=True):
        row = encode(tokenizer, record)
        if with_data_weight:
            n = len(row["input_ids"])
            row["data_weight"] = [rw * (3.0 if t < n // 2 else 1.0) for t in range(n)]
        rows.append(row)
    return rows


def brute_weights(row: dict, plw_value: float, cw: float) -> torch.Tensor:
    """Weights of the targets of one row, written out from docs/loss.md with Python loops."""
    out = []
    for t in range(1, len(row["input_ids"])):
        w = plw_value * row["prompt_mask"][t] + cw * row["completion_mask"][t]
        out.append(w * row.get("data_weight", [1.0] * len(row["input_ids"]))[t])
    return torch.tensor(out, dtype=torch.float32)


def brute_force_gradient(tokenizer, rows, plw_value, cw, normalization):
    """Gradient of sum(w * nll) / D over all rows, each row alone and unpadded; D = sum(w) or count(w > 0)."""
    model = make_tiny_model(len(tokenizer), seed=1)
    weights = [brute_weights(r, plw_value, cw) for r in rows]
    if normalization == "tokens":
        d = sum(int((w > 0).sum()) for w in weights)
    else:
        d = sum(float(w.sum()) for w in weights)
    for row, w in zip(rows, weights, strict=True):
        ids = torch.tensor([row["input_ids"]])
        nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        ((w * nll).sum() / d).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def sgd_update(tokenizer, rows, tmp_path, batch, accumulation, **trainer_kwargs):
    """``lr * gradient`` of one plain SGD step of PLWTrainer (lr 1, no clipping)."""
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
    trainer = plw.PLWTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, **trainer_kwargs)
    trainer.train()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}


def assert_grads_close(got, want, rtol=1e-4):
    for name in want:
        atol = rtol * float(want[name].abs().max()) + 1e-9
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("normalization", ["weight", "tokens"])
def test_completion_weight_data_weights_and_normalization_under_accumulation(tokenizer, tmp_path, normalization):
    rows = weighted_rows(tokenizer)
    kw = {"prompt_loss_weight": 0.2, "completion_loss_weight": 0.5, "loss_normalization": normalization}
    ref = brute_force_gradient(tokenizer, rows, 0.2, 0.5, normalization)
    accumulated = sgd_update(tokenizer, rows, tmp_path, batch=2, accumulation=2, **kw)
    assert_grads_close(accumulated, ref)
    # The other normalisation gives a visibly different step: the test can tell them apart.
    other = brute_force_gradient(tokenizer, rows, 0.2, 0.5, "tokens" if normalization == "weight" else "weight")
    name = "model.embed_tokens.weight"
    assert not torch.allclose(other[name], ref[name], rtol=1e-2)


def test_packed_rows_with_data_weights_equal_rows_alone(tokenizer, tmp_path):
    rows = weighted_rows(tokenizer)
    kw = {"prompt_loss_weight": 0.3, "completion_loss_weight": 0.8, "loss_normalization": "tokens"}
    packed = sgd_update(tokenizer, rows, tmp_path, batch=2, accumulation=1, packing=True, max_length=128, **kw)
    assert_grads_close(packed, brute_force_gradient(tokenizer, rows, 0.3, 0.8, "tokens"))


def brute_force_weighted_eval(model, rows, plw_value, cw, normalization) -> float:
    num, den, count = 0.0, 0.0, 0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for t, w in enumerate(brute_weights(row, plw_value, cw).tolist(), start=1):
            num += w * -logp[t - 1, row["input_ids"][t]].item()
            den += w
            count += w > 0
    return num / (count if normalization == "tokens" else den)


@pytest.mark.parametrize(("normalization", "packing"), [("weight", False), ("tokens", True)])
def test_eval_weighted_loss_with_completion_and_data_weights(tokenizer, tmp_path, normalization, packing):
    rows = weighted_rows(tokenizer)
    model = make_tiny_model(len(tokenizer), seed=2)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = plw.PLWTrainer(
        model=model,
        args=args,
        eval_dataset=rows,
        processing_class=tokenizer,
        prompt_loss_weight=0.1,
        completion_loss_weight=0.6,
        loss_normalization=normalization,
        packing=packing,
        max_length=128,
    )
    got = trainer.evaluate()
    want = brute_force_weighted_eval(model, rows, 0.1, 0.6, normalization)
    assert got["eval_weighted_loss"] == pytest.approx(want, rel=1e-5)
    # Data weights do not touch the unweighted segment losses.
    unweighted = weighted_rows(tokenizer, with_data_weight=False)
    plain = plw.PLWTrainer(model=model, args=args, eval_dataset=unweighted, processing_class=tokenizer).evaluate()
    assert got["eval_completion_loss"] == pytest.approx(plain["eval_completion_loss"], rel=1e-6)


def test_target_weights_formula():
    pm = torch.tensor([[1, 1, 1, 0, 0]])
    cm = torch.tensor([[0, 0, 0, 1, 1]])
    dw = torch.tensor([[9.0, 2.0, 0.0, 1.0, 3.0]])
    w = target_weights(pm, cm, 0.5, completion_weight=0.25, data_weight=dw)
    assert w.tolist() == [[1.0, 0.0, 0.25, 0.75]]
    assert float(denominator(w, "weight")) == 2.0 and float(denominator(w, "tokens")) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"completion_loss_weight": 1.5}, r"completion_loss_weight must be in \[0, 1\]"),
        ({"loss_normalization": "mean"}, "loss_normalization must be one of weight, tokens"),
        ({"prompt_sample_rate": 0}, r"prompt_sample_rate must be a number in \(0, 1\]"),
    ],
)
def test_bad_trainer_options_are_refused(tiny_model, tmp_path, kwargs, message):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=message):
        plw.PLWTrainer(model=tiny_model, args=args, **kwargs)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"completion_loss_weight": 2}, r"completion_loss_weight must be in \[0, 1\], got 2"),
        ({"completion_loss_weight": "1->x"}, "completion_loss_weight"),
        ({"loss_normalization": "mean"}, "loss_normalization must be one of weight, tokens, got 'mean'"),
        ({"prompt_sample_rate": 0}, r"prompt_sample_rate must be a number in \(0, 1\], got 0"),
        ({"prompt_sample_rate": 1.5}, r"prompt_sample_rate must be a number in \(0, 1\], got 1.5"),
        ({"prompt_sample_rate": True}, "prompt_sample_rate: expected float/int, got bool"),
        ({"prompt_loss_weight": 0, "completion_loss_weight": 0}, "leaves nothing to learn"),
    ],
)
def test_bad_loss_options_in_a_config_are_one_line_errors(values, message):
    from plw.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=message) as err:
        from_dict({"train_data": "train.jsonl", **values})
    assert "\n" not in str(err.value)


def test_loss_options_in_a_config():
    from plw.config import from_dict

    config = from_dict(
        {
            "train_data": "t.jsonl",
            "completion_loss_weight": "1->0.5:cosine",
            "loss_normalization": "tokens",
            "prompt_sample_rate": 0.25,
        }
    )
    assert (config.completion_loss_weight, config.loss_normalization, config.prompt_sample_rate) == (
        "1->0.5:cosine",
        "tokens",
        0.25,
    )


def test_completion_weight_schedule_sets_the_weight_of_every_step(tokenizer, tmp_path):
    """The step normaliser sees the scheduled completion weight: 1 - step / 3 at steps 0, 1, 2."""
    rows = weighted_rows(tokenizer, with_data_weight=False)
    seen = []

    class Recording(plw.PLWTrainer):
        def step_weight(self, batches):
            seen.append((self.completion_loss_weight, float(super().step_weight(batches))))
            return super().step_weight(batches)

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=0.01,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = Recording(
        model=make_tiny_model(len(tokenizer), seed=3),
        args=args,
        train_dataset=rows,
        prompt_loss_weight=0.5,
        completion_loss_weight="1->0:linear",
    )
    trainer.train()
    prompt = sum(sum(r["prompt_mask"][1:]) for r in rows)
    completion = sum(sum(r["completion_mask"][1:]) for r in rows)
    for step, (cw, d) in enumerate(seen):
        assert cw == pytest.approx(1 - step / 3)
        assert d == pytest.approx(0.5 * prompt + (1 - step / 3) * completion)
    logged = [entry["completion_loss_weight"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx([1.0, 2 / 3, 1 / 3])
