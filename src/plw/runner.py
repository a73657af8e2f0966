"""One training run from a :class:`~plw.config.RunConfig`: data -> rows -> PLWTrainer -> the run folder.

The run folder ``OUTPUT_DIR/NAME`` receives ``config.yaml`` (resolved), ``data_report.json``,
``metrics.jsonl`` (one line per evaluation), ``summary.json``, TensorBoard logs under ``tb/`` and, with
``save_best``, the best checkpoint (adapter for LoRA) under ``best/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, dump_config
from .runio import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl_lines, summarize
from .schedule import parse_plw

# One line per evaluation: the step and, per validation row (sorted by row id), exact / correct / predicted choice.
PREDICTIONS_FILE = "predictions.jsonl"


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(setting: str | bool, use_cpu: bool) -> bool:
    if setting != "auto":
        return bool(setting)
    if use_cpu:
        return cpu_supports_bf16()
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def prepare_rows(config: RunConfig, tokenizer: Any, which: str) -> tuple[list[dict], dict[str, Any], list[str] | None]:
    """Read and encode the train or eval records; return rows, the data report and the answer choices."""
    from .data.encode import encode_records
    from .data.sources import load_records
    from .roles import RoleWeightsError, apply_role_weights

    spec = config.train_data if which == "train" else config.eval_data
    loaded = load_records(spec)
    limit = config.max_train_rows if which == "train" else config.max_eval_rows
    records, names = loaded.records[:limit], loaded.names[:limit]
    chat = {
        k: getattr(config, k)
        for k in ("chat_template", "chat_template_kwargs", "add_eos", "multi_turn", "stop_tokens")
    }
    rows, report = encode_records(
        tokenizer, records, config.max_length, config.truncation, config.template, names=names, **chat
    )
    if not rows:
        raise ConfigError(f"{which}_data: no rows left after encoding ({report.summary()})")
    weights = data_weights(rows, records)
    try:
        apply_role_weights(rows, config.role_weights, which)
    except RoleWeightsError as err:
        raise ConfigError(str(err)) from None
    if which == "eval":
        for i, row in enumerate(rows):  # the row's index in the validation set, for per-row outcomes
            row["row_id"] = [i] * len(row["input_ids"])
    info = {"source": loaded.description, "records_available": len(loaded.records), **report.as_dict()}
    info["load"] = loaded.report.as_dict()  # what the loader read, kept and dropped (with reasons)
    info["rg"] = rg_summary(rows)
    if weights is not None:
        info["weights"] = weights
    return rows, info, loaded.answer_choices


def data_weights(rows: list[dict], records: list[dict]) -> dict[str, Any] | None:
    """Rows of a set all carry ``data_weight`` when any does (:mod:`plw.data.weights`); the weights' report."""
    from .data.weights import complete_data_weights, weight_report

    complete_data_weights(rows)
    return weight_report(records, rows)


class MetricsJsonlCallback:
    """Writes one ``metrics.jsonl`` line per evaluation: step, epoch, plw, the last training loss, every eval_*.

    ``plw`` is a number or a callable returning the PLW of the objective at the evaluation (for a schedule, its
    value for the next optimizer step: 1 at step 0 of ``1->0:linear``, 0 after the last step).
    """

    def __init__(
        self,
        path: Path,
        plw: float | Callable[[], float],
        row_outcomes: Callable[[], dict[str, list[int]] | None] | None = None,
    ):
        from transformers import TrainerCallback

        self.path = Path(path)
        self.plw = plw
        self.row_outcomes = row_outcomes
        self.train_loss: float | None = None
        outer = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    outer.train_loss = float(logs["loss"])

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                if state.is_world_process_zero and metrics:
                    outer.write(state, metrics)

        self.callback = _Callback()

    def write(self, state: Any, metrics: dict[str, Any]) -> None:
        plw = self.plw() if callable(self.plw) else self.plw
        line = {"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6), "plw": plw}
        line["train_loss"] = self.train_loss
        line.update({k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))})
        append_jsonl(self.path, line)
        outcomes = self.row_outcomes() if self.row_outcomes else None
        if outcomes and outcomes["id"]:
            append_jsonl(self.path.with_name(PREDICTIONS_FILE), {"step": state.global_step, **outcomes})


def training_arguments(config: RunConfig, run_dir: Path) -> Any:
    from transformers import TrainingArguments

    use_cpu = config.device == "cpu" or (config.device == "auto" and not _cuda_available())
    save = config.save_best or config.checkpoints
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup if config.warmup < 1 else int(config.warmup),
        weight_decay=config.weight_decay,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=config.eval_on_start,
        logging_steps=config.logging_steps,
        save_strategy="steps" if save else "no",
        save_steps=config.eval_steps if save else 500,
        save_total_limit=1 if save else None,
        load_best_model_at_end=config.save_best,
        metric_for_best_model=config.metric_for_best_model,
        seed=config.seed,
        data_seed=config.seed,
        bf16=resolve_bf16(config.bf16, use_cpu),
        use_cpu=use_cpu,
        activation_checkpointing=config.gradient_checkpointing,
        report_to=list(config.report_to),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable parameter is used by both loss paths
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def apply_lora(model: Any, lora: dict[str, Any]) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = lora.get("target_modules", "all-linear")
    if lora.get("top_layers") is not None:
        targets = top_layer_targets(model, int(lora["top_layers"]), targets)
    cfg = LoraConfig(
        r=int(lora.get("r", 16)),
        lora_alpha=lora.get("alpha", 2 * int(lora.get("r", 16))),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def top_layer_targets(model: Any, top: int, targets: str | list[str]) -> list[str]:
    """Full names of the linear modules to adapt in the model's last ``top`` decoder layers.

    Adapting only the top layers is a speed choice: the frozen layers below the lowest adapter need no backward
    pass (``benchmarks/lora_depth.py``: the top 10 of SmolLM2-135M's 30 layers take 0.66x the step time of all 30
    on the CPU). It can cost the task: on the demo's, the top 10 did not learn to read (docs/calibration.md, run I).
    ``targets`` is ``"all-linear"`` (every ``nn.Linear`` in those layers) or a list of module names (``q_proj``).
    """
    import torch

    count = model.config.num_hidden_layers
    stacks = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == count
    ]
    if len(stacks) != 1:
        raise ValueError(
            f"lora.top_layers: cannot tell the model's {count} decoder layers apart ({len(stacks)} stacks)"
        )
    if not 1 <= top <= count:
        raise ValueError(f"lora.top_layers: the model has {count} decoder layers, got {top}")
    prefix, layers = stacks[0]
    wanted = None if targets == "all-linear" else set([targets] if isinstance(targets, str) else targets)
    names = [
        f"{prefix}.{index}.{name}"
        for index in range(count - top, count)
        for name, module in layers[index].named_modules()
        if isinstance(module, torch.nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted)
    ]
    if not names:
        raise ValueError(f"lora.top_layers: no module of {targets!r} in the top {top} layers")
    return names


class RunExistsError(FileExistsError):
    """The run folder already holds a run; resume it, or choose another name."""


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint of a run (``checkpoints/checkpoint-STEP``), if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(run_dir) / "checkpoints"
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def check_resumable(config: RunConfig, resume: bool, overwrite: bool = False) -> Path | None:
    """Decide how a run starts: the checkpoint to resume from, or None for a fresh start.

    A folder that already holds a run is never silently overwritten: without ``resume`` it is an error (unless
    ``overwrite``); with ``resume`` its saved settings must equal ``config``.
    """
    import yaml

    run_dir = config.run_dir
    state = read_state(run_dir)
    if not resume:
        if state is not None and not overwrite:
            raise RunExistsError(
                f"{run_dir} already holds a run ({state.get('status')}); use --resume to continue it, "
                "--overwrite to start again, or another name"
            )
        return None
    if state is None:
        return None
    saved = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else None
    if saved is not None and saved != yaml.safe_load(dump_config(config)):
        raise ConfigError(f"{run_dir}: the settings changed since this run started; resume with the same config")
    return last_checkpoint(run_dir)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the ``metrics.jsonl`` (and ``predictions.jsonl``) lines up to ``step`` (a resumed run writes the later
    ones again)."""
    import json

    for file in (path, path.with_name(PREDICTIONS_FILE)):
        if file.exists():
            lines = [line for line in read_jsonl_lines(file) if line.get("step", 0) <= step]
            atomic_write_text(file, "".join(json.dumps(line) + "\n" for line in lines))


@dataclass
class RunData:
    """A run's encoded (and, with packing, packed) rows, its data report and answer choices."""

    train_rows: Any
    eval_rows: Any
    report: dict[str, Any]
    answer_choices: list[str] | None
    packing_stats: dict[str, Any]
    generated: Any = None  # a plw.generation.GeneratedAccuracy with `eval_generated_accuracy`


def load_run_tokenizer(config: RunConfig) -> Any:
    """The run's tokenizer, with the config's chat template in place of its own."""
    from .models import load_tokenizer, resolve_model_path

    resolve_model_path(config.model, with_weights=False)  # a missing local path fails here, not after data work
    tokenizer = load_tokenizer(config.model)
    if config.chat_template:  # the run's template everywhere: rows, answer-choice ids, the saved tokenizer
        from .data.chat import read_template

        tokenizer.chat_template = read_template(config.chat_template)
    return tokenizer


def prepare_data(config: RunConfig, tokenizer: Any, train: bool = True) -> RunData:
    """Read, encode and (with packing) pack the train rows (when ``train``) and the eval rows."""
    train_rows, train_info, choices = prepare_rows(config, tokenizer, "train") if train else (None, None, None)
    eval_rows, eval_info = None, None
    if config.eval_data is not None:
        eval_rows, eval_info, eval_choices = prepare_rows(config, tokenizer, "eval")
        choices = choices or eval_choices
    answer_choices = config.answer_choices or choices
    generated = None
    if config.eval_generated_accuracy and eval_rows is not None:  # prompts taken before packing joins the rows
        from .generation import GeneratedAccuracy

        generated = GeneratedAccuracy.from_rows(
            eval_rows,
            tokenizer,
            max_new_tokens=config.eval_max_new_tokens,
            rule=config.eval_answer_rule,
            choices=[str(c) for c in answer_choices] if answer_choices else None,
            batch_size=config.eval_batch_size,
            stop_tokens=config.stop_tokens,
        )
    report: dict[str, Any] = {"train": train_info, "eval": eval_info}
    packing_stats: dict[str, Any] = {}
    if config.packing:
        from .data.packing import pack_datasets
        from .subsample import with_row_index

        if train_rows is not None and config.prompt_sample_rate < 1:  # the draw is keyed on the row: index first
            train_rows = with_row_index(train_rows)
        # Packed here, before the trainer exists, so the data report is written once and complete. The seed is
        # the trainer's data seed (training_arguments sets data_seed = seed).
        train_rows, eval_rows, packing_stats = pack_datasets(train_rows, eval_rows, config.max_length, config.seed)
        report["packing"] = {name: stats.as_dict() for name, stats in packing_stats.items()}
    return RunData(train_rows, eval_rows, report, answer_choices, packing_stats, generated)


def load_run_model(config: RunConfig, checkpoint: str | Path | None = None) -> Any:
    """The model a run starts from (with its adapter), or the weights of a saved checkpoint or model folder.

    The global RNGs are seeded first: the adapter's initialisation draws from them, and torch seeds them
    randomly in each process (the Trainer seeds them only after the adapter is made).
    """
    from transformers import set_seed

    from .models import load_model

    set_seed(config.seed)
    attn = config.attn_implementation
    if checkpoint is not None and (Path(checkpoint) / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(load_model(config.model, attn_implementation=attn), str(checkpoint))
    model = load_model(str(checkpoint) if checkpoint is not None else config.model, attn_implementation=attn)
    if config.lora and checkpoint is None:
        model = apply_lora(model, config.lora)
    return model


def make_trainer(
    config: RunConfig, model: Any, tokenizer: Any, data: RunData, args: Any, callbacks: list | None = None
) -> Any:
    """The :class:`~plw.trainer.PLWTrainer` of a run (also used, without train rows, by ``plw eval``)."""
    from .trainer import PLWTrainer

    return PLWTrainer(
        model=model,
        args=args,
        train_dataset=data.train_rows,
        eval_dataset=data.eval_rows,
        processing_class=tokenizer,
        prompt_loss_weight=config.prompt_loss_weight,
        answer_choices=data.answer_choices,
        template=config.template,
        loss_impl=config.loss_impl,
        loss_chunk_tokens=config.loss_chunk_tokens,
        packing=config.packing,
        max_length=config.max_length,
        nonfinite=config.nonfinite,
        completion_loss_weight=config.completion_loss_weight,
        loss_normalization=config.loss_normalization,
        prompt_sample_rate=config.prompt_sample_rate,
        generated_accuracy=data.generated,
        callbacks=callbacks,
    )


def can_share_untrained(config: RunConfig) -> bool:
    """Whether a run may take its step-0 evaluation from a shared one (``plw sweep``) instead of evaluating.

    Not with ``save_best`` or early stopping, whose bookkeeping starts at that evaluation.
    """
    return bool(config.eval_on_start and config.eval_data is not None) and not (
        config.save_best or config.early_stopping_patience
    )


def shared_untrained_lines(folder: Path, plw: float) -> tuple[dict, dict | None]:
    """The ``metrics.jsonl`` line (at PLW ``plw``) and ``predictions.jsonl`` line of a shared untrained evaluation."""
    lines = [line for line in read_jsonl_lines(Path(folder) / "metrics.jsonl") if line.get("plw") == plw]
    if not lines:
        raise ConfigError(f"{folder}: no untrained evaluation at PLW {plw}")
    predictions = read_jsonl_lines(Path(folder) / PREDICTIONS_FILE)
    return lines[-1], predictions[-1] if predictions else None


def train_run(
    config: RunConfig,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    untrained: str | Path | None = None,
) -> Path:
    """Train one run; return its folder. Everything is validated before the model is loaded.

    With ``resume``, a run that was interrupted continues from its last checkpoint (same data order and RNG state,
    so the metrics equal those of an uninterrupted run); a run without a checkpoint starts again. With
    ``untrained`` (a folder written by :func:`plw.evaluate.evaluate_untrained`), a fresh run takes its step-0
    evaluation from there instead of evaluating the same untrained model again.
    """
    from .distributed import is_main_process

    run_dir = config.run_dir
    main = is_main_process()  # under `accelerate launch`, only rank 0 writes files and prints
    checkpoint = check_resumable(config, resume, overwrite)
    tokenizer = load_run_tokenizer(config)
    data = prepare_data(config, tokenizer)
    train_info, eval_info = data.report["train"], data.report["eval"]
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
        atomic_write_json(run_dir / "data_report.json", data.report)
        print(f"[plw] train data: {_summary_line(train_info)}")
        if eval_info:
            print(f"[plw] eval data:  {_summary_line(eval_info)}")
        for name, stats in data.packing_stats.items():
            print(f"[plw] packing {name}: {stats.summary()}")

    model = load_run_model(config)
    args = training_arguments(config, run_dir)
    args.disable_tqdm = not progress
    if data.eval_rows is None:
        args.eval_strategy = "no"
        args.eval_on_start = False
        args.load_best_model_at_end = False
    metrics_path = run_dir / "metrics.jsonl"
    if checkpoint is not None:
        step = int(checkpoint.name.rsplit("-", 1)[-1])
        args.eval_on_start = False  # the step-0 evaluation is already in metrics.jsonl
        if main:
            truncate_metrics(metrics_path, step)
            print(f"[plw] resuming {run_dir} from {checkpoint.name}")
    elif main:
        metrics_path.unlink(missing_ok=True)  # a fresh start
        metrics_path.with_name(PREDICTIONS_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if checkpoint is None and untrained is not None and can_share_untrained(config):
        args.eval_on_start = False
        if main:
            line, predictions = shared_untrained_lines(Path(untrained), parse_plw(config.prompt_loss_weight).start)
            append_jsonl(metrics_path, line)
            if predictions:
                append_jsonl(metrics_path.with_name(PREDICTIONS_FILE), predictions)
            print(f"[plw] untrained evaluation: shared, from {untrained}")
    logger = MetricsJsonlCallback(metrics_path, lambda: trainer.current_plw(), lambda: trainer.last_row_outcomes)
    # transformers 5 reads the TensorBoard folder from the environment only.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb")
    trainer = make_trainer(config, model, tokenizer, data, args, callbacks=[logger.callback])
    if main:
        print(f"[plw] loss: {trainer.loss_path()}")
    if config.early_stopping_patience and data.eval_rows is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    if main:
        write_state(run_dir, "running")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException as err:
        if main:
            write_state(run_dir, "failed", error=f"{type(err).__name__}: {err}", step=trainer.state.global_step)
        raise
    if config.save_best and data.eval_rows is not None:
        trainer.save_model(str(run_dir / "best"))  # every process: FSDP / ZeRO-3 gather the weights together
        trainer.accelerator.wait_for_everyone()  # no process still reads a checkpoint when rank 0 removes them
        if main:
            tokenizer.save_pretrained(str(run_dir / "best"))
    if main:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # finished: nothing left to resume
    if main:
        lines = read_jsonl_lines(metrics_path)
        atomic_write_json(run_dir / "summary.json", summarize(lines))
        if lines:
            from .analysis import load_run
            from .plots import plot_run

            plot_run(load_run(run_dir), run_dir / "plots" / "losses.png")
        skipped = trainer.skipped_nonfinite_batches
        if skipped:
            print(f"[plw] skipped {skipped} micro-batch(es) with a non-finite loss (nonfinite: skip)")
        write_state(run_dir, "finished", step=trainer.state.global_step, skipped_nonfinite_batches=skipped)
    return run_dir


def rg_summary(rows: list[dict]) -> dict[str, float]:
    """Generation-ratio statistics of encoded rows (tokens as trained: template included)."""
    from .stats import summarize as rg_stats

    return rg_stats([sum(r["prompt_mask"]) for r in rows], [sum(r["completion_mask"]) for r in rows])


def write_state(run_dir: Path, status: str, **extra: Any) -> None:
    """``state.json``: running, finished, or failed (with the error), so a sweep knows what to rerun."""
    atomic_write_json(run_dir / "state.json", {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def read_state(run_dir: Path) -> dict[str, Any] | None:
    import json

    path = Path(run_dir) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _summary_line(info: dict[str, Any]) -> str:
    dropped = ", ".join(f"{n} {r}" for r, n in info["dropped"].items()) or "none dropped"
    eos = f", EOS appended to {info['eos_appended']} rows" if info.get("eos_appended") else ""
    return f"{info['source']}: {info['read']} read, {info['kept']} kept, {info['truncated']} truncated{eos}, {dropped}"
