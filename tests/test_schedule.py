"""PLW schedules: values against their formulas, parsing errors, and the weight the trainer's loss really uses."""

from __future__ import annotations

import math

import pytest
import torch

from plw.schedule import ScheduleError, parse_plw, plw_label, plw_values


def test_linear_cosine_and_step_values_equal_their_formulas():
    lin = parse_plw("1->0:linear")
    assert [lin.value(s, total_steps=10) for s in (0, 1, 5, 9, 10, 15)] == pytest.approx([1, 0.9, 0.5, 0.1, 0, 0])
    cos = parse_plw("1->0.2:cosine")
    for s in (0, 3, 5, 8, 10):
        assert cos.value(s, total_steps=10) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * s / 10)) / 2)
    # Two equal drops over 8 steps: 0.5 until step 4, 0.25 until step 8, then 0.
    step = parse_plw({"start": 0.5, "end": 0.0, "shape": "step", "stairs": 2, "length": 8})
    assert [step.value(s) for s in (0, 3, 4, 7, 8, 20)] == [0.5, 0.5, 0.25, 0.25, 0.0, 0.0]
    rising = parse_plw("0->1")  # schedules may rise as well
    assert rising.value(3, total_steps=4) == pytest.approx(0.75)


def test_warm_up_and_epoch_units():
    # Held at 1 for half an epoch, then linear to 0 over one epoch; the optimizer step number is irrelevant.
    sched = parse_plw({"start": 1, "end": 0, "unit": "epochs", "warmup": 0.5, "length": 1})
    got = [sched.value(step=123, epoch=e) for e in (0.0, 0.25, 0.5, 1.0, 1.25, 1.5, 3.0)]
    assert got == pytest.approx([1, 1, 1, 0.5, 0.25, 0, 0])
    # Without a length the change spans the rest of training: 10 steps, 2 of warm-up, so 8 of change.
    sched = parse_plw({"start": 1, "end": 0, "warmup": 2})
    assert [sched.value(s, total_steps=10) for s in (0, 2, 6, 10)] == pytest.approx([1, 1, 0.5, 0])
    sched = parse_plw({"start": 0.8, "end": 0.2, "shape": "cosine", "unit": "epochs"})
    assert sched.value(0, epoch=1.0, total_epochs=2.0) == pytest.approx(0.5)
    with pytest.raises(ScheduleError, match="length of training"):
        parse_plw("1->0").value(3)


def test_constants_labels_and_config_round_trip():
    for value in (0, 0.1, 1, "0.25"):
        sched = parse_plw(value)
        assert sched.is_constant and sched.value(7, total_steps=10) == float(value)
        assert sched.to_config() == float(value)
    for value in ("1->0:linear", "1->0.1:cosine", {"start": 1, "end": 0, "shape": "step", "unit": "epochs"}):
        sched = parse_plw(value)
        assert parse_plw(sched.to_config()) == sched
    assert parse_plw("1->0").label() == "1→0 linear" and parse_plw("1->0").slug() == "1to0-linear"
    warm = parse_plw({"start": 1, "end": 0.1, "shape": "cosine", "warmup": 0.5, "unit": "epochs"})
    assert warm.label() == "1→0.1 cosine (warm-up 0.5 epochs)"
    assert "/" not in warm.slug() and ":" not in warm.slug() and ">" not in warm.slug()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("1->", "not a number"),
        ("2->0", r"in \[0, 1\]"),
        ("1->0:sideways", "shape"),
        ({"start": 1}, "start and end"),
        ({"start": 1, "end": 0, "unit": "hours"}, "unit"),
        ({"start": 1, "end": 0, "length": -1}, "length"),
        ({"start": 1, "end": 0, "length": 0}, "length"),
        ({"start": 1, "end": 0, "length": True}, "length"),
        ({"start": 1, "end": 0, "length": "3"}, "length"),
        ({"start": 1, "end": 0, "length": float("nan")}, "length"),
        ({"start": 1, "end": 0, "length": float("inf")}, "length"),
        ({"start": 1, "end": 0, "warmup": -1}, "warmup"),
        ({"start": 1, "end": 0, "warmup": float("nan")}, "warmup"),
        ({"start": 1, "end": 0, "warmup": float("inf")}, "warmup"),
        ({"start": 1, "end": 0, "warmup": True}, "warmup"),
        ({"start": 1, "end": 0, "warmup": "2"}, "warmup"),
        ({"start": 1, "end": 0, "shape": "step", "stairs": 0}, "stairs"),
        ({"start": 1, "end": 0, "shape": "step", "stairs": 2.5}, "stairs"),
        ({"start": 1, "end": 0, "shape": "step", "stairs": True}, "stairs"),
        ({"start": 1, "end": 0, "stairs": 2}, "only for shape step"),
        ({"start": 1, "end": 0, "speed": 2}, "unknown schedule key"),
        (float("nan"), r"in \[0, 1\]"),
        (True, "number"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(bad, message):
    with pytest.raises(ScheduleError, match=message):
        parse_plw(bad)


def test_config_accepts_schedules_and_refuses_bad_ones():
    from plw.config import ConfigError, load_config

    cfg = load_config(None, ["train_data=x.jsonl", "prompt_loss_weight=1->0", "plw_values=[1, 0, '1->0:cosine']"])
    assert cfg.prompt_loss_weight == "1->0:linear" and cfg.plw_values == [1.0, 0.0, "1->0:cosine"]
    with pytest.raises(ConfigError, match="shape"):
        load_config(None, ["train_data=x.jsonl", "prompt_loss_weight={start: 1, end: 0, shape: zigzag}"])


def brute_force_loss(logits, batch, plw):
    """sum(w * nll) / sum(w) over the targets of a padded batch, one token at a time."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    total = weight = 0.0
    ids, p_mask, c_mask = batch["input_ids"], batch["prompt_mask"], batch["completion_mask"]
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            w = plw * float(p_mask[b, t]) + float(c_mask[b, t])
            total += w * -float(logp[b, t - 1, ids[b, t]])
            weight += w
    return total / weight


@pytest.mark.parametrize("loss_impl", ["chunked", "plain"])
def test_the_loss_uses_the_scheduled_weight_at_each_step(tokenizer, tmp_path, loss_impl):
    from transformers import TrainingArguments

    from plw import PLWTrainer, encode
    from tests.conftest import make_tiny_model

    rows = [
        encode(tokenizer, {"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"It is {2 * i}."})
        for i in range(8)
    ]
    seen = {}

    class Recording(PLWTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                with torch.no_grad():
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                batch = {k: v.detach().clone() for k, v in inputs.items()}
                seen[self.state.global_step] = (self.prompt_loss_weight, float(loss.detach()), logits.float(), batch)
            return loss

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=0.05,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = Recording(
        model=make_tiny_model(len(tokenizer), seed=3),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        prompt_loss_weight="1->0:linear",
        loss_impl=loss_impl,
    )
    trainer.train()
    assert sorted(seen) == [0, 1, 2, 3]
    for step in (1, 3):  # 1 - step / 4: 0.75 and 0.25
        plw, loss, logits, batch = seen[step]
        assert plw == pytest.approx(1 - step / 4)
        assert loss == pytest.approx(brute_force_loss(logits, batch, 1 - step / 4), rel=1e-5)
        # Discriminating: the constant weight 1 would give a clearly different loss on the same batch.
        assert abs(loss - brute_force_loss(logits, batch, 1.0)) > 1e-3
    logged = [entry["plw"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_every_option_shows_in_label_slug_and_config():
    # Sweep folders are named by slug() and resumes compare to_config(): options must not vanish from either.
    full = parse_plw(
        {"start": 1, "end": 0, "shape": "step", "unit": "epochs", "length": 2, "warmup": 0.5, "stairs": 4}
    )
    assert full.label() == "1→0 step (4 stairs, warm-up 0.5 epochs, over 2 epochs)"
    assert full.slug() == "1to0-step-4stairs-warmup0.5e-over2e"
    assert parse_plw(full.to_config()) == full
    assert parse_plw("1->0:step").slug() == "1to0-step" and parse_plw("1->0:step").label() == "1→0 step"
    steps = parse_plw({"start": 0.5, "end": 0, "length": 10, "warmup": 2})
    assert steps.slug() == "0.5to0-linear-warmup2s-over10s" and parse_plw(steps.to_config()) == steps
    assert steps.to_config() == {
        "start": 0.5,
        "end": 0.0,
        "shape": "linear",
        "unit": "steps",
        "length": 10,
        "warmup": 2,
    }


def test_warmup_boundary_and_zero_length():
    sched = parse_plw({"start": 1, "end": 0, "warmup": 2, "length": 4})
    assert [sched.value(s) for s in range(8)] == [1, 1, 1, 0.75, 0.5, 0.25, 0, 0]
    # Warm-up as long as training: past it the weight is at its end value at once (no division by zero).
    assert parse_plw({"start": 1, "end": 0, "warmup": 4}).value(5, total_steps=4) == 0.0
    assert parse_plw({"start": 1, "end": 0, "warmup": 4}).value(4, total_steps=4) == 1.0
    # The default epoch is 0: a schedule in epochs starts at its start value when no epoch is given.
    assert parse_plw({"start": 1, "end": 0, "unit": "epochs"}).value(0, total_epochs=2) == 1.0


def error_of(func, *args, **kwargs) -> str:
    """The message of the ScheduleError that ``func(*args, **kwargs)`` raises."""
    with pytest.raises(ScheduleError) as err:
        func(*args, **kwargs)
    return str(err.value)


@pytest.mark.parametrize(
    "value, message",
    [
        (2, "completion_loss_weight must be in [0, 1], got 2"),
        ("1.5", "completion_loss_weight must be in [0, 1], got 1.5"),
        ("1.5->0", "completion_loss_weight.start must be in [0, 1], got 1.5"),
        ("1->1.5", "completion_loss_weight.end must be in [0, 1], got 1.5"),
        ("1e->0", "completion_loss_weight: '1e' is not a number"),  # shaped like START->END, START not a number
        ("0->1e", "completion_loss_weight: '1e' is not a number"),
        ({"start": 1.5, "end": 0}, "completion_loss_weight.start must be in [0, 1], got 1.5"),
        ({"start": 1, "end": -1}, "completion_loss_weight.end must be in [0, 1], got -1"),
        (
            {"start": 1, "end": 0, "speed": 2},
            "completion_loss_weight: unknown schedule key(s) ['speed']; known: start, end, shape, unit, length, "
            "warmup, stairs",
        ),
        (
            {"start": 1, "end": 0, "shape": "zigzag"},
            "completion_loss_weight.shape: expected one of constant, linear, cosine, step, got 'zigzag'",
        ),
        (
            {"start": 1, "end": 0, "shape": "step", "stairs": 0},
            "completion_loss_weight.stairs: a positive integer, got 0",
        ),
    ],
)
def test_errors_name_the_key_they_are_about(value, message):
    # plw promises one-line errors that name the bad key; parse_plw is told the key by its callers.
    assert error_of(parse_plw, value, "completion_loss_weight") == message


def test_the_default_key_is_prompt_loss_weight():
    assert error_of(parse_plw, {"start": 1.5, "end": 0}) == "prompt_loss_weight.start must be in [0, 1], got 1.5"


def test_sweep_values_are_checked_under_their_key_and_repeats_are_shown():
    assert plw_values([1, "1->0", 0.1], "plw_values") == [1.0, "1->0:linear", 0.1]
    assert error_of(plw_values, [0.5, 1.5], "plw_values") == "plw_values must be in [0, 1], got 1.5"
    # The same schedule written two ways is a repeat; the message shows the values as given ...
    repeated = [0.5, "1->0", {"start": 1, "end": 0}]
    assert error_of(plw_values, repeated, "plw_values") == f"plw_values: repeated values in {repeated!r}"
    # ... or, for the command line, the text the user typed.
    assert error_of(plw_values, [0.1, 0.1], "--plw", shown="0.1,0.10") == "--plw: repeated values in '0.1,0.10'"


def test_plw_label_of_config_values():
    assert plw_label(0.1) == "0.1"
    assert plw_label("1->0") == "1→0 linear"
    assert plw_label({"start": 1, "end": 0.2, "shape": "cosine", "warmup": 3}) == "1→0.2 cosine (warm-up 3 steps)"
    assert plw_label("sideways") == "sideways"  # a value that does not parse is shown as it is
