"""Run configuration: one typed dataclass, loaded from YAML plus ``--set key=value`` overrides, validated once.

Every field has a help text (shown by ``plw train --help-config``). Unknown keys, wrong types and values out of
range are errors that name the key, raised before any model or data is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .answers import ANSWER_RULES
from .chunked_loss import LOSS_IMPLS
from .data.encode import TEMPLATES, TRUNCATION_POLICIES
from .data.packing import PACKING_ATTENTION
from .roles import parse_role_weights
from .schedule import parse_plw, plw_values


class ConfigError(ValueError):
    """A configuration problem, named by key."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# Choices defined here (the other choice lists come from the modules that implement them).
NONFINITE_POLICIES = ("stop", "skip")
DEVICES = ("auto", "cpu", "cuda")

LAUNCHERS = ("local", "slurm", "submitit-local")
SLURM_KEYS = {
    "partition": str,
    "gpus_per_run": int,
    "cpus_per_run": int,
    "time_min": int,
    "account": str,
    "mem_gb": (int, float),
    "sbatch_lines": list,
}

LORA_KEYS = {
    "r": int,
    "alpha": (int, float),
    "dropout": (int, float),
    "target_modules": (list, str),
    "top_layers": int,
}


@dataclass
class RunConfig:
    """Everything one training run needs. YAML keys are the field names."""

    name: str = _f("run", "run name: results go to OUTPUT_DIR/NAME")
    output_dir: str = _f("runs", "parent folder of run folders")
    model: str = _f("smollm2-135m-instruct", "built-in name, Hugging Face id or local folder")
    train_data: Any = _f(None, "train records: a JSONL path or a data spec mapping (see plw.data.sources)")
    eval_data: Any = _f(None, "validation records, same forms as train_data")
    max_train_rows: int | None = _f(None, "use only the first N train records (after reading)")
    max_eval_rows: int | None = _f(None, "use only the first N validation records")
    template: str = _f("auto", "auto | chat | plain: how records become text (see plw.encode)")
    max_length: int = _f(512, "maximum tokens per row")
    truncation: str = _f("drop", "drop | truncate_prompt_left: what to do with rows longer than max_length")
    answer_choices: list | None = _f(None, "answer strings for choice accuracy, e.g. [A, B, C, D]; auto for MCQA")
    prompt_loss_weight: float | str | dict = _f(
        1.0, "weight of prompt tokens in [0, 1] (completion tokens weigh 1), or a schedule: '1->0:linear' or a mapping"
    )
    plw_values: list | None = _f(
        None, "values `plw sweep` trains, e.g. [1, 0.1, 0, '1->0:linear'] (overridden by --plw)"
    )
    # Chat templates (plw.data.chat): a template file, its options, the stop token and multi-turn training.
    chat_template: str | None = _f(
        None, "a Jinja chat template file that replaces the tokenizer's (e.g. a training one)"
    )
    chat_template_kwargs: dict | None = _f(
        None, "variables passed to the chat template, e.g. {enable_thinking: false, date_string: 1 Jan 2025}"
    )
    add_eos: str = _f("auto", "auto | always | never: append EOS to a completion (auto: when no stop token ends it)")
    multi_turn: str = _f("last", "last | expand: train the last assistant turn, or one row per assistant turn")
    stop_tokens: list | None = _f(
        None, "tokens (strings or ids) a completion may end with; default: the model's generation_config.json"
    )
    role_weights: dict | None = _f(
        None, "messages data: prompt weight per role {system, user, assistant, tool}, times plw (see plw.roles)"
    )
    # -- issue 16: completion weight, loss normalisation, prompt subsampling (checked by _check_loss_keys) --
    completion_loss_weight: float | str | dict = _f(
        1.0, "weight of completion tokens in [0, 1], or a schedule like prompt_loss_weight"
    )
    loss_normalization: str = _f(
        "weight", "weight: loss = sum(w*nll)/sum(w) | tokens: sum(w*nll)/count(w>0), over each optimizer step"
    )
    prompt_sample_rate: float = _f(
        1.0, "share q in (0, 1] of prompt targets scored per training step (weight w/q; evaluation stays exact)"
    )
    lora: dict | None = _f(
        None,
        "LoRA settings {r, alpha, dropout, target_modules, top_layers}; null for full fine-tuning",
        keys=LORA_KEYS,
    )
    epochs: float = _f(1.0, "training epochs")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float = _f(2e-4, "peak learning rate")
    lr_scheduler: str = _f("linear", "transformers scheduler name: linear, cosine, constant_with_warmup, ...")
    warmup: float = _f(0.0, "warm-up: steps (>= 1) or a fraction of all steps (< 1)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int = _f(4, "rows per micro-batch per process (bins of max_length tokens with packing)")
    eval_batch_size: int = _f(8, "rows per evaluation batch per process (bins with packing)")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    packing: bool = _f(False, "pack rows into bins of max_length tokens, rows kept apart (batch sizes count bins)")
    group_by_length: bool = _f(False, "padded batches of rows of similar length (without packing)")
    eval_steps: float = _f(0.25, "evaluate every N optimizer steps (>= 1) or every fraction of training (< 1)")
    eval_on_start: bool = _f(True, "evaluate once before the first step (the untrained baseline)")
    logging_steps: float = _f(1, "log the training loss every N steps")
    seed: int = _f(42, "seed for data order, initialisation and dropout")
    seeds: list | None = _f(
        None, "`plw sweep` repeats every PLW with each of these seeds, e.g. [1, 2, 3] (overridden by --seeds)"
    )
    # -- how `plw sweep` launches its runs (sweep-level keys: a run's own config.yaml holds their defaults) --
    jobs: int = _f(1, "`plw sweep`: runs trained at once, each in its own process (1: one after another, in-process)")
    gpus_per_run: int = _f(0, "`plw sweep --jobs`: GPUs per run (CUDA_VISIBLE_DEVICES); > 1 through accelerate launch")
    accelerate_config: str | None = _f(None, "`plw sweep`: accelerate config file for runs with gpus_per_run > 1")
    launcher: str = _f("local", "`plw sweep`: local (processes on this machine) | slurm | submitit-local (submitit)")
    slurm: dict | None = _f(
        None,
        "`plw sweep --launcher slurm`: {partition, gpus_per_run, cpus_per_run, time_min, account, sbatch_lines}",
        keys=SLURM_KEYS,
    )
    bf16: str | bool = _f("auto", "bf16 autocast: true, false, or auto (on when the CPU/GPU supports it)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory")
    loss_impl: str = _f(
        "chunked", "chunked: loss from hidden states, no B x N x V logits (default) | plain: full logits"
    )
    loss_chunk_tokens: int = _f(512, "chunked loss: targets projected to the vocabulary at a time (larger on GPUs)")
    eval_generated_accuracy: bool = _f(
        False, "each evaluation also generates greedy answers from the validation prompts (eval_generated_accuracy)"
    )
    eval_max_new_tokens: int = _f(32, "generated accuracy: at most this many new tokens per answer")
    eval_answer_rule: str = _f("auto", "generated accuracy: auto | whole | answer_line | gsm8k | choice (plw.answers)")
    metric_for_best_model: str = _f("eval_completion_loss", "metric that picks the best checkpoint")
    save_best: bool = _f(False, "keep the best checkpoint (adapter for LoRA) in the run folder")
    early_stopping_patience: int | None = _f(
        None, "stop after N evaluations without improving metric_for_best_model (needs save_best: true)"
    )
    report_to: list = _f(["tensorboard"], "logging integrations: tensorboard, wandb, mlflow, or [] for none")
    checkpoints: bool = _f(True, "save a resumable checkpoint at every evaluation (latest kept; removed when done)")
    nonfinite: str = _f("stop", "stop | skip: on a NaN/inf training loss, stop naming the step, or skip the batch")
    attn_implementation: str = _f("sdpa", "sdpa | eager | flash_attention_2 | flash_attention_3 | flex_attention")
    device: str = _f("auto", "auto | cpu | cuda")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Check values and relations between them; raise :class:`ConfigError` naming the key."""
        try:
            self.prompt_loss_weight = parse_plw(self.prompt_loss_weight).to_config()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.role_weights is not None:
            try:
                self.role_weights = parse_role_weights(self.role_weights).to_config()
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _check_loss_keys(self)
        if self.train_data is None:
            raise ConfigError("train_data: required (a JSONL path or a data spec)")
        _choice("template", self.template, TEMPLATES)
        _choice("truncation", self.truncation, TRUNCATION_POLICIES)
        _check_chat(self)
        _choice("device", self.device, DEVICES)
        _choice("loss_impl", self.loss_impl, LOSS_IMPLS)
        _choice("nonfinite", self.nonfinite, NONFINITE_POLICIES)
        if self.packing and self.attn_implementation not in PACKING_ATTENTION:
            raise ConfigError(
                f"packing: attn_implementation {self.attn_implementation!r} cannot keep packed rows apart "
                f"(it ignores position_ids); use one of {', '.join(PACKING_ATTENTION)} or packing: false"
            )
        if self.bf16 not in (True, False, "auto"):
            raise ConfigError(f"bf16: expected true, false or auto, got {self.bf16!r}")
        _choice("eval_answer_rule", self.eval_answer_rule, ANSWER_RULES)
        if self.eval_max_new_tokens < 1:
            raise ConfigError(f"eval_max_new_tokens: must be >= 1, got {self.eval_max_new_tokens}")
        for key in ("max_length", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "loss_chunk_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("max_train_rows", "max_eval_rows"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1 or null")
        for key in ("learning_rate", "epochs", "eval_steps", "logging_steps"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{key}: must be a positive number, got {value!r}")
        if self.warmup < 0:
            raise ConfigError(f"warmup: must be >= 0, got {self.warmup}")
        if not self.metric_for_best_model.startswith("eval_"):
            raise ConfigError(f"metric_for_best_model: expected an eval_* metric, got {self.metric_for_best_model!r}")
        if self.lora is not None:
            _check_mapping("lora", self.lora, LORA_KEYS)
            if self.lora.get("top_layers") is not None and self.lora["top_layers"] < 1:
                raise ConfigError(f"lora.top_layers: must be >= 1 or absent, got {self.lora['top_layers']}")
        if self.packing and self.group_by_length:
            raise ConfigError("group_by_length: only for padded batches; with packing: true there is no padding")
        if self.plw_values is not None:
            if not self.plw_values:
                raise ConfigError("plw_values: give at least one value")
            try:
                self.plw_values = plw_values(self.plw_values, "plw_values")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if self.seeds is not None:
            self.seeds = check_seeds(self.seeds, "seeds")
        _check_launch_keys(self)
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ConfigError("early_stopping_patience: must be >= 1 or null")
            if not self.save_best:
                raise ConfigError("early_stopping_patience needs save_best: true (it stops on the best checkpoint)")
        if "/" in self.name or self.name in ("", ".", ".."):
            raise ConfigError(f"name: must be a plain folder name, got {self.name!r}")
        return self


def check_seeds(values: Any, key: str) -> list[int]:
    """A list of distinct integer seeds, or a :class:`ConfigError` naming ``key``."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}: expected a non-empty list of integers, e.g. [1, 2, 3], got {values!r}")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{key}: seeds are integers >= 0, got {v!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}: each seed once, got {values}")
    return list(values)


def _check_launch_keys(config: RunConfig) -> None:
    """``jobs``, ``gpus_per_run``, ``launcher`` and ``slurm``: how ``plw sweep`` starts its runs."""
    if config.jobs < 1:
        raise ConfigError(f"jobs: must be >= 1, got {config.jobs}")
    if config.gpus_per_run < 0:
        raise ConfigError(f"gpus_per_run: must be >= 0, got {config.gpus_per_run}")
    _choice("launcher", config.launcher, LAUNCHERS)
    if config.slurm is not None:
        _check_mapping("slurm", config.slurm, SLURM_KEYS)


def _check_chat(config: RunConfig) -> None:
    """The chat-template keys: choices, a readable template file, options that plw does not set itself."""
    from .data.chat import ADD_EOS, MULTI_TURN, chat_options

    _choice("add_eos", config.add_eos, ADD_EOS)
    _choice("multi_turn", config.multi_turn, MULTI_TURN)
    from .data.stops import check_stop_tokens

    try:
        check_stop_tokens(config.stop_tokens)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        chat_options(config.chat_template, config.chat_template_kwargs)
    except (ValueError, OSError) as err:
        raise ConfigError(
            str(err) if str(err).startswith("chat_template") else f"chat_template_kwargs: {err}"
        ) from None


def _check_loss_keys(config: RunConfig) -> None:
    """completion_loss_weight, loss_normalization, prompt_sample_rate; some weight must be able to be > 0."""
    from .loss import check_normalization
    from .subsample import check_sample_rate

    try:
        completion = parse_plw(config.completion_loss_weight, "completion_loss_weight")
        check_normalization(config.loss_normalization)
        config.prompt_sample_rate = check_sample_rate(config.prompt_sample_rate)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    config.completion_loss_weight = completion.to_config()
    prompt = parse_plw(config.prompt_loss_weight)
    if max(completion.start, completion.end) == 0 and max(prompt.start, prompt.end) == 0:
        raise ConfigError("completion_loss_weight: 0 with prompt_loss_weight 0 leaves nothing to learn")


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {value!r}")


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_mapping(prefix: str, value: Any, schema: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(value).__name__}")
    for k, v in value.items():
        if k not in schema:
            raise ConfigError(f"unknown key {prefix}.{k}{_did_you_mean(k, schema)}")
        if isinstance(v, str) and float in _as_tuple(schema[k]) and str not in _as_tuple(schema[k]):
            v = value[k] = float_from_yaml_string(v)
        if not isinstance(v, schema[k]) or isinstance(v, bool):
            raise ConfigError(f"{prefix}.{k}: wrong type {type(v).__name__}")


def _as_tuple(types_: type | tuple[type, ...]) -> tuple[type, ...]:
    return types_ if isinstance(types_, tuple) else (types_,)


def _allowed_types(tp: Any) -> tuple[type, ...]:
    """Python types a YAML value may have for a field annotation (``Any`` -> anything)."""
    if tp is Any:
        return (object,)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(tp):
            out += _allowed_types(arg)
        return out
    if origin is not None:
        return (origin,)
    if tp is float:
        return (float, int)
    if tp is type(None):
        return (type(None),)
    return (tp,)


_HINTS: dict[str, Any] | None = None


def field_types() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(RunConfig)
    return _HINTS


def float_from_yaml_string(value: str) -> float | str:
    """``"5e-5"`` -> ``5e-05``: PyYAML (YAML 1.1) reads exponents without a dot as strings, so a float-typed key
    takes any string Python reads as a float; other strings are returned unchanged (and rejected by the caller)."""
    try:
        return float(value)
    except ValueError:
        return value


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig`; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a mapping of keys to values, got {type(values).__name__}")
    hints = field_types()
    values = dict(values)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key {key!r}{_did_you_mean(key, hints)}")
        allowed = _allowed_types(hints[key])
        if isinstance(value, str) and float in allowed and str not in allowed:
            value = values[key] = float_from_yaml_string(value)
        bool_ok = bool in allowed or object in allowed
        if not isinstance(value, allowed) or (isinstance(value, bool) and not bool_ok):
            names = "/".join(t.__name__ for t in allowed)
            raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    return RunConfig(**values).validate()


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"lora.r=16"`` -> ``(["lora", "r"], 16)``; the value is parsed as YAML (never evaluated as code)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {err}") from None
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys reach into mappings such as ``lora``)."""
    values = dict(values)
    for item in overrides:
        path, value = parse_override(item)
        target = values
        for part in path[:-1]:
            child = target.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a mapping")
            target[part] = dict(child)
            target = target[part]
        target[path[-1]] = value
    return values


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys to values")
    return values


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Read a YAML config, apply overrides, validate. Relative data paths are relative to the working folder."""
    values = read_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(values, overrides))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def config_help() -> str:
    """One line per key: name, default and help."""
    lines = []
    for f in dataclasses.fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<28} {str(default):<24} {f.metadata.get('help', '')}")
    return "\n".join(lines)
