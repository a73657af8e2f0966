"""The weighted loss against independent references: the model's own loss and brute-force sums."""

from __future__ import annotations

import math

import pytest
import torch

from plw.data.collate import PaddingCollator
from plw.data.encode import encode
from plw.loss import (
    check_normalization,
    check_plw,
    denominator,
    plw_loss,
    signed_labels,
    target_weights,
)
from plw.weight_policy import make_compute_loss_func

RECORDS = [
    {"prompt": "Tell me about the sea. " * 3, "completion": "It is big and blue."},
    {"prompt": "Short?", "completion": "A much longer answer that goes on for a while, with detail."},
    {"prompt": "Which letter? A, B, C or D.", "completion": "C"},
]


def brute_force(model, rows, plw):
    """Per-row forwards and Python loops over positions: sum(w * nll) / sum(w)."""
    num = den = 0.0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for t in range(1, ids.shape[1]):
            w = plw * row["prompt_mask"][t] + row["completion_mask"][t]
            num += w * -logp[t - 1, row["input_ids"][t]].item()
            den += w
    return num / den


@pytest.fixture
def rows(tokenizer):
    return [encode(tokenizer, r) for r in RECORDS]


def test_plw_one_equals_model_loss_on_unpadded_batch(tiny_model, rows):
    row = rows[0]
    batch = PaddingCollator()([row])
    with torch.no_grad():
        out = tiny_model(input_ids=batch["input_ids"], labels=batch["input_ids"])
    ours = plw_loss(out.logits, batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], 1.0)
    torch.testing.assert_close(ours, out.loss, rtol=1e-5, atol=0)


@pytest.mark.parametrize("plw", [0.0, 0.1, 0.37, 1.0])
def test_padded_batch_equals_brute_force(tiny_model, rows, plw):
    batch = PaddingCollator(pad_token_id=0)(rows)
    with torch.no_grad():
        logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours = plw_loss(logits, batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], plw).item()
    assert ours == pytest.approx(brute_force(tiny_model, rows, plw), rel=1e-5)


def test_plw_zero_is_completion_only_mean(tiny_model, rows):
    # Independent of our weights: F.cross_entropy with the prompt labelled -100.
    batch = PaddingCollator()([rows[1]])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = tiny_model(input_ids=batch["input_ids"], labels=labels)
    ours = plw_loss(out.logits, batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], 0.0)
    torch.testing.assert_close(ours, out.loss, rtol=1e-5, atol=0)


def test_row_start_is_never_a_target():
    pm = torch.tensor([[1, 1, 0, 1, 0]])
    cm = torch.tensor([[0, 0, 1, 0, 1]])
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    w = target_weights(pm, cm, 0.5, pos)
    assert w.tolist() == [[0.5, 1.0, 0.0, 1.0]]


@pytest.mark.parametrize("plw", [0.0, 0.25, 1.0])
def test_compute_loss_func_for_stock_trainer(tiny_model, rows, plw):
    batch = PaddingCollator()(rows)
    labels = signed_labels(batch["input_ids"], batch["prompt_mask"], batch["completion_mask"])
    with torch.no_grad():
        out = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = make_compute_loss_func(plw)(out, labels)
    assert loss.item() == pytest.approx(brute_force(tiny_model, rows, plw), rel=1e-5)
    # With the Trainer's count of labels for a single micro-batch, the result is unchanged.
    count = (labels[:, 1:] != -100).sum()
    assert make_compute_loss_func(plw)(out, labels, count).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.5", None, True])
def test_plw_must_be_a_number_in_unit_interval(bad):
    with pytest.raises(ValueError, match="prompt_loss_weight"):
        check_plw(bad)


@pytest.mark.parametrize("plw", [1.0, 0.25])
def test_compute_loss_func_divides_by_the_step_count_across_micro_batches(tiny_model, rows, plw):
    # A gradient-accumulation step of two micro-batches of different sizes, as the stock Trainer runs it: each
    # micro-batch's loss is divided by the step's count of labels (num_items_in_batch) and the losses are summed.
    micro = [[rows[0]], [rows[1], rows[2]]]
    labels, outs = [], []
    for part in micro:
        batch = PaddingCollator()(part)
        labels.append(signed_labels(batch["input_ids"], batch["prompt_mask"], batch["completion_mask"]))
        with torch.no_grad():
            outs.append(tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
    counts = [int((lab[:, 1:] != -100).sum()) for lab in labels]
    step_count = torch.tensor(sum(counts))
    loss = sum(make_compute_loss_func(plw)(o, lab, step_count).item() for o, lab in zip(outs, labels, strict=True))
    # Reference without plw code: each micro-batch's brute-force weighted mean, in proportion to its label count
    # (the documented combination; at plw=1 it is the ordinary mean NLL over every target of the step).
    want = sum(brute_force(tiny_model, part, plw) * n for part, n in zip(micro, counts, strict=True)) / sum(counts)
    assert loss == pytest.approx(want, rel=1e-5)
    if plw == 1.0:
        assert loss == pytest.approx(brute_force(tiny_model, rows, 1.0), rel=1e-5)


def test_plw_loss_skips_row_starts_and_takes_the_step_normaliser():
    # Hand-made logits: two packed rows [a b | c d]; the target c (a row start) must not count.
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    ids = torch.tensor([[1, 2, 3, 4]])
    pm, cm = torch.tensor([[1, 0, 1, 0]]), torch.tensor([[0, 1, 0, 1]])
    pos = torch.tensor([[0, 1, 0, 1]])
    logp = torch.log_softmax(logits[0].double(), -1)
    nll_b, nll_d = -logp[0, 2].item(), -logp[2, 4].item()  # targets b and d, both completion (weight 1)
    assert plw_loss(logits, ids, pm, cm, 0.5, position_ids=pos).item() == pytest.approx((nll_b + nll_d) / 2, rel=1e-6)
    # A step-level normaliser replaces this batch's sum of weights.
    assert plw_loss(logits, ids, pm, cm, 0.5, normalizer=8.0, position_ids=pos).item() == pytest.approx(
        (nll_b + nll_d) / 8, rel=1e-6
    )
    assert plw_loss(logits, ids, pm, cm, 0.5, normalizer=torch.tensor(8.0), position_ids=pos).dtype == torch.float32
    # The trainer sums a step's weights in float64; the loss stays float32 (and keeps its value) all the same.
    step_total = torch.tensor(8.0, dtype=torch.float64)
    loss = plw_loss(logits, ids, pm, cm, 0.5, normalizer=step_total, position_ids=pos)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx((nll_b + nll_d) / 8, rel=1e-6)


def test_compute_loss_func_reads_tuple_outputs_and_token_id_zero():
    # Token id 0 is a real token: as a completion target it keeps its label 0 and must count with weight 1.
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 6)
    ids = torch.tensor([[3, 5, 0, 2]])
    pm, cm = torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 1]])
    labels = signed_labels(ids, pm, cm)
    want = plw_loss(logits, ids, pm, cm, 0.3).item()
    loss_func = make_compute_loss_func(0.3)
    assert loss_func((logits, "other outputs"), labels).item() == pytest.approx(want, rel=1e-6)
    assert loss_func({"logits": logits}, labels).item() == pytest.approx(want, rel=1e-6)


def test_denominator_is_the_sum_of_weights_or_the_count_of_positive_ones():
    # Weights below 1, above 1 and exactly 0 (ignored prompt tokens, padding): written out by hand.
    w = torch.tensor([[0.5, 0.0, 2.0, 1.0], [0.0, 0.25, 0.0, 0.1]])
    assert float(denominator(w)) == pytest.approx(0.5 + 2.0 + 1.0 + 0.25 + 0.1)
    assert float(denominator(w, "weight")) == pytest.approx(3.85)
    assert float(denominator(w, "tokens")) == 5.0  # the zeros do not count, the small weights do


def test_compute_loss_func_on_a_micro_batch_with_only_prompt_targets():
    # A micro-batch whose completion was cut off: three prompt targets at plw 0.1 weigh 0.3 in all, less than 1.
    # The weighted mean is then the plain mean NLL of those targets (equal weights cancel); at plw 0 it is 0, not NaN.
    torch.manual_seed(2)
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[4, 1, 6, 2, 0]])
    pm, cm = torch.tensor([[1, 1, 1, 1, 0]]), torch.tensor([[0, 0, 0, 0, 0]])
    labels = signed_labels(ids, pm, cm)
    logp = torch.log_softmax(logits[0].double(), -1)
    mean_nll = sum(-logp[t - 1, ids[0, t]].item() for t in (1, 2, 3)) / 3
    assert make_compute_loss_func(0.1)({"logits": logits}, labels).item() == pytest.approx(mean_nll, rel=1e-6)
    assert make_compute_loss_func(0.0)({"logits": logits}, labels).item() == 0.0


def test_bad_loss_options_are_one_line_errors_that_name_the_option():
    # make_compute_loss_func is the entry point for stock-Trainer users; check_normalization checks the config key.
    with pytest.raises(ValueError) as err:
        make_compute_loss_func(1.5)
    assert str(err.value) == "prompt_loss_weight must be in [0, 1], got 1.5"
    assert check_normalization("tokens") == "tokens"
    with pytest.raises(ValueError) as err:
        check_normalization("mean")
    assert str(err.value) == "loss_normalization must be one of weight, tokens, got 'mean'"


def test_target_weights_equal_the_documented_formula_written_as_loops():
    # w_t = (plw * role_weight_t * prompt_t + completion_weight * completion_t) * data_weight_t for each target
    # t >= 1, and 0 where a packed row starts (position 0). Per-token inputs in float64: the weights are float32.
    gen = torch.Generator().manual_seed(0)
    pm = torch.tensor([[1, 1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0, 0]])
    cm = torch.tensor([[0, 0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 1, 1, 0]])
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 4, 5, 6]])  # row 0 packs two rows
    role = torch.rand(2, 7, generator=gen, dtype=torch.float64)
    data = 3 * torch.rand(2, 7, generator=gen, dtype=torch.float64)
    plw_value, cw = 0.3, 0.6

    def loops(role_weight, data_weight, positions):
        return [
            [
                (plw_value * role_weight[b][t] * int(pm[b, t]) + cw * int(cm[b, t]))
                * data_weight[b][t]
                * (positions is None or int(positions[b, t]) != 0)
                for t in range(1, 7)
            ]
            for b in range(2)
        ]

    ones = [[1.0] * 7] * 2
    cases = [
        (plw_value * role, data, pos, loops(role.tolist(), data.tolist(), pos)),
        (plw_value, data, None, loops(ones, data.tolist(), None)),
        (plw_value, None, pos, loops(ones, ones, pos)),
    ]
    for plw_arg, data_weight, positions, want in cases:
        got = target_weights(pm, cm, plw_arg, positions, completion_weight=cw, data_weight=data_weight)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))
