"""plw.weight_policy: the weights of a step and its normaliser, against hand-computed references."""

from __future__ import annotations

import pytest
import torch

from plw.weight_policy import StepWeights, WeightPolicy


def _batch():
    return {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]]),
        "prompt_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]),
        "completion_mask": torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]),
        "data_weight": torch.tensor([[2.0] * 5, [0.5] * 5]),
        "role_weight": torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0] * 5]),
    }


def test_step_weights_of_a_batch_by_hand():
    w = StepWeights(plw=0.25, completion=0.5).batch_weights(_batch())
    # targets are tokens 1..4; row 0: prompt tokens 1, 2 (role weight 1, 0), completion 3, 4; data weight 2
    expected = torch.tensor([[0.25 * 2, 0.0, 0.5 * 2, 0.5 * 2], [0.25 * 0.5, 0.5 * 0.5, 0.0, 0.0]])
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize(("normalization", "expected"), [("weight", 0.5 + 1 + 1 + 0.125 + 0.25), ("tokens", 5.0)])
def test_step_denominator_sums_micro_batches(normalization, expected):
    weights = StepWeights(0.25, 0.5, normalization)
    assert float(weights.step_denominator([_batch(), _batch()])) == pytest.approx(2 * expected)


def test_schedules_give_the_weights_of_each_step():
    policy = WeightPolicy("1->0:linear", 0.5, "tokens")
    assert policy.start == StepWeights(1.0, 0.5, "tokens")
    # a linear schedule over 10 steps: step s has 1 - s / 10 (plw.schedule's rule)
    from plw.schedule import parse_plw

    expected = parse_plw("1->0:linear").value(4, 0.0, total_steps=10, total_epochs=1.0)
    assert policy.at(4, 0.0, total_steps=10, total_epochs=1.0) == StepWeights(expected, 0.5, "tokens")
    assert 0.0 < expected < 1.0


def test_training_weights_subsample_only_below_rate_one():
    batch = _batch()
    exact = StepWeights(0.25).batch_weights(batch)
    torch.testing.assert_close(WeightPolicy(0.25).training_weights(StepWeights(0.25), batch, seed=1, step=0), exact)
    with pytest.raises(ValueError, match="row_index"):
        WeightPolicy(0.25, prompt_sample_rate=0.5).training_weights(StepWeights(0.25), batch, seed=1, step=0)
    batch["row_index"] = torch.tensor([[0] * 5, [1] * 5])
    sampled = WeightPolicy(0.25, prompt_sample_rate=0.5).training_weights(StepWeights(0.25), batch, seed=1, step=0)
    completion = batch["completion_mask"][:, 1:].bool()
    torch.testing.assert_close(sampled[completion], exact[completion])  # completion targets untouched
    prompt = batch["prompt_mask"][:, 1:].bool()
    assert set(torch.unique(sampled[prompt] / exact[prompt].clamp(min=1e-9)).tolist()) <= {0.0, 2.0}


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="loss_normalization"):
        WeightPolicy(0.5, normalization="mean")
    with pytest.raises(ValueError, match="prompt_sample_rate"):
        WeightPolicy(0.5, prompt_sample_rate=0)
