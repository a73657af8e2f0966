"""The chunked loss against the plain path: the model's full logits fed to ``weighted_nll_sum``.

The plain path is itself pinned to brute force in ``test_loss.py``; here every chunked variant (fused gradient,
checkpointed module, the trainer's wiring) must give the same loss, the same gradients and the same streamed
metrics, while never saving ``B x N x V`` logits for the backward pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainingArguments

import plw
from plw.chunked_loss import (
    FinalHiddenCapture,
    check_head_output,
    chunked_weighted_nll_sum,
    linear_weighted_nll,
    loss_backend,
    output_head,
)
from plw.config import ConfigError, from_dict
from plw.data.collate import PaddingCollator
from plw.data.encode import encode
from plw.data.synthetic import make_synthetic_mcqa
from plw.loss import weighted_nll_sum
from plw.metrics import StreamingMetrics
from tests.conftest import make_tiny_model

RECORDS = [
    {"prompt": "Tell me about the sea. " * 4, "completion": "It is big and blue."},
    {"prompt": "Short?", "completion": "A much longer answer that goes on for a while, with detail."},
    {"prompt": "Which letter? A, B, C or D.", "completion": "C"},
]


def padded_batch(tokenizer):
    rows = [encode(tokenizer, r) for r in RECORDS]
    return PaddingCollator(pad_token_id=tokenizer.pad_token_id)(rows)


def packed_batch(tokenizer):
    """Two flat rows of two packed examples each, with position_ids restarting at every example."""
    rows = [encode(tokenizer, r) for r in RECORDS + RECORDS[:1]]
    out = {k: [] for k in ("input_ids", "prompt_mask", "completion_mask", "position_ids")}
    for a, b in ((rows[0], rows[1]), (rows[2], rows[3])):
        for key in ("input_ids", "prompt_mask", "completion_mask"):
            out[key].append(a[key] + b[key])
        out["position_ids"].append(list(range(len(a["input_ids"]))) + list(range(len(b["input_ids"]))))
    length = max(len(x) for x in out["input_ids"])
    batch = {}
    for key, values in out.items():
        fill = tokenizer.pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor([v + [fill] * (length - len(v)) for v in values])
    batch["attention_mask"] = (batch["prompt_mask"] + batch["completion_mask"]).clamp(max=1)
    return batch


def lora_model(vocab_size: int, on_head: bool):
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model(vocab_size, seed=4, tie=False)
    targets = ["q_proj", "v_proj"] + (["lm_head"] if on_head else [])
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False)
    return get_peft_model(model, config)


def build(kind: str, vocab_size: int):
    if kind == "tied":
        return make_tiny_model(vocab_size, seed=1, tie=True)
    if kind == "untied":
        return make_tiny_model(vocab_size, seed=2, tie=False)
    return lora_model(vocab_size, on_head=kind == "lora_head")


def model_inputs(batch):
    keys = ("input_ids", "attention_mask", "position_ids")
    return {k: batch[k] for k in keys if k in batch}


def plain_loss_and_grads(model, batch, plw_value):
    model.zero_grad()
    logits = model(**model_inputs(batch), use_cache=False).logits
    args = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], plw_value)
    total, weight = weighted_nll_sum(logits, *args, batch.get("position_ids"))
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return total.detach(), weight, grads


def chunked_loss_and_grads(model, batch, plw_value, chunk_tokens=64, backend="auto"):
    model.zero_grad()
    head = output_head(model)
    with FinalHiddenCapture(head) as cap:
        out = model(**model_inputs(batch), use_cache=False)
    assert out.logits.shape[1] == 1  # the model itself projected only one position
    args = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], plw_value)
    total, weight = chunked_weighted_nll_sum(
        cap.hidden, head, *args, batch.get("position_ids"), chunk_tokens=chunk_tokens, backend=backend
    )
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return total.detach(), weight, grads


def assert_same(a, b):
    loss_a, weight_a, grads_a = a
    loss_b, weight_b, grads_b = b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=0)
    torch.testing.assert_close(weight_a, weight_b, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        # rtol 1e-5, and an absolute floor of 1e-5 of the tensor's largest entry: the two paths add the same fp32
        # terms in a different order, so an entry 1000x smaller than the largest (a sum with cancellation) can
        # differ by a few ulps of the large terms. A wrong weight or a missed target is orders of magnitude more.
        scale = grads_b[name].abs().max().item()
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5 * scale + 1e-9, msg=name)


@pytest.mark.parametrize("kind", ["tied", "untied", "lora", "lora_head"])
@pytest.mark.parametrize("plw_value", [0.0, 0.1, 1.0])
def test_loss_and_gradients_equal_plain_path(tokenizer, kind, plw_value):
    model = build(kind, len(tokenizer))
    head = output_head(model)
    # LoRA on lm_head makes the head a module that only the checkpointed path can call; otherwise it is fused.
    assert loss_backend(head, "cpu") == ("checkpoint" if kind == "lora_head" else "fused")
    for batch in (padded_batch(tokenizer), packed_batch(tokenizer)):
        want = plain_loss_and_grads(model, batch, plw_value)
        got = chunked_loss_and_grads(model, batch, plw_value)
        assert_same(got, want)


@pytest.mark.parametrize("backend", ["fused", "checkpoint"])
def test_chunk_size_does_not_change_the_result(tokenizer, backend):
    model = make_tiny_model(len(tokenizer), seed=5, tie=True)
    batch = padded_batch(tokenizer)
    results = [chunked_loss_and_grads(model, batch, 0.1, chunk, backend) for chunk in (17, 64, 100_000)]
    for other in results[1:]:
        assert_same(other, results[0])


def test_zero_weight_targets_are_never_projected(tokenizer):
    """At plw=0 the head sees the completion targets only (plus the one position the model projects itself)."""
    model = make_tiny_model(len(tokenizer), seed=6, tie=False)
    batch = padded_batch(tokenizer)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    head = model.lm_head
    with FinalHiddenCapture(head) as cap:
        model(**model_inputs(batch), use_cache=False)
    args = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], 0.0)
    total, _ = chunked_weighted_nll_sum(cap.hidden, head, *args, chunk_tokens=4, backend="checkpoint")
    total.backward()  # the checkpointed backward projects the same chunks again
    handle.remove()
    completion_targets = int(batch["completion_mask"][:, 1:].sum())
    batch_size = batch["input_ids"].shape[0]
    assert seen[0] == (batch_size, 1, model.config.hidden_size)
    rows_projected = sum(s[0] for s in seen[1:])
    assert rows_projected == 2 * completion_targets
    assert max(s[0] for s in seen[1:]) <= 4


@pytest.mark.parametrize("backend", ["fused", "checkpoint"])
def test_no_logits_saved_for_backward(tokenizer, backend):
    """The plain path saves [B, N, V]-sized tensors for backward; the chunked path nothing beyond the weight."""
    model = make_tiny_model(len(tokenizer), seed=7, tie=False)
    batch = padded_batch(tokenizer)
    vocab, hidden_size = model.config.vocab_size, model.config.hidden_size
    targets = batch["input_ids"][:, 1:].numel()
    assert targets > 2 * hidden_size  # so that B x (N-1) x V is larger than the V x H weight
    head = output_head(model)
    with FinalHiddenCapture(head) as cap:
        model(**model_inputs(batch), use_cache=False)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        args = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], 1.0)
        total, _ = chunked_weighted_nll_sum(cap.hidden, head, *args, chunk_tokens=32, backend=backend)
    assert max(sizes) <= vocab * hidden_size
    total.backward()
    # The same check catches the plain path, so it can fail.
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(**model_inputs(batch), use_cache=False).logits
        weighted_nll_sum(logits, *args)
    assert max(sizes) >= targets * vocab


def test_bf16_autocast_keeps_the_loss_in_float32(tokenizer):
    model = make_tiny_model(len(tokenizer), seed=8, tie=True)
    batch = padded_batch(tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = plain_loss_and_grads(model, batch, 0.1)
        got = chunked_loss_and_grads(model, batch, 0.1)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=0)
    for name, grad in got[2].items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
        torch.testing.assert_close(grad.norm(), want[2][name].norm(), rtol=5e-2, atol=1e-6, msg=name)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def test_bf16_gradients_equal_the_plain_path_entry_by_entry(tokenizer):
    # Norms alone do not see a gradient whose rows are permuted; compare the entries, at bf16's precision.
    model = make_tiny_model(len(tokenizer), seed=8, tie=True)
    batch = padded_batch(tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = plain_loss_and_grads(model, batch, 0.1)
        got = chunked_loss_and_grads(model, batch, 0.1, chunk_tokens=16)
    for name, grad in got[2].items():
        assert relative_error(grad, want[2][name]) < 0.02, name
    # The fused kernel alone, several chunks, against autograd through F.cross_entropy under the same autocast.
    torch.manual_seed(0)
    head = nn.Linear(32, 300, bias=False)
    hidden = torch.randn(45, 32, requires_grad=True)
    targets = torch.randint(0, 300, (45,))
    weights = torch.rand(45) + 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = (weights * F.cross_entropy(head(hidden).float(), targets, reduction="none")).sum()
    ref_h, ref_w = torch.autograd.grad(ref, (hidden, head.weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = linear_weighted_nll(hidden, head, targets, weights, chunk_tokens=8, backend="fused")
    got_h, got_w = torch.autograd.grad(total, (hidden, head.weight))
    assert relative_error(got_h, ref_h) < 0.01 and relative_error(got_w, ref_w) < 0.01


def test_linear_weighted_nll_with_bias_against_cross_entropy():
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=True)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets, weights = torch.randint(0, 50, (23,)), torch.rand(23)
    want = (weights * nn.functional.cross_entropy(head(hidden), targets, reduction="none")).sum()
    want_grads = torch.autograd.grad(want, [hidden, head.weight, head.bias])
    with torch.no_grad():  # the evaluation path: no gradient work at all
        torch.testing.assert_close(linear_weighted_nll(hidden, head, targets, weights, 5), want, rtol=1e-5, atol=0)
    for backend in ("fused", "checkpoint"):
        got = linear_weighted_nll(hidden, head, targets, weights, chunk_tokens=5, backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
        for g, w in zip(torch.autograd.grad(got, [hidden, head.weight, head.bias]), want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["tied", "lora_head"])
def test_streamed_metrics_from_hidden_equal_full_logits(tokenizer, kind):
    records = make_synthetic_mcqa(10, seed=2, people=4, fillers=1) + RECORDS
    rows = [encode(tokenizer, r) for r in records]
    choice_ids = plw.choice_token_ids(tokenizer, ["A", "B", "C", "D"])
    model = build(kind, len(tokenizer)).eval()
    head = output_head(model)
    full = StreamingMetrics(0.1, choice_ids)
    chunked = StreamingMetrics(0.1, choice_ids, chunk_tokens=40)
    collate = PaddingCollator(pad_token_id=tokenizer.pad_token_id)
    batches = [collate(rows[i : i + 4]) for i in range(0, len(rows), 4)] + [packed_batch(tokenizer)]
    with torch.no_grad():
        for batch in batches:
            masks = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], batch.get("position_ids"))
            full.update(model(**model_inputs(batch)).logits, *masks)
            with FinalHiddenCapture(head) as cap:
                model(**model_inputs(batch))
            chunked.update_from_hidden(cap.hidden, head, *masks)
    want, got = full.compute(), chunked.compute()
    assert want["answer_rows"] >= 10 and "choice_accuracy" in want
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key


# ---- model checks ------------------------------------------------------------------------------------------------


class SoftcappedLM(nn.Module):
    """A toy causal LM that soft-caps its logits after the head, as Gemma 2 does."""

    def __init__(self, vocab=20, hidden=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.tanh(self.lm_head(self.embed(input_ids)) / 0.5) * 0.5})()


def test_logit_softcapping_is_detected():
    model = SoftcappedLM()
    nn.init.normal_(model.lm_head.weight, std=3.0)
    ids = torch.randint(0, 20, (2, 6))
    with FinalHiddenCapture(model.lm_head) as cap:
        out = model(ids)
    with pytest.raises(RuntimeError, match="loss_impl='plain'"):
        check_head_output(out.logits, cap.hidden, model.lm_head)


def test_capture_fails_loudly_when_the_head_is_bypassed():
    model = SoftcappedLM()
    with pytest.raises(RuntimeError, match="never called its output embedding"):
        with FinalHiddenCapture(model.lm_head):
            model.embed(torch.zeros(1, 3, dtype=torch.long))  # a forward that never reaches the head


# ---- trainer and config ------------------------------------------------------------------------------------------


def one_step_and_eval(tokenizer, rows, loss_impl, tmp_path):
    model = lora_model(len(tokenizer), on_head=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / loss_impl),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = plw.PLWTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=rows,
        processing_class=tokenizer,
        prompt_loss_weight=0.1,
        answer_choices=["A", "B", "C", "D"],
        loss_impl=loss_impl,
    )
    trainer.train()
    update = {n: before[n] - p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return update, trainer.evaluate(), trainer.loss_path()


def test_trainer_chunked_equals_plain_with_lora_on_the_head(tokenizer, tmp_path):
    rows = [encode(tokenizer, r) for r in make_synthetic_mcqa(4, seed=9, people=4, fillers=0)]
    plain_update, plain_eval, plain_path = one_step_and_eval(tokenizer, rows, "plain", tmp_path)
    chunked_update, chunked_eval, chunked_path = one_step_and_eval(tokenizer, rows, "chunked", tmp_path)
    assert plain_path.startswith("plain") and "recomputed in backward" in chunked_path
    for name, value in plain_update.items():
        torch.testing.assert_close(chunked_update[name], value, rtol=1e-5, atol=1e-7, msg=name)
    for key, value in plain_eval.items():
        if key.startswith("eval_") and "runtime" not in key and "per_second" not in key:
            assert chunked_eval[key] == pytest.approx(value, rel=1e-5), key


def test_loss_impl_switch_is_validated(tiny_model, tmp_path):
    assert from_dict({"train_data": "x.jsonl"}).loss_impl == "chunked"
    assert from_dict({"train_data": "x.jsonl", "loss_impl": "plain"}).loss_impl == "plain"
    with pytest.raises(ConfigError, match="loss_impl"):
        from_dict({"train_data": "x.jsonl", "loss_impl": "fast"})
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="loss_impl"):
        plw.PLWTrainer(model=tiny_model, args=args, loss_impl="fast")
    trainer = plw.PLWTrainer(model=tiny_model, args=args)
    assert trainer.loss_impl == "chunked" and "fused" in trainer.loss_path()


def test_softmax_nll_is_stable_per_row():
    # Each row is shifted by its own maximum: a row whose logits sit 1000 below another's still gets its NLL (a shift
    # by the chunk's maximum would underflow it to exp(-1000) = 0 and return infinity).
    from plw.chunked_loss import _softmax_nll_

    logits = torch.tensor([[0.0, 1.0, 2.0], [-1000.0, -999.0, -998.0], [500.0, 499.0, 498.0]])
    targets = torch.tensor([0, 2, 1])
    want = F.cross_entropy(logits, targets, reduction="none")
    got = _softmax_nll_(logits.clone(), targets)
    torch.testing.assert_close(got, want)


def test_describe_backend_names_each_path():
    from plw.chunked_loss import describe_backend

    assert describe_backend("fused", 64) == (
        "chunked loss, fused linear+NLL gradient, 64 targets per chunk, zero-weight targets skipped"
    )
    assert describe_backend("checkpoint") == (
        "chunked loss, output projection recomputed in backward (checkpointed), 512 targets per chunk, zero-weight "
        "targets skipped"
    )
    assert describe_backend("cce") == "chunked loss via cut-cross-entropy (CUDA kernel), zero-weight targets skipped"


def test_output_head_unwraps_module_wrappers_and_refuses_a_model_without_one():
    model = SoftcappedLM()

    class Wrapper(nn.Module):  # how DDP and DeepSpeed engines hold the model
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert output_head(Wrapper(Wrapper(model))) is model.lm_head
    with pytest.raises(
        ValueError, match=r"^Linear has no output embedding module \(get_output_embeddings\(\) returned"
    ):
        output_head(nn.Linear(2, 2))


class PlainLM(SoftcappedLM):
    """The same toy LM without the soft-capping: its logits are the head's output."""

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.lm_head(self.embed(input_ids))})()


def test_capture_records_the_head_output_and_ignores_other_calls():
    plain = PlainLM()
    ids = torch.randint(0, 20, (2, 6))
    with FinalHiddenCapture(plain.lm_head) as cap:
        out = plain(ids)
    assert torch.equal(cap.head_output, out.logits)  # what check_head_output compares under autocast
    assert out.logits.shape == (2, 1, 20) and cap.hidden.shape == (2, 6, 8)
    # A call with [tokens, hidden] (not [batch, tokens, hidden]) is left alone, so the capture reports failure.
    with pytest.raises(RuntimeError, match="never called its output embedding"):
        with FinalHiddenCapture(plain.lm_head):
            assert plain.lm_head(torch.randn(6, 8)).shape == (6, 20)


def test_head_check_is_skipped_only_under_active_dropout():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    for p, training, checked in ((0.1, True, False), (0.0, True, True), (0.1, False, True)):
        head = nn.Sequential(nn.Dropout(p), nn.Linear(8, 20)).train(training)
        with torch.no_grad():
            logits = head[1](hidden[:, -1:])
        assert check_head_output(logits, hidden, head) is checked, (p, training)


def test_backend_choice_reaches_the_computation():
    # Which path ran is visible in the autograd graph: the fused function, or checkpointed chunks summed.
    torch.manual_seed(0)
    head = nn.Linear(8, 30, bias=False)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets, weights = torch.randint(0, 30, (10,)), torch.rand(10)

    def path(**kwargs):
        return type(linear_weighted_nll(hidden, head, targets, weights, chunk_tokens=4, **kwargs).grad_fn).__name__

    assert "FusedLinearWeightedNLL" in path() and "FusedLinearWeightedNLL" in path(backend="fused")
    assert "Fused" not in path(backend="checkpoint")
    ids = torch.randint(0, 30, (2, 6))
    masks = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2), torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    total, _ = chunked_weighted_nll_sum(
        torch.randn(2, 6, 8, requires_grad=True), head, ids, *masks, 0.5, backend="checkpoint"
    )
    assert "Fused" not in type(total.grad_fn).__name__
    with pytest.raises(ValueError, match="backend must be one of auto, fused, checkpoint, cce, got 'bogus'"):
        loss_backend(head, "cpu", "bogus")
