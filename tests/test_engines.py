"""``plw train`` under DDP, DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes means the same as one process.

One ``accelerate launch`` per engine (the repository's config with ``mixed_precision: no`` and ``use_cpu: true``,
``DS_ACCELERATOR=cpu`` for DeepSpeed) runs several ``plw train`` runs of a tiny random LLaMA (tied head, like
SmolLM2) through :mod:`tests.engine_worker`, which records which rows every process trains on. The references are
the same runs in one process with ``gradient_accumulation_steps: 2``: the same micro-batches, summed in one place.

The data is deliberately uneven: rows of very different lengths, two rows of weight 0 (a process whose micro-batch
holds one has no target at all in it) and 5 evaluation rows in batches of 2, so the last evaluation batch of the
second process holds only repeated rows, masked to no target (the case that hung under ZeRO-3: one process
gathered the head per chunk, the other waited in the reduce).

Tolerance: rel 1e-5 everywhere. The step-0 evaluation and the first logged loss come from the same weights; only the
order of the sums differs (two processes reduce across processes, one adds its micro-batches in turn), which moves
float32 results in the last bits. After updates, Adam could amplify such bits where a gradient is itself rounding
noise (its first steps move each parameter by about ``lr`` whatever the gradient's size); over these 4 steps the
measured differences stay below 1e-7 (LoRA and full, every engine, 2-core CPU), so 1e-5 leaves room for other CPUs
while a wrong normaliser or a process training the wrong rows is off by far more (the two processes' step weights
differ up to 7x). Before the adapter's init was seeded, each process drew its own LoRA matrices and the runs drifted
apart by ~1e-3 in 4 steps: that was no float noise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from plw.data.synthetic import make_synthetic_mcqa
from tests.processes import free_port, run_tree

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs" / "accelerate"
TIMEOUT_S = 240
STEPS = 4
REL = 1e-5


def _load_worker():
    spec = importlib.util.spec_from_file_location("engine_worker", HERE / "engine_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _deepspeed_missing() -> str | None:
    try:
        import deepspeed  # noqa: F401
    except Exception as err:  # ImportError, or a build that cannot load on this machine
        return f"deepspeed is not importable ({type(err).__name__}: {err}); pip install '.[dev]'"
    return None


def cpu_config(engine: str, folder: Path) -> Path:
    """The repository's accelerate config for ``engine``, set for CPU processes without mixed precision."""
    config = yaml.safe_load((CONFIGS / f"{engine}.yaml").read_text())
    config.update(mixed_precision="no", use_cpu=True, num_processes=2)
    config.pop("gpu_ids", None)
    path = folder / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(engine: str, job_dir: Path) -> str:
    """``accelerate launch`` of the engine worker on 2 CPU processes; the whole process tree dies on a timeout."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(cpu_config(engine, job_dir)),
        "--num_processes=2",
        "--main_process_ip=127.0.0.1",
        f"--main_process_port={free_port()}",
        str(HERE / "engine_worker.py"),
        str(job_dir),
    ]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(job_dir / "hf"),  # no user accelerate config is picked up
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return run_tree(cmd, env, TIMEOUT_S, f"{engine}: 2-process run", cwd=job_dir)


# ---- the runs ----------------------------------------------------------------------------------------------------


def write_data(folder: Path) -> None:
    """8 training rows (tagged ``#i#``; rows 2 and 5 weigh 0; lengths from ~20 to ~400 tokens), 5 eval rows."""
    long = make_synthetic_mcqa(3, seed=1, people=10, fillers=4)
    short = make_synthetic_mcqa(2, seed=3, people=4, fillers=0, facts=1) + [
        {"prompt": "Pick a letter.", "completion": "C"},
        {"prompt": "Which option? A or B.", "completion": "A"},
        {"prompt": "The first letter.", "completion": "A"},
    ]
    train = []
    for i, r in enumerate(long + short):
        record = {"prompt": f"#{i}# {r['prompt']}", "completion": r["completion"]}
        if i in (2, 5):
            record["weight"] = 0
        train.append(record)
    valid = [{"prompt": r["prompt"], "completion": r["completion"]} for r in make_synthetic_mcqa(5, seed=2, people=4)]
    for name, rows in (("train", train), ("valid", valid)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_config(folder: Path, name: str, lora: bool, **extra) -> Path:
    config = {
        "name": name,
        "output_dir": str(folder / "runs"),
        "model": str(folder / "model"),
        "train_data": str(folder / "train.jsonl"),
        "eval_data": str(folder / "valid.jsonl"),
        "answer_choices": ["A", "B", "C", "D"],
        "prompt_loss_weight": 0.3,
        "max_steps": STEPS,
        "batch_size": 1,
        "eval_batch_size": 2,
        "eval_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "warmup": 0,
        "seed": 7,
        "report_to": [],
        "bf16": False,
        "checkpoints": False,
        # greedy answers too: under ZeRO-3 every decoding step gathers parameters on both processes
        "eval_generated_accuracy": True,
        "eval_max_new_tokens": 2,
        **extra,
    }
    if lora:
        config["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def runs_for(engine: str, folder: Path) -> list[dict]:
    """LoRA and full fine-tuning on every engine; ZeRO-3 also saves the best model and resumes a stopped run."""
    if engine == "ddp":  # also the run-folder checks: written once, best adapter kept, checkpoints removed at the end
        config = run_config(folder, "lora", lora=True, save_best=True, checkpoints=True)
        return [{"name": "lora", "args": ["train", str(config), "--overwrite"]}]
    runs = [{"name": "lora", "args": ["train", str(run_config(folder, "lora", lora=True)), "--overwrite"]}]
    if engine != "deepspeed_zero3":
        return [*runs, {"name": "full", "args": ["train", str(run_config(folder, "full", lora=False)), "--overwrite"]}]
    full = {"checkpoints": True, "save_best": True}
    cut = run_config(folder, "cut", lora=False, **full)
    return [
        *runs,
        {"name": "full", "args": ["train", str(run_config(folder, "full", lora=False, **full)), "--overwrite"]},
        {"name": "cut", "args": ["train", str(cut), "--overwrite"], "stop_at": 3},
        {"name": "resumed", "args": ["train", str(cut), "--resume"]},
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from tests.conftest import save_tiny_model

    folder = tmp_path_factory.mktemp("engines")
    save_tiny_model(folder / "model", tokenizer)
    write_data(folder)
    return folder


@pytest.fixture(scope="module")
def one_process(setup):
    """The references: LoRA and full fine-tuning in this process, accumulating 2 micro-batches per step."""
    job_dir = setup / "one"
    job_dir.mkdir()
    runs = [
        {
            "name": name,
            "args": [
                "train",
                str(run_config(job_dir, name, lora=name == "lora", gradient_accumulation_steps=2)),
                "--overwrite",
            ],
        }
        for name in ("lora", "full")
    ]
    for name in ("model", "train.jsonl", "valid.jsonl"):
        (job_dir / name).symlink_to(setup / name)
    (job_dir / "job.json").write_text(json.dumps({"runs": runs}))
    worker.run_all(job_dir)
    return job_dir


_LAUNCHED: dict[str, tuple[str, Path, list[str]]] = {}
_OUTPUT: dict[str, str] = {}


def engine_job(engine: str, setup: Path) -> tuple[str, Path, list[str]]:
    """Launch ``engine``'s runs once per test session; later calls return the same results."""
    if engine in _LAUNCHED:
        return _LAUNCHED[engine]
    if engine.startswith("deepspeed") and (reason := _deepspeed_missing()):
        pytest.skip(reason)
    job_dir = setup / engine
    job_dir.mkdir()
    for name in ("model", "train.jsonl", "valid.jsonl"):
        (job_dir / name).symlink_to(setup / name)
    runs = runs_for(engine, job_dir)
    (job_dir / "job.json").write_text(json.dumps({"runs": runs}))
    _OUTPUT[engine] = launch(engine, job_dir)
    _LAUNCHED[engine] = (engine, job_dir, [r["name"] for r in runs])
    return _LAUNCHED[engine]


@pytest.fixture(scope="module", params=["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def engine_run(request, setup):
    return engine_job(request.param, setup)


@pytest.fixture(scope="module")
def zero3(setup):
    return engine_job("deepspeed_zero3", setup)


# ---- reading the results -----------------------------------------------------------------------------------------


def ranks_of(job_dir: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((job_dir / name).glob("rank*.json"))]


def batches_by_step(report: dict) -> dict[int, list[dict]]:
    steps: dict[int, list[dict]] = {}
    for r in report["records"]:
        if "rows" in r:
            steps.setdefault(r["step"], []).append(r)
    return steps


def logged_losses(report: dict) -> dict[int, float]:
    return {r["logged_step"]: r["loss"] for r in report["records"] if "logged_step" in r}


def metrics_lines(job_dir: Path, name: str) -> list[dict]:
    text = (job_dir / "runs" / name / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def eval_values(line: dict) -> dict[str, float]:
    return {k: v for k, v in line.items() if k.startswith("eval_") and "runtime" not in k and "per_second" not in k}


def trained_runs(names: list[str]) -> list[str]:
    return [n for n in ("lora", "full") if n in names]


# ---- the checks --------------------------------------------------------------------------------------------------


def test_two_processes_train_disjoint_rows_whose_union_is_the_step(engine_run, one_process):
    """Each process sees 2 processes (Trainer, accelerate, torch), trains its own rows, and together they train
    exactly the micro-batches one process accumulates into the same step; some step gives one process no target."""
    engine, job_dir, names = engine_run
    uneven = 0
    for name in trained_runs(names):
        ranks = ranks_of(job_dir, name)
        assert [r["exit"] for r in ranks] == [0, 0], (engine, name)
        (one,) = ranks_of(one_process, name)
        reference = batches_by_step(one)
        per_rank = [batches_by_step(r) for r in ranks]
        assert sorted(per_rank[0]) == sorted(per_rank[1]) == sorted(reference) == list(range(STEPS)), (engine, name)
        for step, ref_batches in reference.items():
            rows = [[i for b in steps[step] for row in b["rows"] for i in row] for steps in per_rank]
            assert not set(rows[0]) & set(rows[1]), (engine, name, step, rows)
            assert sorted(rows[0] + rows[1]) == sorted(i for b in ref_batches for row in b["rows"] for i in row)
            weights = [sum(b["weight"] for b in steps[step]) for steps in per_rank]
            uneven += min(weights) == 0 < max(weights)
        for report in ranks:
            for b in (b for bs in batches_by_step(report).values() for b in bs):
                assert (b["trainer_world_size"], b["accelerate_processes"], b["torch_world_size"]) == (2, 2, 2), b
    assert uneven, f"{engine}: no step gave one process a micro-batch without targets; the data is not uneven"


def test_losses_and_evaluations_equal_one_process(engine_run, one_process):
    engine, job_dir, names = engine_run
    for name in trained_runs(names):
        two, one = metrics_lines(job_dir, name), metrics_lines(one_process, name)
        assert [x["step"] for x in two] == [x["step"] for x in one] == [0, 2, 4], (engine, name)
        # step 0: the same weights; only the order of the sums differs
        assert eval_values(two[0]) == pytest.approx(eval_values(one[0]), rel=REL), (engine, name)
        losses = [logged_losses(r) for r in ranks_of(job_dir, name)]
        (ref,) = [logged_losses(r) for r in ranks_of(one_process, name)]
        assert sorted(ref) == list(range(1, STEPS + 1))
        for logged in losses:  # every process logs the loss of the whole step
            assert logged[1] == pytest.approx(ref[1], rel=REL), (engine, name)
            assert logged == pytest.approx(ref, rel=REL), (engine, name)
        for a, b in zip(two[1:], one[1:], strict=True):
            assert eval_values(a) == pytest.approx(eval_values(b), rel=REL), (engine, name, a["step"])
        # the runs do train: a loss that did not move would make the comparison after updates empty
        assert abs(two[-1]["eval_weighted_loss"] - two[0]["eval_weighted_loss"]) > 10 * REL


@pytest.fixture(scope="module")
def ddp(setup):
    return engine_job("ddp", setup)


def test_ddp_run_folder_is_written_once(ddp):
    """The unchanged CLI on 2 processes: one run folder written once, every evaluation over each row exactly once
    (5 rows in batches of 2: the last batch of process 1 holds only repeats), the best adapter kept."""
    _, job_dir, _ = ddp
    out = _OUTPUT["ddp"]
    assert out.count("[plw] train data:") == 1 and out.count("[plw] done:") == 1, out[-3000:]
    run = job_dir / "runs" / "lora"
    lines = metrics_lines(job_dir, "lora")
    assert all(x["eval_rows"] == 5 and x["eval_answer_rows"] == 5 and x["eval_generated_rows"] == 5 for x in lines)
    for p in (json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()):
        assert p["id"] == [0, 1, 2, 3, 4] and len(p["generated"]) == 5 and len(p["completion_loss"]) == 5
    for name in ("config.yaml", "data_report.json", "summary.json", "best/adapter_config.json"):
        assert (run / name).exists(), name
    assert (run / "best" / "tokenizer_config.json").exists()
    assert not (run / "checkpoints").exists()


def test_zero3_resume_equals_uninterrupted_run(zero3):
    _, job_dir, _ = zero3
    assert [r["exit"] for r in ranks_of(job_dir, "cut")] == ["interrupted"] * 2
    assert [r["exit"] for r in ranks_of(job_dir, "resumed")] == [0, 0]
    resumed = ranks_of(job_dir, "resumed")[0]
    assert sorted(batches_by_step(resumed)) == [2, 3]  # it really went on from the checkpoint of step 2
    full, cut = metrics_lines(job_dir, "full"), metrics_lines(job_dir, "cut")
    assert [x["step"] for x in cut] == [x["step"] for x in full] == [0, 2, 4]
    for a, b in zip(cut, full, strict=True):
        assert eval_values(a) == pytest.approx(eval_values(b), rel=REL), a["step"]


def test_zero3_save_best_writes_a_full_model_that_loads(zero3, tokenizer):
    """The saved model is the full trained one: it loads, and its own loss on the eval rows is the logged one."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from plw.data.encode import encode

    _, job_dir, _ = zero3
    run = job_dir / "runs" / "full"
    model = AutoModelForCausalLM.from_pretrained(run / "best").float().eval()
    reference = AutoModelForCausalLM.from_pretrained(job_dir / "model")
    shapes = {n: p.shape for n, p in reference.named_parameters()}
    assert {n: p.shape for n, p in model.named_parameters()} == shapes  # every tensor whole, none a ZeRO-3 slice
    lines = {x["step"]: x for x in metrics_lines(job_dir, "full")}
    best = min(lines.values(), key=lambda x: x["eval_loss"])
    assert best["step"] > 0
    num = den = 0.0
    with torch.no_grad():
        for line in (job_dir / "valid.jsonl").read_text().splitlines():
            row = encode(tokenizer, json.loads(line))
            ids = torch.tensor(row["input_ids"])
            nll = F.cross_entropy(model(ids[None]).logits[0, :-1].float(), ids[1:], reduction="none")
            w = 0.3 * torch.tensor(row["prompt_mask"][1:]).float() + torch.tensor(row["completion_mask"][1:]).float()
            num, den = num + float((w * nll).sum()), den + float(w.sum())
    assert num / den == pytest.approx(best["eval_weighted_loss"], rel=REL)
    assert num / den != pytest.approx(lines[0]["eval_weighted_loss"], rel=REL)  # not the start model


# ---- FSDP2 -------------------------------------------------------------------------------------------------------


def test_fsdp2_loss_gradient_and_evaluation_equal_one_process(tmp_path, tokenizer):
    """plw's chunked loss and streamed evaluation on a ``fully_shard``-ed model (2 gloo processes) equal one process.

    The reference is independent of plw's chunked path: an unsharded copy of the model, one unpadded forward per
    row, ``F.cross_entropy``, and the metrics from the full logits. Process 1 trains on a micro-batch without any
    target and its last evaluation batch holds none, so a collective that depended on the data would hang.
    """
    import torch
    import torch.nn.functional as F

    from plw.data.encode import encode
    from plw.metrics import StreamingMetrics
    from plw.trainer import choice_token_ids
    from tests.conftest import make_tiny_model

    records = make_synthetic_mcqa(6, seed=5, people=4, fillers=1)
    rows = [encode(tokenizer, r) for r in records]
    model_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }
    job = {
        "seed": 3,
        "plw": 0.3,
        "model": model_config,
        "choice_ids": choice_token_ids(tokenizer, ["A", "B", "C", "D"]),
        "train_rows": rows[:3],
        "train_split": [[0, 1, 2], [0]],
        "train_zero": [False, True],
        "eval_rows": rows,
        "eval_split": [[[0, 1], [2]], [[3, 4], [5]]],
        "eval_zero": [[False, False], [False, True]],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "MASTER_ADDR": "127.0.0.1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent), env.get("PYTHONPATH", "")])
    run_tree([*cmd, str(HERE / "fsdp2_worker.py"), str(tmp_path)], env, TIMEOUT_S, "FSDP2 run")
    two = torch.load(tmp_path / "out.pt")

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(job["seed"])
    model = LlamaForCausalLM(LlamaConfig(**model_config)).float()
    assert make_tiny_model  # the same architecture as the other tests' tiny models
    num, den = 0.0, 0.0
    for r in rows[:3]:  # only process 0's rows carry targets
        ids = torch.tensor(r["input_ids"])
        nll = F.cross_entropy(model(ids[None]).logits[0, :-1], ids[1:], reduction="none")
        w = 0.3 * torch.tensor(r["prompt_mask"][1:]).float() + torch.tensor(r["completion_mask"][1:]).float()
        num, den = num + (w * nll).sum(), den + float(w.sum())
    loss = num / den
    loss.backward()
    # the loss saw the head unsharded by the root's forward; the evaluation gathered the sharded DTensor itself
    assert two["head"] == ["Parameter", "DTensor", "DTensor"]
    assert two["loss"] == pytest.approx(float(loss), rel=REL)
    for name, p in model.named_parameters():
        torch.testing.assert_close(two["grads"][name], p.grad, rtol=1e-4, atol=1e-4 * float(p.grad.abs().max()))
    metrics = StreamingMetrics(0.3, job["choice_ids"])
    with torch.no_grad():
        for r in rows[:5]:  # the last row sits in a batch without targets
            ids = torch.tensor(r["input_ids"])[None]
            masks = (torch.tensor(r["prompt_mask"])[None], torch.tensor(r["completion_mask"])[None])
            metrics.update(model(ids).logits, ids, *masks)
    assert two["eval"] == pytest.approx(metrics.compute(), rel=REL)
