"""Prompt subsampling: a pure, packing-independent draw; an unbiased estimate; q = 1 is the exact path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plw import chunked_loss
from plw.data.collate import PaddingCollator
from plw.data.encode import encode
from plw.data.packing import PackedCollator, PackedDataset
from plw.loss import target_weights, token_nll
from plw.subsample import subsample_prompt, token_positions, uniforms, with_row_index
from tests.conftest import make_tiny_model
from tests.test_weighted_loss import RECORDS, sgd_update


@pytest.fixture
def rows(tokenizer):
    return with_row_index([encode(tokenizer, r) for r in RECORDS])


def kept(batch: dict, rate: float, seed: int, step: int) -> set[tuple[int, int]]:
    """(row, position) of every prompt target the draw keeps in a collated batch."""
    w = target_weights(batch["prompt_mask"], batch["completion_mask"], 1.0, batch.get("position_ids"))
    positions = token_positions(batch["input_ids"], batch.get("position_ids"))
    sub = subsample_prompt(w, batch["prompt_mask"], batch["row_index"], positions, rate, seed, step)
    is_prompt = (batch["prompt_mask"][:, 1:] == 1) & (w > 0)
    b, t = torch.nonzero(is_prompt & (sub > 0), as_tuple=True)
    return {(int(batch["row_index"][i, j + 1]), int(positions[i, j + 1])) for i, j in zip(b, t, strict=True)}


def test_draw_is_a_pure_function_of_seed_step_row_position():
    r = torch.arange(50).repeat_interleave(40)
    p = torch.arange(40).repeat(50)
    a = uniforms(7, 3, r, p)
    assert torch.equal(a, uniforms(7, 3, r, p))
    assert not torch.equal(a, uniforms(7, 4, r, p)) and not torch.equal(a, uniforms(8, 3, r, p))
    assert 0 <= float(a.min()) and float(a.max()) < 1
    assert abs(float(a.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / a.numel())
    # one element does not depend on its neighbours in the batch
    assert float(uniforms(7, 3, r[5:6], p[5:6])) == float(a[5])


def test_packing_does_not_change_the_draw(rows):
    padded = PaddingCollator()(rows)
    packed = PackedCollator(one_row_per_bin=False)(list(PackedDataset(rows, max_length=256, seed=1)))
    for step in range(3):
        want = kept(padded, 0.3, seed=11, step=step)
        assert want and kept(packed, 0.3, seed=11, step=step) == want
    assert kept(padded, 0.3, 11, 0) != kept(padded, 0.3, 11, 1)


def test_subsampled_loss_is_unbiased(tokenizer, rows):
    batch = PaddingCollator()(rows)
    model = make_tiny_model(len(tokenizer), seed=3)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll = token_nll(logits, batch["input_ids"]).double()
    w = target_weights(batch["prompt_mask"], batch["completion_mask"], 0.4).double()
    exact = float((w * nll).sum() / w.sum())
    positions = token_positions(batch["input_ids"], None)
    draws = torch.tensor(
        [
            float((subsample_prompt(w, batch["prompt_mask"], batch["row_index"], positions, 0.25, s, 0) * nll).sum())
            for s in range(600)
        ]
    ) / float(w.sum())
    se = float(draws.std()) / math.sqrt(len(draws))
    assert se > 0 and abs(float(draws.mean()) - exact) < 4 * se, (float(draws.mean()), exact, se)
    # the test can tell: kept prompt targets weighted w instead of w / q would miss by (1 - q) * the prompt part
    prompt_part = float((w * nll)[batch["prompt_mask"][:, 1:] == 1].sum() / w.sum())
    assert (1 - 0.25) * prompt_part > 20 * se


def test_rate_one_is_the_exact_path_bit_for_bit(tokenizer, rows, tmp_path):
    exact = sgd_update(tokenizer, rows, tmp_path / "a", batch=2, accumulation=2, prompt_loss_weight=0.3)
    q1 = sgd_update(
        tokenizer, rows, tmp_path / "b", batch=2, accumulation=2, prompt_loss_weight=0.3, prompt_sample_rate=1.0
    )
    assert all(torch.equal(exact[n], q1[n]) for n in exact)


def test_trainer_step_uses_the_draw_and_projects_only_kept_targets(tokenizer, rows, tmp_path, monkeypatch):
    """One SGD step at q = 0.5 equals the brute-force gradient of the documented estimate: prompt targets kept
    where uniforms(seed, step 0, row, position) < q, weight plw / q, over the exact D of the step."""
    projected = []
    real = chunked_loss.linear_weighted_nll

    def counting(hidden, *args, **kwargs):
        projected.append(hidden.shape[0])
        return real(hidden, *args, **kwargs)

    monkeypatch.setattr(chunked_loss, "linear_weighted_nll", counting)
    plw_value, q, seed = 0.3, 0.5, 0
    got = sgd_update(
        tokenizer, rows, tmp_path, batch=4, accumulation=1, prompt_loss_weight=plw_value, prompt_sample_rate=q
    )
    model = make_tiny_model(len(tokenizer), seed=1)
    d = sum(plw_value * sum(r["prompt_mask"][1:]) + sum(r["completion_mask"][1:]) for r in rows)
    scored = 0
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        u = uniforms(seed, 0, torch.full((n,), i), torch.arange(n))
        w = []
        for t in range(1, n):
            if row["completion_mask"][t]:
                w.append(1.0)
            else:
                w.append(plw_value / q if u[t] < q else 0.0)
        w = torch.tensor(w)
        scored += int((w > 0).sum())
        ids = torch.tensor([row["input_ids"]])
        nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        ((w * nll).sum() / d).backward()
    for name, p in model.named_parameters():
        atol = 1e-4 * float(p.grad.abs().max()) + 1e-9
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=atol, msg=name)
    assert projected == [scored]
    total = sum(len(r["input_ids"]) - 1 for r in rows)
    assert scored < 0.8 * total  # about half of the prompt targets were never projected
