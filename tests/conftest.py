"""Shared fixtures: the real SmolLM2 tokenizer (no weights) and tiny random LLaMA models built in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests (tests/test_properties.py): few examples in `make test`, many in `make test-slow`.
settings.register_profile("fast", max_examples=12, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile("fast")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tokenizer():
    import plw

    return plw.load_tokenizer("smollm2-135m-instruct")


def make_tiny_model(vocab_size: int, seed: int = 0, tie: bool = True, layers: int = 2):
    """A random LLaMA with hidden size 64: fast enough for exact fp32 comparisons."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tie,
        use_cache=False,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).float()
    model.config.use_cache = False
    return model


def save_tiny_model(folder, tokenizer, seed: int = 0):
    """Write a tiny random model and the tokenizer into ``folder``: a local model path for `plw train`."""
    make_tiny_model(len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model(tokenizer):
    return make_tiny_model(len(tokenizer))


def requires_shared_data(*parts: str):
    """Skip a test when ../shared/data (or a file under it) is absent, e.g. on a user's fresh clone."""
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"reference data not present at {path}")
