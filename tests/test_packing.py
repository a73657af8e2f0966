"""Sample packing: bins, the padding-free collator, isolation of packed rows, and packed == one-row-at-a-time.

The references are the rows run one at a time through the model with plain forwards (no plw code), or tensors
written out by hand; never the packer's own output.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

import plw
from plw.data.encode import encode
from plw.data.packing import (
    PackedCollator,
    PackedDataset,
    PackingNotSupportedError,
    RowTooLongError,
    check_packing_isolation,
    pack_bins,
    padding_share,
)
from plw.data.synthetic import make_synthetic_mcqa
from tests.conftest import make_tiny_model, save_tiny_model

# ---- bins ----------------------------------------------------------------------------------------------------------


def test_best_fit_decreasing_by_hand():
    # Longest first, each into the fullest bin with room: 6 -> new; 4 -> new (2 free in the first);
    # 3 -> second (4 free, leaves 1); 2 -> first (2 free, leaves 0); 1 -> second (1 free).
    assert pack_bins([6, 3, 4, 2, 1], max_length=8, improve_steps=0) == [[0, 3], [2, 1, 4]]


def check_bins(bins, lengths, max_length):
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every row exactly once
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)
    assert all(b for b in bins)


def test_bins_are_deterministic_for_a_seed_and_valid():
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(300)]
    a = pack_bins(lengths, 64, seed=1, improve_steps=3000)
    assert a == pack_bins(lengths, 64, seed=1, improve_steps=3000)
    check_bins(a, lengths, 64)
    # Another seed breaks ties between equal lengths differently (same multiset of lengths per bin is allowed).
    b = pack_bins(lengths, 64, seed=2, improve_steps=3000)
    check_bins(b, lengths, 64)
    assert a != b


def test_local_search_reaches_the_optimum_where_best_fit_decreasing_needs_11_9_of_it():
    # The classic worst case of first/best-fit decreasing (Johnson 1973), scaled to bins of 1000 tokens:
    # 90 bins hold everything exactly (60 x {504, 254, 242} and 30 x {258, 258, 242, 242}); BFD opens 110.
    lengths = [504] * 60 + [258] * 60 + [254] * 60 + [242] * 120
    random.Random(0).shuffle(lengths)
    assert len(pack_bins(lengths, 1000, improve_steps=0)) == 110
    better = pack_bins(lengths, 1000, improve_steps=20_000)
    check_bins(better, lengths, 1000)
    assert len(better) == 90


def test_a_row_longer_than_max_length_is_refused_not_cut():
    with pytest.raises(RowTooLongError, match="row 1 has 9 tokens > max_length 8"):
        pack_bins([3, 9, 2], max_length=8)


def test_padding_share_by_hand():
    # Batches of 2 in data order: [2, 4] -> 8 slots, [1, 3] -> 6 slots; 10 tokens / 14 slots.
    assert padding_share([2, 4, 1, 3], batch_size=2) == pytest.approx(10 / 14)
    # Sorted: [1, 2] -> 4 slots, [3, 4] -> 8 slots; 10 / 12.
    assert padding_share([2, 4, 1, 3], batch_size=2, sort=True) == pytest.approx(10 / 12)


# ---- the padding-free layout, by hand -------------------------------------------------------------------------------

ROW_A = {
    "input_ids": [11, 12, 13, 14],
    "attention_mask": [1] * 4,
    "prompt_mask": [1, 1, 1, 0],
    "completion_mask": [0, 0, 0, 1],
}
ROW_B = {"input_ids": [21, 22, 23], "attention_mask": [1] * 3, "prompt_mask": [1, 0, 0], "completion_mask": [0, 1, 1]}


def test_two_row_pack_by_hand():
    ds = PackedDataset([ROW_A, ROW_B], max_length=8, improve_steps=0)
    assert len(ds) == 1
    batch = PackedCollator()([ds[0]])
    expected = {
        "input_ids": [[11, 12, 13, 14, 21, 22, 23]],
        "position_ids": [[0, 1, 2, 3, 0, 1, 2]],
        "prompt_mask": [[1, 1, 1, 0, 1, 0, 0]],
        "completion_mask": [[0, 0, 0, 1, 0, 1, 1]],
        "bin_index": [[0, 0, 0, 0, 0, 0, 0]],
    }
    assert set(batch) == set(expected)  # no attention_mask: transformers then masks by position_ids
    for key, value in expected.items():
        assert batch[key].tolist() == value, key
    # Target weights at plw=0.5: the first token of B (position 4) is never a target.
    w = plw.target_weights(batch["prompt_mask"], batch["completion_mask"], 0.5, batch["position_ids"])
    assert w.tolist() == [[0.5, 0.5, 1.0, 0.0, 1.0, 1.0]]


def test_collator_flattens_bins_and_plain_rows():
    batch = PackedCollator()([ROW_B, ROW_A])  # plain rows: each one segment starting at position 0
    assert batch["input_ids"].tolist() == [[21, 22, 23, 11, 12, 13, 14]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert batch["bin_index"].tolist() == [[0, 0, 0, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="start at 0"):
        PackedCollator()([{**ROW_A, "position_ids": [1, 2, 3, 4]}])


# ---- packed == one row at a time --------------------------------------------------------------------------------------


def varied_rows(tokenizer):
    records = [
        {"prompt": "Describe the weather. " * 6, "completion": "Sunny."},
        {"prompt": "Hi", "completion": "Hello there! " * 5},
        {"prompt": "List three fruits.", "completion": "Apple, pear, plum."},
        {"prompt": "Long question " * 8, "completion": "A long answer " * 4},
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": "Name a colour.", "completion": "Blue, like the sky on a clear day."},
    ]
    return [encode(tokenizer, r) for r in records]


def reference_loss_and_grads(model, rows, plw_value):
    """sum over rows of sum(w * nll), over the total weight, each row its own plain forward."""
    model.zero_grad()
    total_w = sum(plw_value * sum(r["prompt_mask"][1:]) + sum(r["completion_mask"][1:]) for r in rows)
    loss = 0.0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        w = plw_value * torch.tensor(row["prompt_mask"][1:]).float() + torch.tensor(row["completion_mask"][1:]).float()
        nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        part = (w * nll).sum() / total_w
        part.backward()
        loss += part.item()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return loss, grads


def packed_trainer(model, rows, tmp_path, plw_value=1.0, **kwargs):
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True, seed=0, **kwargs.pop("args", {})
    )
    return plw.PLWTrainer(model=model, args=args, prompt_loss_weight=plw_value, packing=True, **kwargs)


@pytest.mark.parametrize(
    ("plw_value", "loss_impl"), [(0.0, "chunked"), (0.1, "chunked"), (1.0, "chunked"), (0.1, "plain")]
)
def test_packed_loss_and_gradients_equal_rows_one_by_one(tokenizer, tmp_path, plw_value, loss_impl):
    rows = varied_rows(tokenizer)
    model = make_tiny_model(len(tokenizer), seed=1)
    want_loss, want_grads = reference_loss_and_grads(model, rows, plw_value)
    trainer = packed_trainer(model, rows, tmp_path, plw_value, train_dataset=rows, max_length=100, loss_impl=loss_impl)
    bins = trainer.train_dataset
    assert len(bins) < len(rows) and max(len(b) for b in bins.bins) >= 2  # rows really share bins
    batch = trainer.data_collator([bins[i] for i in range(len(bins))])
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-4)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_packed_training_step_equals_rows_one_by_one(tokenizer, tmp_path):
    """A whole optimizer step of PLWTrainer(packing=True) with 2 bins per micro-batch and accumulation."""
    rows = varied_rows(tokenizer)
    model = make_tiny_model(len(tokenizer), seed=1)
    _, want = reference_loss_and_grads(make_tiny_model(len(tokenizer), seed=1), rows, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step_args = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_steps": 1,
        "learning_rate": 1.0,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "save_strategy": "no",
    }
    trainer = packed_trainer(model, rows, tmp_path, 0.1, train_dataset=rows, max_length=100, args=step_args)
    assert 2 < len(trainer.train_dataset) <= 4  # one step of 2 x 2 bins covers every row exactly once
    trainer.train()
    for name, p in model.named_parameters():
        torch.testing.assert_close(before[name] - p.detach(), want[name], rtol=1e-4, atol=1e-7, msg=name)


def test_changing_row_a_leaves_row_b_losses_unchanged(tokenizer):
    rows = varied_rows(tokenizer)
    a, b = rows[2], rows[0]
    model = make_tiny_model(len(tokenizer), seed=4)
    vocab = len(tokenizer)

    def row_b_nll(a_ids):
        batch = PackedCollator()([{**a, "input_ids": a_ids}, b])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        start = len(a_ids)
        ids = batch["input_ids"][0, start:]
        return F.cross_entropy(logits[0, start:-1], ids[1:], reduction="none")

    changed = [(t * 7919 + 13) % vocab for t in a["input_ids"]]
    assert all(x != y for x, y in zip(changed, a["input_ids"], strict=True))
    alone = F.cross_entropy(
        model(input_ids=torch.tensor([b["input_ids"]])).logits[0, :-1].detach(),
        torch.tensor(b["input_ids"][1:]),
        reduction="none",
    )
    torch.testing.assert_close(row_b_nll(a["input_ids"]), row_b_nll(changed), rtol=0, atol=1e-5)
    torch.testing.assert_close(row_b_nll(a["input_ids"]), alone, rtol=1e-5, atol=1e-5)


def test_packed_and_unpacked_evaluation_give_the_same_metrics(tokenizer, tmp_path):
    records = make_synthetic_mcqa(14, seed=3, people=4, fillers=0)
    records += [{"prompt": f"Say something {i}.", "completion": "Sure, here it is."} for i in range(4)]
    random.Random(0).shuffle(records)
    rows = [encode(tokenizer, r) for r in records]
    model = make_tiny_model(len(tokenizer), seed=2)
    common = {"processing_class": tokenizer, "prompt_loss_weight": 0.2, "answer_choices": ["A", "B", "C", "D"]}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to=[], use_cpu=True, disable_tqdm=True
    )
    unpacked = plw.PLWTrainer(model=model, args=args, eval_dataset=rows, **common).evaluate()
    longest = max(len(r["input_ids"]) for r in rows)
    packed_trainer_ = plw.PLWTrainer(
        model=model, args=args, eval_dataset=rows, packing=True, max_length=2 * longest, **common
    )
    assert len(packed_trainer_.eval_dataset) < len(rows)
    packed = packed_trainer_.evaluate()
    assert packed["eval_rows"] == unpacked["eval_rows"] == len(rows)
    for key, value in unpacked.items():
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
            assert packed[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


# ---- epochs, refusals ----------------------------------------------------------------------------------------------


def bin_order(trainer, epoch):
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)
    return [tuple(batch["input_ids"][0].tolist()) for batch in loader]


def test_bin_order_is_reshuffled_every_epoch_and_seeded(tokenizer, tmp_path):
    rows = [encode(tokenizer, {"prompt": f"Question {i}? " * (1 + i % 5), "completion": "Yes."}) for i in range(40)]
    model = make_tiny_model(len(tokenizer))
    longest = max(len(r["input_ids"]) for r in rows)

    def trainer():
        return packed_trainer(
            model, rows, tmp_path, train_dataset=rows, max_length=2 * longest, args={"per_device_train_batch_size": 1}
        )

    t = trainer()
    first, second = bin_order(t, 0), bin_order(t, 1)
    assert len(first) == len(t.train_dataset) > 5
    assert sorted(first) == sorted(second) and first != second
    assert bin_order(trainer(), 0) == first


def test_packing_needs_max_length_and_its_own_collator(tokenizer, tiny_model, tmp_path):
    rows = varied_rows(tokenizer)
    with pytest.raises(ValueError, match="needs max_length"):
        packed_trainer(tiny_model, rows, tmp_path, train_dataset=rows)
    with pytest.raises(ValueError, match="do not pass data_collator"):
        packed_trainer(
            tiny_model, rows, tmp_path, train_dataset=rows, max_length=512, data_collator=plw.PaddingCollator()
        )
    with pytest.raises(RowTooLongError, match="never cuts rows"):
        packed_trainer(tiny_model, rows, tmp_path, train_dataset=rows, max_length=8)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_isolation_check_passes_for_position_id_masks(tokenizer, impl):
    model = make_tiny_model(len(tokenizer))
    model.config._attn_implementation = impl
    assert check_packing_isolation(model) < 1e-3


def test_isolation_check_refuses_attention_that_ignores_packing(tokenizer, tmp_path):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal_only(module, query, key, value, attention_mask, **kwargs):
        # A kernel that sees no mask (like an unregistered custom attention): plain causal over the whole sequence.
        return sdpa_attention_forward(module, query, key, value, None, **{**kwargs, "is_causal": True})

    AttentionInterface.register("plw_test_causal_only", causal_only)
    model = make_tiny_model(len(tokenizer))
    model.config._attn_implementation = "plw_test_causal_only"
    with pytest.raises(PackingNotSupportedError, match="attn_implementation='plw_test_causal_only' does not isolate"):
        check_packing_isolation(model)
    rows = varied_rows(tokenizer)
    with pytest.raises(PackingNotSupportedError):
        packed_trainer(model, rows, tmp_path, train_dataset=rows, max_length=512)


def test_group_by_length_for_the_padded_alternative(tokenizer, tiny_model, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rows = varied_rows(tokenizer) * 4
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        train_sampling_strategy="group_by_length",
        report_to=[],
        use_cpu=True,
    )
    trainer = plw.PLWTrainer(model=tiny_model, args=args, train_dataset=rows, processing_class=tokenizer)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    batches = list(trainer.get_train_dataloader())
    pad_share = sum(int(b["attention_mask"].sum()) for b in batches) / sum(
        b["attention_mask"].numel() for b in batches
    )
    lengths = [len(r["input_ids"]) for r in rows]
    assert pad_share > padding_share(lengths, 4)  # grouping wastes less than data order
    assert math.isclose(sum(int(b["attention_mask"].sum()) for b in batches), sum(lengths))


# ---- plw train -------------------------------------------------------------------------------------------------------


def test_plw_train_with_packing_logs_the_packing(tmp_path, tokenizer, capsys):
    import json

    import yaml

    from plw.cli import main

    model_dir = tmp_path / "tiny-model"
    save_tiny_model(model_dir, tokenizer)
    records = [
        {"prompt": r["prompt"], "completion": r["completion"]} for r in make_synthetic_mcqa(10, seed=0, people=4)
    ]
    for name, part in (("train", records[:6]), ("valid", records[6:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    config = tmp_path / "config.yaml"
    values = {
        "name": "packed",
        "output_dir": str(tmp_path / "runs"),
        "model": str(model_dir),
        "train_data": str(tmp_path / "train.jsonl"),
        "eval_data": str(tmp_path / "valid.jsonl"),
        "answer_choices": ["A", "B", "C", "D"],
        "max_length": 512,
        "packing": True,
        "max_steps": 2,
        "batch_size": 1,
        "eval_steps": 2,
        "report_to": [],
        "bf16": False,
    }
    config.write_text(yaml.safe_dump(values))
    assert main(["train", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[plw] packing train: 6 rows in" in out and "[plw] packing eval: 4 rows in" in out
    run = tmp_path / "runs" / "packed"
    report = json.loads((run / "data_report.json").read_text())
    assert report["packing"]["train"]["rows"] == 6 and report["packing"]["train"]["bins"] < 6
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and lines[-1]["eval_rows"] == 4


def test_config_refuses_packing_with_group_by_length():
    from plw.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="group_by_length"):
        from_dict({"train_data": "x.jsonl", "packing": True, "group_by_length": True})
    assert from_dict({"train_data": "x.jsonl", "packing": True}).packing is True


def test_group_by_length_reaches_the_training_arguments(tmp_path):
    from plw.config import from_dict
    from plw.runner import training_arguments

    padded = training_arguments(from_dict({"train_data": "x.jsonl", "group_by_length": True}), tmp_path)
    assert padded.train_sampling_strategy == "group_by_length"
    assert training_arguments(from_dict({"train_data": "x.jsonl"}), tmp_path).train_sampling_strategy == "random"


def test_repeated_bins_of_the_last_distributed_eval_batch_carry_no_weight(tokenizer, tiny_model, tmp_path):
    """With several processes accelerate repeats items to even out the last batch; in a packed batch those items
    are bins inside one flat row, so their tokens (found by bin_index) must be masked, not whole rows."""
    from types import SimpleNamespace
    from unittest import mock

    rows = varied_rows(tokenizer)
    trainer = packed_trainer(tiny_model, rows, tmp_path, eval_dataset=rows, max_length=100)
    batch = PackedCollator()([ROW_A, ROW_B, ROW_A])  # three bins on process 1 of 2; 4 real items in the last batch
    state = SimpleNamespace(end_of_dataloader=True, remainder=4)
    fake = SimpleNamespace(gradient_state=state, even_batches=True, process_index=1)
    with mock.patch.object(type(trainer.args), "world_size", new_callable=mock.PropertyMock, return_value=2):
        with mock.patch.object(trainer, "accelerator", fake):
            out = trainer._drop_repeated_rows(batch)
    # Process 1 holds items 3, 4, 5 of the last global batch; only item 3 (its first bin, ROW_A) is real.
    assert out["prompt_mask"].tolist() == [[1, 1, 1, 0] + [0] * 7]
    assert out["completion_mask"].tolist() == [[0, 0, 0, 1] + [0] * 7]
    assert torch.equal(out["input_ids"], batch["input_ids"])


def test_packed_dataset_takes_a_datasets_dataset():
    import datasets

    ds = datasets.Dataset.from_list([ROW_A, ROW_B])
    packed = PackedDataset(ds, max_length=8)
    assert packed[0] == PackedDataset([ROW_A, ROW_B], max_length=8)[0]
    assert packed.stats.as_dict()["rows_per_bin"] == 2.0


def test_one_row_per_bin_layout_gives_the_flat_layout_losses(tokenizer):
    """SDPA/eager get one bin per row (padded); the per-target losses equal those of the flat sequence."""
    rows = varied_rows(tokenizer)
    bins = PackedDataset(rows, max_length=100, seed=0)
    items = [bins[i] for i in range(len(bins))]
    assert len({len(it["input_ids"]) for it in items}) > 1  # bins of different lengths: the rows layout pads
    model = make_tiny_model(len(tokenizer), seed=6)
    losses = []
    for one_row_per_bin in (False, True):
        batch = PackedCollator(one_row_per_bin=one_row_per_bin, pad_token_id=tokenizer.pad_token_id)(items)
        assert batch["input_ids"].shape[0] == (len(items) if one_row_per_bin else 1)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        w = plw.target_weights(batch["prompt_mask"], batch["completion_mask"], 0.3, batch["position_ids"])
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        losses.append(sorted((nll[w > 0] * w[w > 0]).tolist()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)


# ---- rules that mutation testing found unpinned (docs/mutation-testing.md) ------------------------------------------


def johnson_lengths(shuffle_seed):
    """Johnson's worst case for best-fit decreasing, scaled to bins of 1000 tokens: 90 bins exactly, BFD opens 110."""
    lengths = [504] * 60 + [258] * 60 + [254] * 60 + [242] * 120
    random.Random(shuffle_seed).shuffle(lengths)
    return lengths


def test_fullest_subset_matches_brute_force():
    from itertools import combinations

    from plw.data.packing import _fullest_subset

    rng = random.Random(3)
    for _ in range(200):
        sizes = sorted((rng.randint(1, 30) for _ in range(rng.randint(1, 7))), reverse=True)
        capacity = rng.randint(1, 60)
        best = max(sum(c) for r in range(len(sizes) + 1) for c in combinations(sizes, r) if sum(c) <= capacity)
        chosen = _fullest_subset(sizes, capacity)
        assert len(set(chosen)) == len(chosen) and all(0 <= k < len(sizes) for k in chosen)
        assert sum(sizes[k] for k in chosen) == best, (sizes, capacity)


def test_local_search_stops_at_the_lower_bound():
    # Once the bins reach ceil(tokens / max_length) no repack can use fewer, so the search stops and a larger budget
    # changes nothing (a search that went on would keep moving rows to concentrate the free space).
    reached = 0
    for seed in range(12):
        rng = random.Random(seed)
        lengths = [rng.randint(200, 600) for _ in range(60)]
        bins = pack_bins(lengths, 1000, improve_steps=2000)
        if len(bins) == math.ceil(sum(lengths) / 1000):
            reached += 1
            assert pack_bins(lengths, 1000, improve_steps=4000) == bins, seed
    assert reached >= 6  # measured: 7 of the 12 reach it


@pytest.mark.parametrize("shuffle_seed", range(6))
def test_default_search_finds_the_optimum_of_a_small_worst_case(shuffle_seed):
    # Johnson's worst case at a tenth of the size (30 rows): BFD opens 11 bins, 9 hold everything. With only ~10 bins
    # the search often draws one bin three times; it must skip such a draw, not end.
    lengths = [504] * 6 + [258] * 6 + [254] * 6 + [242] * 12
    random.Random(shuffle_seed).shuffle(lengths)
    assert len(pack_bins(lengths, 1000, seed=shuffle_seed, improve_steps=0)) == 11
    assert len(pack_bins(lengths, 1000, seed=shuffle_seed)) == 9


@pytest.mark.parametrize("shuffle_seed", [0, 1, 2])
def test_local_search_closes_most_of_the_gap_within_a_small_budget(shuffle_seed):
    # Measured with the shipped search: 95-97 bins after 300 repacks, 91 after 1000 (of 300 rows; BFD 110, optimum
    # 90). A search that targets arbitrary rather than the emptiest bins, or keeps repacks that do not concentrate
    # the free space, needs 92-108 there.
    lengths = johnson_lengths(shuffle_seed)
    assert len(pack_bins(lengths, 1000, seed=shuffle_seed, improve_steps=300)) <= 100
    assert len(pack_bins(lengths, 1000, seed=shuffle_seed, improve_steps=1000)) <= 91


def test_default_search_reaches_the_lower_bound_on_realistic_lengths():
    # Log-normal row lengths (median ~90 tokens, a long tail cut at max_length), the shape of real prompt/completion
    # data: measured, the shipped search reaches ceil(tokens / max_length) bins on all eight. Opening each repacked
    # bin with its shortest instead of its longest row costs a bin on one of them.
    for seed in range(8):
        rng = random.Random(100 + seed)
        lengths = [max(1, min(512, int(rng.lognormvariate(4.5, 0.8)))) for _ in range(400)]
        bins = pack_bins(lengths, 512, seed=seed)
        check_bins(bins, lengths, 512)
        assert len(bins) == math.ceil(sum(lengths) / 512), seed


def test_default_search_on_random_rows_keeps_every_row_and_never_adds_bins():
    rng = random.Random(0)
    lengths = [rng.randint(100, 700) for _ in range(400)]
    bins = pack_bins(lengths, 1024, seed=0)
    check_bins(bins, lengths, 1024)
    assert len(bins) <= len(pack_bins(lengths, 1024, seed=0, improve_steps=0))


def test_packing_stats_report_by_hand():
    from plw.data.packing import PackingStats

    stats = PackingStats(rows=7, bins=3, tokens=2000, max_length=1024)
    assert stats.as_dict() == {
        "rows": 7,
        "bins": 3,
        "tokens": 2000,
        "max_length": 1024,
        "fill": 0.651042,  # 2000 / 3072
        "rows_per_bin": 2.3333,
        "lower_bound_bins": 2,
    }
    assert stats.summary() == "7 rows in 3 bins of <= 1024 tokens (2.33 rows/bin, bins 65.1% full, lower bound 2 bins)"


def test_padding_share_of_no_rows_is_zero():
    assert padding_share([], batch_size=4) == 0.0


def test_collator_errors_name_the_problem():
    with pytest.raises(ValueError, match="^cannot collate an empty batch$"):
        PackedCollator()([])
    without_mask = {k: v for k, v in ROW_A.items() if k != "completion_mask"}
    with pytest.raises(KeyError, match="missing 'completion_mask'"):
        PackedCollator()([without_mask])
    with pytest.raises(KeyError, match="missing 'completion_mask'"):
        PackedCollator()([ROW_B, without_mask])


def test_collator_dtypes_and_the_padded_layout_by_hand():
    a = {**ROW_A, "data_weight": [2, 2, 2, 2]}  # integer weights still give a float column
    b = {**ROW_B, "data_weight": [1, 1, 1]}
    flat = PackedCollator()([a, b])
    assert flat["data_weight"].dtype == torch.float32 and flat["input_ids"].dtype == torch.long
    rows = PackedCollator(one_row_per_bin=True, pad_token_id=99)([a, b])
    assert rows["input_ids"].tolist() == [[11, 12, 13, 14], [21, 22, 23, 99]]
    assert rows["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]  # padding continues the last row
    assert rows["prompt_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert rows["completion_mask"].tolist() == [[0, 0, 0, 1], [0, 1, 1, 0]]
    assert rows["bin_index"].tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert rows["data_weight"].tolist() == [[2, 2, 2, 2], [1, 1, 1, 0]] and rows["data_weight"].dtype == torch.float32
    # Rows of one length get no (float) padding, so only the collator's dtype makes integer weights float.
    same = PackedCollator(one_row_per_bin=True)([a, a])
    assert same["data_weight"].dtype == torch.float32 and same["data_weight"].tolist() == [[2.0] * 4] * 2


def test_pack_datasets_packs_every_set_with_the_seed():
    from plw.data.packing import pack_datasets

    rows = [{"input_ids": [1] * 3, "prompt_mask": [1, 0, 0], "completion_mask": [0, 1, 1]} for _ in range(12)]
    already = PackedDataset(rows[:2], max_length=8)
    train, evals, stats = pack_datasets(rows, {"a": rows[:4], "b": already, "c": None}, max_length=8, seed=5)
    assert train.bins == PackedDataset(rows, 8, seed=5).bins != PackedDataset(rows, 8, seed=0).bins
    assert evals["b"] is already and evals["c"] is None
    assert evals["a"].bins == PackedDataset(rows[:4], 8, seed=5).bins
    assert set(stats) == {"train", "eval_a", "eval_b"} and stats["train"] is train.stats
    train, single, stats = pack_datasets(None, rows[:1], max_length=3)
    assert train is None and set(stats) == {"eval"} and single.bins == [[0]]
    pack_datasets(None, None, max_length=2)  # the smallest bin that holds a target
    for bad in (1, True, "8", None):
        with pytest.raises(ValueError, match="an integer >= 2"):
            pack_datasets(rows, None, max_length=bad)


def test_total_variation_by_hand():
    from plw.data.packing import _total_variation

    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    q = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    assert _total_variation(p, q) == pytest.approx(1.0)  # per position 0.5 and 1; the largest


class ContextFreeLM(torch.nn.Module):
    """Next-token logits from the current token alone: packing cannot leak anything into it."""

    def __init__(self, vocab=32):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, position_ids=None, use_cache=False):
        return type("Out", (), {"logits": self.embed(input_ids)})()


def test_isolation_check_of_a_model_without_context_is_zero():
    assert check_packing_isolation(ContextFreeLM()) == 0.0


def test_isolation_check_messages_name_the_model_and_the_fix():
    class NoPositions(ContextFreeLM):
        def forward(self, input_ids, use_cache=False):
            return super().forward(input_ids)

    with pytest.raises(
        PackingNotSupportedError, match=r"^NoPositions cannot run packed rows \(.*\); use packing=False"
    ):
        check_packing_isolation(NoPositions())

    class Leaky(ContextFreeLM):
        def forward(self, input_ids, position_ids=None, use_cache=False):
            return type("Out", (), {"logits": self.embed(input_ids).cumsum(1)})()

    with pytest.raises(
        PackingNotSupportedError, match=r"^Leaky with attn_implementation='None' does not isolate"
    ) as err:
        check_packing_isolation(Leaky())
    assert str(err.value).endswith("from position_ids (eager, sdpa, flex_attention, flash_attention_2/3)")


def test_default_improve_steps_by_hand():
    from plw.data.packing import default_improve_steps

    assert default_improve_steps(8, 1) == 160  # 8 rows per bin: still searched, 20 repacks per row
    assert default_improve_steps(9, 1) == 0  # more than 8 per bin: none
    assert default_improve_steps(16, 2) == 320
    assert default_improve_steps(17, 2) == 0
    assert default_improve_steps(10_001, 2_000) == 200_000  # capped


def test_pack_bins_validates_its_arguments_and_defaults_to_seed_0():
    for bad in (0, True, "8", 2.0):
        with pytest.raises(ValueError, match=f"max_length must be a positive integer, got {bad!r}"):
            pack_bins([1], max_length=bad)
    with pytest.raises(ValueError, match="row 1 is empty"):
        pack_bins([2, 0], max_length=8)
    ties = [3] * 10 + [5] * 10  # equal lengths: the seed orders them
    assert pack_bins(ties, 8) == pack_bins(ties, 8, seed=0) != pack_bins(ties, 8, seed=1)


def test_packed_dataset_passes_its_settings_on():
    lengths = johnson_lengths(0)
    rows = [{"input_ids": [7] * n, "prompt_mask": [1] * n, "completion_mask": [0] * n} for n in lengths]
    plain = PackedDataset(rows, 1000, improve_steps=0)
    assert plain.max_length == 1000 and len(plain) == 110
    assert plain.bins == pack_bins(lengths, 1000, seed=0, improve_steps=0)
    assert PackedDataset(rows, 1000, seed=3, improve_steps=0).bins == pack_bins(lengths, 1000, seed=3, improve_steps=0)


def test_packed_dataset_errors_name_the_row_and_the_fix():
    import datasets

    no_completion = {k: v for k, v in ROW_A.items() if k != "completion_mask"}
    with pytest.raises(KeyError, match=r"row 1 lacks \['completion_mask'\]; rows must carry"):
        PackedDataset([ROW_B, no_completion], max_length=8)
    with pytest.raises(KeyError, match=r"missing \['completion_mask'\] \(encode them with plw.encode\)"):
        PackedDataset(datasets.Dataset.from_list([no_completion]), max_length=8)
    with pytest.raises(ValueError, match="row 0: input_ids and masks differ in length"):
        PackedDataset([{**ROW_A, "prompt_mask": [1, 1, 1]}], max_length=8)


def test_padded_layout_pads_input_ids_with_0_by_default():
    rows = PackedCollator(one_row_per_bin=True)([ROW_A, ROW_B])
    assert rows["input_ids"].tolist() == [[11, 12, 13, 14], [21, 22, 23, 0]]
