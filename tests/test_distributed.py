"""Two data-parallel CPU processes (gloo) mean the same as one: same eval metrics, same optimizer update.

``accelerate launch`` starts two copies of ``dist_worker.py`` on a tiny random LLaMA model. Each rank gets a
training micro-batch of 2 rows; the rows of rank 0 are several times longer than those of rank 1, so the ranks carry
very different sums of weights and a per-rank normaliser would give a different gradient. The references are
computed here: a brute-force loss over the 4 rows (one unpadded forward per row, ``F.cross_entropy``) and the same
worker code run in this process with a micro-batch of 4. Evaluation uses an odd number of rows, so accelerate pads
the last batch of one rank with repeated rows; those must not be counted twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from plw.data.encode import encode
from plw.data.synthetic import make_synthetic_mcqa
from tests.processes import free_port, run_tree

HERE = Path(__file__).resolve().parent
PLW = 0.3
LR = 1.0
SEED = 1234
PER_DEVICE_BATCH = 2


def _load_worker():
    spec = importlib.util.spec_from_file_location("dist_worker", HERE / "dist_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _weight_sum(rows: list[dict]) -> float:
    return sum(PLW * sum(r["prompt_mask"][1:]) + sum(r["completion_mask"][1:]) for r in rows)


def make_job(tok) -> dict:
    """Train rows 0-1 (rank 0) are long passages, rows 2-3 (rank 1) are short; 5 eval rows of mixed length."""
    from plw.trainer import choice_token_ids

    long_records = make_synthetic_mcqa(2, seed=1, people=12, fillers=6)
    short_records = [
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": "Name a colour.", "completion": "Blue, like a clear sky."},
    ]
    eval_records = make_synthetic_mcqa(3, seed=2) + [
        {"prompt": "Pick a letter.", "completion": "C"},
        {"prompt": "Which option?", "completion": "A"},
    ]
    train_rows = [dict(encode(tok, r), source_row=i) for i, r in enumerate(long_records + short_records)]
    eval_rows = [dict(encode(tok, r), source_row=i) for i, r in enumerate(eval_records)]
    model = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    return {
        "model": model,
        "seed": SEED,
        "plw": PLW,
        "learning_rate": LR,
        "per_device_batch": PER_DEVICE_BATCH,
        "eval_batch_size": 2,
        "pad_token_id": tok.pad_token_id,
        "choice_ids": choice_token_ids(tok, ["A", "B", "C", "D"]),
        "train_rows": train_rows,
        "eval_rows": eval_rows,
    }


def accelerate_launch(target: list[str], workdir: Path, timeout: int = 300) -> str:
    """Run ``accelerate launch`` with 2 CPU processes on ``target`` (a script and its arguments, or ``-m module``).

    Returns the combined output; fails the test on a non-zero exit or a timeout (killing every process).
    """
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # without GPUs this starts the processes on the CPU (torchrun); the Trainer picks gloo
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_ip=127.0.0.1",
        f"--main_process_port={free_port()}",
        *target,
    ]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(workdir / "hf"),  # no user accelerate config is picked up
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return run_tree(cmd, env, timeout, "2-process run", cwd=workdir)


def launch_two_processes(job: dict, job_dir: Path) -> list[dict]:
    """Run ``dist_worker.py`` on 2 CPU processes; return the per-rank reports."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps(job))
    accelerate_launch([str(HERE / "dist_worker.py"), str(job_dir)], job_dir)
    return [json.loads((job_dir / f"rank{r}.json").read_text()) for r in range(2)]


def brute_force(job: dict, rows_per_group: list[list[int]]) -> dict:
    """Per-row forwards without padding: the step loss over all rows, per-group losses, and eval sums.

    Returns the gradient of ``sum(w * nll) / sum(w)`` over every listed row, and the average of the per-group mean
    losses' gradients (what data parallelism would give with a per-rank normaliser).
    """
    model = worker.build_model(job["model"], job["seed"])
    totals = []
    for group in rows_per_group:
        s, w = 0.0, 0.0
        for i in group:
            r = job["train_rows"][i]
            ids = torch.tensor(r["input_ids"])
            nll = F.cross_entropy(model(ids[None]).logits[0, :-1].float(), ids[1:], reduction="none")
            weight = PLW * torch.tensor(r["prompt_mask"][1:]).float() + torch.tensor(r["completion_mask"][1:]).float()
            s = s + (weight * nll).sum()
            w += float(weight.sum())
        totals.append((s, w))
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    step = sum(s for s, _ in totals) / sum(w for _, w in totals)
    grads = torch.autograd.grad(step, params, retain_graph=True, allow_unused=True)
    per_group = sum(s / w for s, w in totals) / len(totals)
    naive = torch.autograd.grad(per_group, params, allow_unused=True)
    zero = torch.zeros_like
    return {
        "grads": {n: g if g is not None else zero(p) for n, g, p in zip(names, grads, params, strict=True)},
        "naive": {n: g if g is not None else zero(p) for n, g, p in zip(names, naive, params, strict=True)},
        "init": {n: p.detach().clone() for n, p in zip(names, params, strict=True)},
    }


@torch.no_grad()
def brute_force_eval(job: dict) -> dict[str, float]:
    """The validation metrics of the eval rows, one unpadded row at a time."""
    model = worker.build_model(job["model"], job["seed"])
    sums = dict.fromkeys(("p_nll", "p_n", "c_nll", "c_n", "wnll", "w", "c_ok", "ans", "ans_ok", "choice_ok"), 0.0)
    choices = torch.tensor(job["choice_ids"])
    for r in job["eval_rows"]:
        ids = torch.tensor(r["input_ids"])
        logits = model(ids[None]).logits[0, :-1].float()
        nll = F.cross_entropy(logits, ids[1:], reduction="none")
        pm = torch.tensor(r["prompt_mask"][1:]).bool()
        cm = torch.tensor(r["completion_mask"][1:]).bool()
        sums["p_nll"] += float(nll[pm].sum())
        sums["p_n"] += int(pm.sum())
        sums["c_nll"] += float(nll[cm].sum())
        sums["c_n"] += int(cm.sum())
        sums["wnll"] += float((PLW * nll[pm]).sum() + nll[cm].sum())
        sums["w"] += PLW * int(pm.sum()) + int(cm.sum())
        sums["c_ok"] += int((logits.argmax(-1)[cm] == ids[1:][cm]).sum())
        first = int(cm.nonzero()[0])
        gold = int(ids[1:][first])
        if gold in job["choice_ids"]:
            sums["ans"] += 1
            sums["ans_ok"] += int(logits[first].argmax()) == gold
            sums["choice_ok"] += int(choices[logits[first, choices].argmax()]) == gold
    s = sums
    return {
        "eval_prompt_loss": s["p_nll"] / s["p_n"],
        "eval_completion_loss": s["c_nll"] / s["c_n"],
        "eval_full_loss": (s["p_nll"] + s["c_nll"]) / (s["p_n"] + s["c_n"]),
        "eval_weighted_loss": s["wnll"] / s["w"],
        "eval_completion_token_accuracy": s["c_ok"] / s["c_n"],
        "eval_accuracy": s["ans_ok"] / s["ans"],
        "eval_choice_accuracy": s["choice_ok"] / s["ans"],
        "eval_prompt_tokens": s["p_n"],
        "eval_completion_tokens": s["c_n"],
        "eval_rows": len(job["eval_rows"]),
        "eval_answer_rows": s["ans"],
    }


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_real_rows_count_every_row_once_with_accelerates_sharding(processes, batch_size):
    """Against accelerate's own even-batches sharding: summed over processes, each row counts exactly once."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from plw.distributed import real_rows_of_last_batch

    for n in range(1, 14):
        counted = []
        for rank in range(processes):
            sampler = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last=False)
            batches = list(BatchSamplerShard(sampler, processes, rank, even_batches=True))
            *full, last = batches
            counted += [i for b in full for i in b]
            keep = real_rows_of_last_batch(len(last), rank, n % (batch_size * processes))
            counted += [i for i, k in zip(last, keep.tolist(), strict=True) if k]
        assert sorted(counted) == list(range(n)), (n, processes, batch_size)


def test_main_process_from_launcher_environment(monkeypatch):
    from plw.distributed import is_main_process, process_rank, world_size

    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert is_main_process() and world_size() == 1
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process() and process_rank() == 1 and world_size() == 2


def _metric_values(metrics: dict) -> dict[str, float]:
    skip = ("runtime", "per_second", "epoch")
    return {k: v for k, v in metrics.items() if not any(s in k for s in skip)}


def _rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[n] - b[n]).double().pow(2).sum()) for n in b)
    den = sum(float(b[n].double().pow(2).sum()) for n in b)
    return (num / den) ** 0.5


def _assert_tensors_close(actual: dict, expected: dict, rtol: float, what: str) -> None:
    assert set(actual) == set(expected), what
    for name, exp in expected.items():
        # entries far below the tensor's largest are sums with cancellation: their rounding error scales with the
        # tensor, not with the entry, so the absolute tolerance is rtol times the tensor's largest entry
        atol = rtol * float(exp.abs().max())
        torch.testing.assert_close(actual[name], exp, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{what} {n}: {m}")


@pytest.fixture(scope="module")
def runs(tokenizer, tmp_path_factory):
    job = make_job(tokenizer)
    base = tmp_path_factory.mktemp("dist")
    reports = launch_two_processes(job, base / "two")
    one_dir = base / "one"
    one_dir.mkdir()
    one = worker.run(job, one_dir, per_device_batch=2 * PER_DEVICE_BATCH)
    return {
        "job": job,
        "reports": reports,
        "two": torch.load(base / "two" / "tensors.pt"),
        "one_report": one,
        "one": torch.load(one_dir / "tensors.pt"),
    }


def test_the_setup_is_two_processes_with_uneven_weights(runs):
    job, reports = runs["job"], runs["reports"]
    assert [r["world_size"] for r in reports] == [2, 2]
    init = runs["one_report"]["init_checksum"]  # the same seeded weights in every process (sums may round apart)
    assert [r["init_checksum"] for r in reports] == pytest.approx([init, init], rel=1e-12)
    # the sequential sampler gives rank 0 the long rows and rank 1 the short ones
    assert reports[0]["train_rows_seen"] == [[0, 1]]
    assert reports[1]["train_rows_seen"] == [[2, 3]]
    assert runs["one_report"]["train_rows_seen"] == [[0, 1, 2, 3]]
    w0, w1 = _weight_sum(job["train_rows"][:2]), _weight_sum(job["train_rows"][2:])
    assert w0 > 4 * w1, (w0, w1)
    # after the all-reduce both ranks hold the same gradient
    assert reports[0]["grad_checksum"] == pytest.approx(reports[1]["grad_checksum"], rel=1e-6)
    # the evaluation really had padded (repeated) rows on some rank
    seen = [i for r in reports for batch in r["eval_rows_seen"] for i in batch]
    assert sorted(set(seen)) == list(range(len(job["eval_rows"])))
    assert len(seen) > len(job["eval_rows"])


def test_eval_metrics_match_one_process(runs):
    one = _metric_values(runs["one_report"]["eval"])
    reference = brute_force_eval(runs["job"])
    assert set(reference) <= set(one)
    assert {k: one[k] for k in reference} == pytest.approx(reference, rel=1e-5)
    for report in runs["reports"]:
        two = _metric_values(report["eval"])
        assert set(two) == set(one)
        assert two == pytest.approx(one, rel=1e-5, abs=1e-7)


def test_one_sgd_step_matches_one_process_with_doubled_batch(runs):
    job, two, one = runs["job"], runs["two"], runs["one"]
    ref = brute_force(job, [[0, 1], [2, 3]])
    # the gradient the optimizer saw: 2 ranks x 2 rows == 1 rank x 4 rows == brute force over 4 rows
    _assert_tensors_close(one["grads"], ref["grads"], 1e-5, "1-process gradient")
    _assert_tensors_close(two["grads"], ref["grads"], 1e-5, "2-process gradient")
    # a per-rank normaliser (mean loss per rank, averaged by DDP) would be far off: the test can tell them apart
    assert _rel_diff(ref["naive"], ref["grads"]) > 0.05
    assert _rel_diff(two["grads"], ref["grads"]) < 1e-5
    # the parameter update of one SGD step is -lr * gradient, the same for 2 processes and 1 process
    update_two = {n: two["params"][n] - ref["init"][n] for n in ref["init"]}
    update_one = {n: one["params"][n] - ref["init"][n] for n in ref["init"]}
    expected = {n: -LR * g for n, g in ref["grads"].items()}
    assert _rel_diff(update_two, expected) < 1e-5
    assert _rel_diff(update_two, update_one) < 1e-5


# `plw train` itself on 2 processes (DDP, ZeRO-2, ZeRO-3; rows per process, the run folder): test_engines.py.


ACCELERATE_CONFIGS = sorted((HERE.parent / "configs" / "accelerate").glob("*.yaml"))
EXPECTED = {
    "ddp.yaml": ("MULTI_GPU", None),
    "fsdp.yaml": ("FSDP", None),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 2),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 3),
}


def test_every_accelerate_config_is_expected():
    assert sorted(p.name for p in ACCELERATE_CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_parses(path, monkeypatch):
    """accelerate's own launcher reads each config and builds its plugin (GPUs and DeepSpeed are not needed).

    This checks key names and values, not a run: DDP/FSDP/DeepSpeed on GPUs cannot be exercised on this machine.
    """
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    first = path.read_text().splitlines()[0]
    assert (
        first.startswith(f"# accelerate launch --config_file configs/accelerate/{path.name} ")
        and "-m plw train" in first
    )
    distributed_type, zero_stage = EXPECTED[path.name]
    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert config.distributed_type.value == distributed_type
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    for key in {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}:
        assert key in known, f"{path.name}: accelerate launch has no option {key!r}"
    args, defaults, _ = _validate_launch_command(
        parser.parse_args(["--config_file", str(path), "--num_processes", "4", "train.py"])
    )
    if distributed_type == "DEEPSPEED":
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    if distributed_type == "FSDP":
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"
    elif distributed_type == "DEEPSPEED":
        plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == zero_stage
        # batch size, accumulation and clipping are left to plw's config
        ds = plugin.deepspeed_config
        assert ds["gradient_accumulation_steps"] == ds["gradient_clipping"] == "auto"
    else:
        assert args.multi_gpu and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
