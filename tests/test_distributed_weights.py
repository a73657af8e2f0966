"""Two data-parallel CPU processes with a completion weight, data weights and ``loss_normalization: tokens``: the
same optimizer update and the same ``eval_weighted_loss`` as one process and as brute force.

Reuses the set-up of ``test_distributed.py`` (rank 0 gets two long rows, rank 1 two short ones); the denominator is
the count of targets with weight > 0 over both ranks, which a per-rank normaliser would get badly wrong.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.test_distributed import (
    PER_DEVICE_BATCH,
    _assert_tensors_close,
    _rel_diff,
    launch_two_processes,
    make_job,
    worker,
)

PLW, CW = 0.3, 0.7
TRAIN_WEIGHTS = [1.0, 0.5, 3.0, 0.0]  # row 3 weighs 0: it adds nothing, not even to the token count


def with_data_weights(rows: list[dict], record_weights: list[float]) -> list[dict]:
    out = []
    for row, rw in zip(rows, record_weights, strict=True):
        n = len(row["input_ids"])
        out.append({**row, "data_weight": [rw * (2.0 if t >= n // 2 else 1.0) for t in range(n)]})
    return out


def weights_of(row: dict) -> torch.Tensor:
    pm = torch.tensor(row["prompt_mask"][1:]).float()
    cm = torch.tensor(row["completion_mask"][1:]).float()
    return (PLW * pm + CW * cm) * torch.tensor(row["data_weight"][1:])


@pytest.fixture(scope="module")
def weighted_runs(tokenizer, tmp_path_factory):
    job = make_job(tokenizer)
    job["plw"] = PLW
    job["train_rows"] = with_data_weights(job["train_rows"], TRAIN_WEIGHTS)
    job["eval_rows"] = with_data_weights(job["eval_rows"], [0.5, 1.0, 2.0, 0.0, 1.5])
    job["trainer_kwargs"] = {"completion_loss_weight": CW, "loss_normalization": "tokens"}
    base = tmp_path_factory.mktemp("dist_weights")
    reports = launch_two_processes(job, base / "two")
    one_dir = base / "one"
    one_dir.mkdir()
    one = worker.run(job, one_dir, per_device_batch=2 * PER_DEVICE_BATCH)
    return {
        "job": job,
        "reports": reports,
        "two": torch.load(base / "two" / "tensors.pt"),
        "one": torch.load(one_dir / "tensors.pt"),
        "one_report": one,
    }


def brute_force(job: dict) -> tuple[dict, dict]:
    """Gradient of sum(w * nll) / count(w > 0) over the 4 rows, and what per-rank normalisers would give."""
    model = worker.build_model(job["model"], job["seed"])
    parts = []
    for rows in (job["train_rows"][:2], job["train_rows"][2:]):
        s, n = 0.0, 0
        for r in rows:
            ids = torch.tensor(r["input_ids"])
            nll = F.cross_entropy(model(ids[None]).logits[0, :-1].float(), ids[1:], reduction="none")
            w = weights_of(r)
            s = s + (w * nll).sum()
            n += int((w > 0).sum())
        parts.append((s, n))
    params = dict(model.named_parameters())
    exact = sum(s for s, _ in parts) / sum(n for _, n in parts)
    grads = torch.autograd.grad(exact, list(params.values()), retain_graph=True, allow_unused=True)
    naive = torch.autograd.grad(sum(s / n for s, n in parts) / 2, list(params.values()), allow_unused=True)

    def named(gs):
        return {k: g if g is not None else torch.zeros_like(p) for (k, p), g in zip(params.items(), gs, strict=True)}

    return named(grads), named(naive)


@torch.no_grad()
def brute_force_eval_weighted_loss(job: dict) -> float:
    model = worker.build_model(job["model"], job["seed"])
    num, count = 0.0, 0
    for r in job["eval_rows"]:
        ids = torch.tensor(r["input_ids"])
        nll = F.cross_entropy(model(ids[None]).logits[0, :-1].float(), ids[1:], reduction="none")
        w = weights_of(r)
        num += float((w * nll).sum())
        count += int((w > 0).sum())
    return num / count


def test_two_processes_equal_brute_force_with_tokens_normalization(weighted_runs):
    job = weighted_runs["job"]
    assert [r["train_rows_seen"] for r in weighted_runs["reports"]] == [[[0, 1]], [[2, 3]]]
    ref, naive = brute_force(job)
    assert _rel_diff(naive, ref) > 0.05  # a per-rank normaliser would be far off
    _assert_tensors_close(weighted_runs["one"]["grads"], ref, 1e-5, "1-process gradient")
    _assert_tensors_close(weighted_runs["two"]["grads"], ref, 1e-5, "2-process gradient")


def test_eval_weighted_loss_two_processes(weighted_runs):
    want = brute_force_eval_weighted_loss(weighted_runs["job"])
    assert weighted_runs["one_report"]["eval"]["eval_weighted_loss"] == pytest.approx(want, rel=1e-5)
    for report in weighted_runs["reports"]:
        assert report["eval"]["eval_weighted_loss"] == pytest.approx(want, rel=1e-5)
