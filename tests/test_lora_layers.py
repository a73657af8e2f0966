"""``lora.top_layers``: adapters on the last N decoder layers only, checked against PEFT's own module selection."""

from __future__ import annotations

import pytest
import torch

from plw.runner import apply_lora, top_layer_targets

from .conftest import make_tiny_model

LAYERS = 4


def adapted(model) -> set[str]:
    """Names (inside the base model) of the modules that carry a LoRA adapter."""
    prefix = "base_model.model."
    return {name.removeprefix(prefix) for name, module in model.named_modules() if hasattr(module, "lora_A")}


def layer_of(name: str) -> int:
    return int(name.split(".layers.")[1].split(".")[0])


def test_top_layers_adapt_what_peft_all_linear_adapts_in_those_layers():
    everywhere = adapted(apply_lora(make_tiny_model(50, layers=LAYERS), {"r": 2, "target_modules": "all-linear"}))
    top = adapted(apply_lora(make_tiny_model(50, layers=LAYERS), {"r": 2, "top_layers": 2}))
    assert top == {name for name in everywhere if layer_of(name) >= LAYERS - 2}
    assert len(top) == 2 * 7  # q, k, v, o, gate, up, down in each of the two layers


def test_top_layers_with_named_targets():
    model = apply_lora(
        make_tiny_model(50, layers=LAYERS), {"r": 2, "target_modules": ["q_proj", "v_proj"], "top_layers": 1}
    )
    assert adapted(model) == {"model.layers.3.self_attn.q_proj", "model.layers.3.self_attn.v_proj"}


def test_no_backward_below_the_lowest_adapted_layer():
    """The reason for the option: the frozen layers below the adapters are left out of the backward pass."""
    seen = {}

    def record(index):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            seen[index] = hidden.requires_grad

        return hook

    for top, expected in ((LAYERS, [True] * LAYERS), (1, [False] * (LAYERS - 1) + [True])):
        seen.clear()
        model = apply_lora(make_tiny_model(50, layers=LAYERS), {"r": 2, "top_layers": top})
        for index, layer in enumerate(model.base_model.model.model.layers):
            layer.register_forward_hook(record(index))
        ids = torch.randint(0, 50, (2, 6))
        model(input_ids=ids, labels=ids).loss.backward()
        assert [seen[i] for i in range(LAYERS)] == expected


def test_top_layers_out_of_range():
    with pytest.raises(ValueError, match="4 decoder layers, got 5"):
        top_layer_targets(make_tiny_model(50, layers=LAYERS), 5, "all-linear")
    with pytest.raises(ValueError, match="no module"):
        top_layer_targets(make_tiny_model(50, layers=LAYERS), 1, ["not_a_module"])
