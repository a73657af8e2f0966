"""StreamingMetrics bookkeeping that the brute-force comparisons do not reach: process reduction, empty segments."""

from __future__ import annotations

import pytest
import torch

from plw.metrics import StreamingMetrics


def one_batch():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4]])
    return logits, ids, torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 1]])


def test_reduce_sums_the_totals_of_all_processes():
    logits, ids, pm, cm = one_batch()
    m = StreamingMetrics(0.5)
    m.update(logits, ids, pm, cm)
    alone = m.compute()
    m.reduce(lambda t: 3 * t)  # three processes with the same batch
    tripled = m.compute()
    assert tripled["completion_tokens"] == 3 * alone["completion_tokens"] == 6
    assert tripled["prompt_tokens"] == 3 and tripled["rows"] == 3
    assert tripled["completion_loss"] == pytest.approx(alone["completion_loss"])
    assert all(v.dtype == torch.float64 for v in m.sums.values())


def test_a_segment_without_tokens_is_left_out_and_one_token_is_enough():
    logits, ids, _, _ = one_batch()
    m = StreamingMetrics(0.5)
    m.update(logits, ids, torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))
    out = m.compute()
    assert "prompt_loss" not in out and out["prompt_tokens"] == 0
    want = -torch.log_softmax(logits[0, 2].double(), -1)[4].item()
    assert out["completion_loss"] == pytest.approx(want, rel=1e-6)
    assert out["weighted_loss"] == pytest.approx(want, rel=1e-6)
    assert StreamingMetrics(0.5).compute() == {}


# ---- every metric against per-position Python sums, with predictions that are often right ------------------------
# A tiny untrained model is almost never right, so accuracy counters that add the wrong way (or not at all) would pass
# a brute-force comparison there; here the logits are random with the target planted as the arg-max at chosen
# positions, so every counter is exercised with non-zero counts.

CHOICES = [3, 5, 7, 9]


def planted_batch(seed=0, batch=5, length=12, vocab=16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    prompt = torch.zeros(batch, length, dtype=torch.long)
    completion = torch.zeros(batch, length, dtype=torch.long)
    for b in range(batch):
        p_len = 3 + b  # prompts of 3..7 tokens, completions of 1..4, then padding
        c_len = 1 + b % 4
        prompt[b, :p_len] = 1
        completion[b, p_len : p_len + c_len] = 1
        ids[b, p_len] = CHOICES[b % 4] if b != 4 else 0  # row 4's answer is not a choice
    logits = torch.randn(batch, length, vocab, generator=g)
    right = torch.rand(batch, length, generator=g) < 0.5
    right[1] = True  # row 1 entirely right: an exact match
    for b in range(batch):
        for t in range(1, length):
            if right[b, t]:
                logits[b, t - 1, ids[b, t]] += 8.0
    return logits, ids, prompt, completion


def brute_force(logits, ids, prompt, completion, plw, completion_weight=1.0):
    s = dict.fromkeys(("pn", "pc", "cn", "cc", "wn", "w", "wt", "cok", "rows", "exact", "ans", "acc", "chacc"), 0.0)
    for b in range(ids.shape[0]):
        logp = torch.log_softmax(logits[b].double(), -1)
        all_right = None
        for t in range(1, ids.shape[1]):
            nll = -logp[t - 1, ids[b, t]].item()
            right = int(logits[b, t - 1].argmax()) == int(ids[b, t])
            if prompt[b, t]:
                s["pn"], s["pc"], s["wn"], s["w"] = s["pn"] + nll, s["pc"] + 1, s["wn"] + plw * nll, s["w"] + plw
                s["wt"] += plw > 0
            elif completion[b, t]:
                s["cn"], s["cc"], s["cok"] = s["cn"] + nll, s["cc"] + 1, s["cok"] + right
                s["wn"], s["w"], s["wt"] = s["wn"] + completion_weight * nll, s["w"] + completion_weight, s["wt"] + 1
                if all_right is None:  # the answer position
                    s["rows"] += 1
                    gold = int(ids[b, t])
                    if gold in CHOICES:
                        s["ans"] += 1
                        s["acc"] += right
                        s["chacc"] += max(CHOICES, key=lambda c: logits[b, t - 1, c].item()) == gold
                    all_right = right
                else:
                    all_right = all_right and right
        s["exact"] += bool(all_right)
    return s


@pytest.mark.parametrize(("plw", "chunk_tokens", "normalization"), [(0.3, 2048, "weight"), (0.0, 3, "tokens")])
def test_every_metric_equals_per_position_sums(plw, chunk_tokens, normalization):
    logits, ids, prompt, completion = planted_batch()
    m = StreamingMetrics(plw, CHOICES, chunk_tokens=chunk_tokens, completion_weight=2.0, normalization=normalization)
    m.update(logits[:2], ids[:2], prompt[:2], completion[:2])  # two batches: the sums accumulate
    m.update(logits[2:], ids[2:], prompt[2:], completion[2:])
    got = m.compute()
    s = brute_force(logits, ids, prompt, completion, plw, completion_weight=2.0)
    assert 0 < s["cok"] < s["cc"] and 0 < s["exact"] < s["rows"] and 0 < s["acc"] < s["ans"] < s["rows"]
    want = {
        "prompt_loss": s["pn"] / s["pc"],
        "completion_loss": s["cn"] / s["cc"],
        "full_loss": (s["pn"] + s["cn"]) / (s["pc"] + s["cc"]),
        "weighted_loss": s["wn"] / (s["wt"] if normalization == "tokens" else s["w"]),
        "completion_token_accuracy": s["cok"] / s["cc"],
        "exact_match": s["exact"] / s["rows"],
        "accuracy": s["acc"] / s["ans"],
        "choice_accuracy": s["chacc"] / s["ans"],
        "answer_rows": s["ans"],
        "prompt_tokens": s["pc"],
        "completion_tokens": s["cc"],
        "rows": s["rows"],
    }
    assert got == pytest.approx(want, rel=1e-6)


def test_packed_rows_are_scored_like_the_same_rows_padded():
    # Rows 0 and 2 laid end to end with position_ids restarting: the first token of row 2 is no target.
    logits, ids, prompt, completion = planted_batch()
    n0, n2 = int((prompt[0] + completion[0]).sum()), int((prompt[2] + completion[2]).sum())
    flat = [torch.cat([x[0, :n0], x[2, :n2]])[None] for x in (logits, ids, prompt, completion)]
    positions = torch.cat([torch.arange(n0), torch.arange(n2)])[None]
    packed = StreamingMetrics(0.3, CHOICES)
    packed.update(*flat, position_ids=positions)
    padded = StreamingMetrics(0.3, CHOICES)
    padded.update(logits[[0, 2]], ids[[0, 2]], prompt[[0, 2]], completion[[0, 2]])
    assert packed.compute() == pytest.approx(padded.compute(), rel=1e-6)


def _evaluate_a_shard(rank, world, init_file, out_dir):
    """One process of a two-process evaluation: rows 2*rank and 2*rank+1, then the cross-process reduction."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, ids, prompt, completion = planted_batch()
        row_ids = torch.arange(ids.shape[0])[:, None].expand_as(ids) + 100
        mine = slice(2 * rank, 2 * rank + 2)
        m = StreamingMetrics(0.3, CHOICES)
        m.update(logits[mine], ids[mine], prompt[mine], completion[mine], row_ids=row_ids[mine])

        def all_reduce(t):
            torch.distributed.all_reduce(t)
            return t

        m.reduce(all_reduce)
        torch.save({"outcomes": m.row_outcomes, "metrics": m.compute()}, f"{out_dir}/{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_gather_every_row_outcome_and_sum_the_metrics(tmp_path):
    torch.multiprocessing.spawn(_evaluate_a_shard, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    logits, ids, prompt, completion = planted_batch()
    one = StreamingMetrics(0.3, CHOICES)
    one.update(logits[:4], ids[:4], prompt[:4], completion[:4], row_ids=torch.arange(4)[:, None].expand(4, 12) + 100)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got["outcomes"] == one.row_outcomes and got["outcomes"]["id"] == [100, 101, 102, 103]
        assert got["metrics"] == pytest.approx(one.compute(), rel=1e-6)  # float32 sums per batch
