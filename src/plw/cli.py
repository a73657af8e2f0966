"""The ``plw`` command. Parsing and dispatch only; the work lives in importable functions.

Subcommands are listed in ``COMMANDS``: each maps a name to ``(add_arguments, run)``; ``run(args)`` returns an
exit code. Heavy imports (torch, transformers) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML run config (see --help-config for every key)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable; dotted keys reach into mappings, e.g. lora.r=16)",
    )
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last checkpoint (same config required)",
    )
    p.add_argument("--overwrite", action="store_true", help="start again in a folder that already holds a run")
    p.add_argument(
        "--untrained",
        metavar="DIR",
        help="take the step-0 evaluation from DIR (written by plw eval, at this run's PLW) instead of evaluating "
        "the same untrained model again; plw sweep passes its shared one",
    )


def _config_from(args: argparse.Namespace) -> object | None:
    """The validated run config of ``train``/``sweep``, or None after printing ``--help-config``."""
    from .config import config_help, load_config

    if args.help_config:
        print(config_help())
        return None
    if args.config is None and not args.overrides:
        raise CLIError("give a CONFIG.yaml (and/or --set key=value)")
    return load_config(args.config, args.overrides)


def _train(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config is None:
        return 0
    from .runner import train_run

    run_dir = train_run(
        config, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite, untrained=args.untrained
    )
    from .distributed import is_main_process

    if is_main_process():
        print(f"[plw] done: {run_dir}/metrics.jsonl, {run_dir}/summary.json")
    return 0


def _stop_tokens(value: str) -> list[str | int]:
    """``--stop-tokens``: comma-separated token strings; an item of digits only is a token id."""
    items = [t.strip() for t in value.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give at least one token or id")
    return [int(t) if t.isdigit() else t for t in items]


def _stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="a file, a folder, or a hub name NAME[:CONFIG]")
    p.add_argument("--tokenizer", help="count tokens with this tokenizer (a built-in name or a path); else words")
    p.add_argument("--template", choices=["chat", "plain"], help="how records are rendered (default: chat if any)")
    p.add_argument(
        "--format", choices=["prompt_completion", "messages", "race"], help="record format (default: detected)"
    )
    p.add_argument("--split", help="split of a hub dataset (default train) or of a RACE release folder")
    p.add_argument("--prompt-field", help="field holding the prompt")
    p.add_argument("--completion-field", help="field holding the completion")
    p.add_argument("--prompt-template", help="prompt built from fields, e.g. '{instruction}\\n\\n{input}'")
    p.add_argument("--out", help="write stats.csv, stats.json and rg_hist.png into this folder")
    p.add_argument("--chat-template", help="a Jinja chat template file replacing the tokenizer's (as chat_template)")
    p.add_argument("--add-eos", choices=["auto", "always", "never"], default="auto", help="as the add_eos key")
    p.add_argument("--multi-turn", choices=["last", "expand"], default="last", help="as the multi_turn key")
    p.add_argument(
        "--stop-tokens",
        type=_stop_tokens,
        help="comma-separated tokens or ids a completion may end with, e.g. '<|user|>,<|endoftext|>' (default: the "
        "eos_token_id of the model's generation_config.json, if any)",
    )
    p.add_argument("--num-proc", type=int, default=None, help="processes for tokenization (datasets.map)")
    p.add_argument("--strict", action="store_true", help="a bad row is an error instead of being counted and left out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _stats(args: argparse.Namespace) -> int:
    from .stats import run_stats

    try:
        run_stats(
            args.datasets,
            args.tokenizer,
            args.template,
            args.out,
            progress=not args.no_progress,
            chat_template=args.chat_template,
            add_eos=args.add_eos,
            multi_turn=args.multi_turn,
            stop_tokens=args.stop_tokens,
            format=args.format,
            split=args.split,
            num_proc=args.num_proc,
            strict=args.strict,
            prompt_field=args.prompt_field,
            completion_field=args.completion_field,
            prompt_template=args.prompt_template,
        )
    except ValueError as err:  # bad options or data (RecordError is a ValueError too)
        raise CLIError(str(err)) from err
    return 0


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument(
        "--plw",
        help="comma-separated prompt-loss-weights or schedules, e.g. 1,0.5,0.2,0.1,0.01,0 or '1,0,1->0:linear' "
        "(default: plw_values from the config, else 1,0.1,0)",
    )
    p.add_argument(
        "--seeds",
        help="comma-separated seeds, e.g. 1,2,3: every PLW is trained once per seed (data order, adapter init, "
        "dropout) into plw=VALUE/seed=S/ (default: seeds from the config, else one run per PLW)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="train N runs at once, each in its own process with cores // N threads (OMP_NUM_THREADS wins when "
        "set); a failed run is named in the report while the others finish (default: jobs from the config, 1)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=int,
        help="GPUs given to each run (CUDA_VISIBLE_DEVICES); > 1 starts the run with accelerate launch and the "
        "config's accelerate_config (default: gpus_per_run from the config, 0)",
    )
    p.add_argument(
        "--launcher",
        choices=["local", "slurm", "submitit-local"],
        help="local: processes on this machine (--jobs); slurm: one SLURM job per run through submitit (options "
        "under the slurm: key; pip install 'plw[slurm]'); submitit-local: the same through submitit's local "
        "executor (default: launcher from the config, local)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="with a submitit launcher: submit and return; the same command run later collects and reports",
    )


def _sweep(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config is None:
        return 0
    from .sweep import parse_plw_values, parse_seeds, run_sweep, sweep_command

    config = _with_launch_options(config, args)
    values = parse_plw_values(args.plw) if args.plw else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    command = sweep_command(args.config, args.overrides, values, seeds)
    from .sweep import SweepFailures

    try:
        report = run_sweep(
            config, values, progress=not args.no_progress, command=command, seeds=seeds, wait=not args.no_wait
        )
    except SweepFailures as err:
        print(f"plw sweep: {err}", file=sys.stderr)
        return 1
    if report is None:  # --no-wait: jobs still queued or running
        return 0
    from .distributed import is_main_process

    if is_main_process():
        print(f"[plw] sweep done. Report: {report}")
    return 0


def _with_launch_options(config: object, args: argparse.Namespace) -> object:
    """The config with ``--jobs`` / ``--gpus-per-run`` (when given) in place of its keys, validated."""
    import dataclasses

    given = {k: getattr(args, k) for k in ("jobs", "gpus_per_run", "launcher") if getattr(args, k, None) is not None}
    return dataclasses.replace(config, **given).validate() if given else config


def _eval_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="a saved model folder, LoRA adapter folder or Trainer checkpoint (default: the config's model, untrained)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where metrics.jsonl and predictions.jsonl go (default OUTPUT_DIR/NAME/eval)"
    )


def _eval(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config is None:
        return 0
    from .evaluate import evaluate

    out = evaluate(config, args.checkpoint, args.out, progress=not args.no_progress)
    from .distributed import is_main_process

    if is_main_process():
        print(f"[plw] evaluation: {out}/metrics.jsonl, {out}/predictions.jsonl")
    return 0


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders (metrics.jsonl) or sweep folders")


def _plot(args: argparse.Namespace) -> int:
    from .redraw import plot_paths

    for path in plot_paths(args.paths):
        print(f"[plw] wrote {path}")
    return 0


def _spectrum_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sweeps",
        nargs="+",
        metavar="SWEEP_DIR",
        help="sweep folders, one per dataset (plw=VALUE[/seed=S] run folders)",
    )
    p.add_argument(
        "--out",
        help="write spectrum.png, report.md and findings.json here (default: the sweep folders' common parent)",
    )
    p.add_argument(
        "--findings",
        metavar="FILE",
        help="also write findings.json to FILE (src/plw/spectrum_findings.json is the copy plw stats reads)",
    )


def _spectrum(args: argparse.Namespace) -> int:
    from .spectrum import spectrum_command, write_spectrum

    command = spectrum_command(args.sweeps, args.out, args.findings)
    try:
        report = write_spectrum(args.sweeps, args.out, command, args.findings)
    except ValueError as err:  # e.g. two sweep folders of the same name
        raise CLIError(str(err)) from err
    print(f"[plw] wrote {report}, {report.with_name('spectrum.png')}, {report.with_name('findings.json')}")
    if args.findings:
        print(f"[plw] wrote {args.findings}")
    return 0


def _lr_control_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER", help="the study folder: lr=X/plw=V/seed=S/ runs, each with heldout/")
    p.add_argument("--command", dest="reproduce", help="the command that reproduces the study, quoted in report.md")


def _lr_control(args: argparse.Namespace) -> int:
    from .lr_control import write_report

    try:
        report = write_report(args.folder, args.reproduce)
    except ValueError as err:
        raise CLIError(str(err)) from err
    print(f"[plw] wrote {report}, {report.with_name('findings.json')}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train one run from a YAML config", _train_args, _train),
    "sweep": ("train one run per prompt-loss-weight, then compare them (figures, report.md)", _sweep_args, _sweep),
    "eval": (
        "streamed split metrics and per-row outcomes of a model or checkpoint on the config's evaluation data",
        _eval_args,
        _eval,
    ),
    "plot": ("redraw the figures of run or sweep folders (and a sweep's report.md)", _plot_args, _plot),
    "stats": ("generation-ratio statistics (Rg) of datasets: table, stats.csv/json, histograms", _stats_args, _stats),
    "spectrum": (
        "set PLW sweeps of several datasets side by side by Rg: spectrum.png, report.md, findings.json",
        _spectrum_args,
        _spectrum,
    ),
    "lr-control": (
        "compare PLWs each at its own learning rate, chosen on selection rows: report.md, findings.json",
        _lr_control_args,
        _lr_control,
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plw", description="Instruction-tuning with a prompt-loss-weight.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from .config import ConfigError
    from .data.encode import RecordError
    from .models import ModelNotFoundError

    try:
        return COMMANDS[args.command][2](args)
    except (CLIError, ConfigError, RecordError, ModelNotFoundError, FileNotFoundError, FileExistsError) as err:
        print(f"plw {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
