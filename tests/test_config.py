"""Config loading and validation: every error names its key, before any model or data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from plw.config import ConfigError, RunConfig, apply_overrides, from_dict, load_config

ROOT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted([*ROOT_CONFIGS.glob("*.yaml"), *ROOT_CONFIGS.glob("spectrum/*.yaml")])
BASE = {"train_data": "train.jsonl"}


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT_CONFIGS)) for p in CONFIGS])
def test_every_shipped_config_loads_and_starts_with_its_command(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("plw " in first or "make " in first), first


def test_shipped_configs_exist():
    assert any(p.name == "demo.yaml" for p in CONFIGS)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**BASE, "prompt_los_weight": 0.1}, "unknown key 'prompt_los_weight' (did you mean 'prompt_loss_weight'?)"),
        ({**BASE, "prompt_loss_weight": 1.5}, "prompt_loss_weight must be in [0, 1]"),
        ({**BASE, "prompt_loss_weight": float("nan")}, "prompt_loss_weight must be in [0, 1]"),
        ({**BASE, "prompt_loss_weight": "lots"}, "prompt_loss_weight: 'lots' is not a number in [0, 1] or a schedule"),
        ({**BASE, "prompt_loss_weight": [0.1]}, "prompt_loss_weight: expected float/int/str/dict, got list"),
        ({**BASE, "loss_chunk_tokens": 0}, "loss_chunk_tokens: must be >= 1, got 0"),
        ({**BASE, "batch_size": 0}, "batch_size: must be >= 1"),
        ({**BASE, "batch_size": 2.5}, "batch_size: expected int"),
        ({**BASE, "epochs": True}, "epochs: expected float/int, got bool"),
        ({**BASE, "truncation": "cut"}, "truncation: expected one of drop, truncate_prompt_left"),
        ({**BASE, "lora": {"alpah": 8}}, "unknown key lora.alpah (did you mean 'alpha'?)"),
        ({**BASE, "lora": {"top_layers": 0}}, "lora.top_layers: must be >= 1 or absent, got 0"),
        ({**BASE, "metric_for_best_model": "accuracy"}, "metric_for_best_model: expected an eval_* metric"),
        ({}, "train_data: required"),
        ({**BASE, "packing": True, "attn_implementation": "flash_attention_1"}, "cannot keep packed rows apart"),
        ({**BASE, "early_stopping_patience": 2}, "early_stopping_patience needs save_best: true"),
        ({**BASE, "nonfinite": "ignore"}, "nonfinite: expected one of stop, skip"),
        ({**BASE, "plw_values": [1, 0.1, 2]}, "plw_values must be in [0, 1]"),
    ],
)
def test_config_errors_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        from_dict(values)
    assert message in str(err.value)


def test_overrides_are_parsed_as_yaml_not_code():
    values = apply_overrides(BASE, ["prompt_loss_weight=0.25", "lora.r=8", "name=__import__('os')", "report_to=[]"])
    config = from_dict(values)
    assert config.prompt_loss_weight == 0.25
    assert config.lora == {"r": 8}
    assert config.name == "__import__('os')"
    assert config.report_to == []
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(BASE, ["prompt_loss_weight"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/config.yaml")


def test_yaml_exponent_floats_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 5e-5 and 1e-3 as strings: float-typed keys must take them as the numbers they are.
    import yaml

    assert yaml.safe_load("learning_rate: 5e-5") == {"learning_rate": "5e-5"}  # the behaviour being worked around
    path = tmp_path / "c.yaml"
    path.write_text("train_data: train.jsonl\nlearning_rate: 5e-5\nweight_decay: 1e-3\nlora: {r: 4, dropout: 5e-2}\n")
    config = load_config(path, ["warmup=1e-1", "epochs=2e0"])
    assert (config.learning_rate, config.weight_decay, config.warmup, config.epochs) == (5e-5, 1e-3, 0.1, 2.0)
    assert config.lora["dropout"] == 0.05
    for key, message in (
        ("learning_rate=fast", "learning_rate: expected float/int, got str 'fast'"),
        ("batch_size=1e1", "batch_size: expected int, got str '1e1'"),  # integer keys stay integers
    ):
        with pytest.raises(ConfigError) as err:
            load_config(path, [key])
        assert str(err.value) == message and "\n" not in str(err.value)
