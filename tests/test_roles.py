"""Role weights for conversations: hand-written per-token weights, per-role metrics against brute force, training."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from plw.data.collate import PaddingCollator
from plw.data.encode import encode_records
from plw.data.messages import ROLES
from plw.data.packing import PackedCollator
from plw.metrics import StreamingMetrics
from plw.roles import RoleWeights, RoleWeightsError, apply_role_weights, parse_role_weights
from tests.conftest import make_tiny_model

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another?"},
    {"role": "assistant", "content": "Blue."},
]
ROLE_WEIGHTS = {"system": 0.0, "user": [1.0, 0.5], "assistant": 0.25}
# The rendered turns written out by hand (SmolLM2's ChatML), with the weight each token of the turn must get:
# the user's latest prompt turn 1, the one before 0.5; the earlier assistant turn 0.25; the completion 1.
EXPECTED = [
    ("<|im_start|>system\nYou are terse.<|im_end|>\n", 0.0),
    ("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", 0.5),
    ("Red.<|im_end|>\n", 0.25),
    ("<|im_start|>user\nAnother?<|im_end|>\n<|im_start|>assistant\n", 1.0),
    ("Blue.<|im_end|>\n", 1.0),
]


def conversation_rows(tokenizer, role_weights=ROLE_WEIGHTS, n=1):
    records = [{"messages": CONVERSATION}]
    for i in range(1, n):
        turns = [dict(t) for t in CONVERSATION]
        turns[3]["content"] = f"Another one, number {i}?"
        turns[4]["content"] = ["Green.", "A shade of blue.", "Yellow."][i % 3]
        records.append({"messages": turns})
    rows, report = encode_records(tokenizer, records, max_length=256)
    assert report.kept == n
    apply_role_weights(rows, role_weights)
    return rows


def test_three_turn_conversation_gets_the_hand_written_token_weights(tokenizer):
    (row,) = conversation_rows(tokenizer)
    ids, weights, completion = [], [], []
    for i, (text, weight) in enumerate(EXPECTED):
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        weights += [weight] * len(seg)
        completion += [int(i == len(EXPECTED) - 1)] * len(seg)
    assert row["input_ids"] == ids
    assert row["role_weight"] == weights
    assert row["completion_mask"] == completion
    assert "turn_ids" not in row  # used to place turns, not carried into training
    # What the loss multiplies: plw * role weight on prompt tokens, 1 on the completion.
    from plw.loss import target_weights

    batch = PaddingCollator()([row])
    w = target_weights(batch["prompt_mask"], batch["completion_mask"], 0.4 * batch["role_weight"])
    expected = [0.4 * x if not c else 1.0 for x, c in zip(weights, completion, strict=True)]
    assert w[0].tolist() == pytest.approx(expected[1:])


def test_role_weights_are_validated():
    assert parse_role_weights({"user": 0.5}).weight("system") == 1.0  # roles left out weigh 1
    assert parse_role_weights({"user": [1, 0.2]}).weight("user", back=5) == 0.2  # the last entry repeats
    for bad, message in (
        ({"moderator": 1}, "unknown role"),
        ({"user": 1.5}, r"in \[0, 1\]"),
        ({"user": []}, "non-empty"),
        ([0.5], "mapping"),
    ):
        with pytest.raises(RoleWeightsError, match=message):
            parse_role_weights(bad)


def brute_force_metrics(logits, batch, plw):
    """Per-role mean NLL and the weighted loss, one target at a time."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    sums = {role: [0.0, 0] for role in ROLES}
    num = den = 0.0
    ids = batch["input_ids"]
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            p, c = int(batch["prompt_mask"][b, t]), int(batch["completion_mask"][b, t])
            if not (p or c):
                continue
            nll = -float(logp[b, t - 1, ids[b, t]])
            role = ROLES[int(batch["role_ids"][b, t])]
            sums[role][0] += nll
            sums[role][1] += 1
            w = plw * float(batch["role_weight"][b, t]) * p + c
            num += w * nll
            den += w
    out = {f"{role}_loss": s / n for role, (s, n) in sums.items() if n}
    out["weighted_loss"] = num / den
    return out


def test_per_role_metrics_equal_brute_force_padded_and_packed(tokenizer):
    rows = conversation_rows(tokenizer, n=3)
    model = make_tiny_model(len(tokenizer), seed=5).eval()
    padded = PaddingCollator(pad_token_id=tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits.float()
    expected = brute_force_metrics(logits, padded, plw=0.4)
    assert set(expected) == {"system_loss", "user_loss", "assistant_loss", "weighted_loss"}

    metrics = StreamingMetrics(0.4)
    metrics.update(logits, padded["input_ids"], padded["prompt_mask"], padded["completion_mask"], None,
                   role_ids=padded["role_ids"], role_weight=padded["role_weight"])  # fmt: skip
    got = metrics.compute()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key

    # The same rows packed into one flat sequence: role columns travel with the tokens, rows stay isolated.
    packed = PackedCollator()(rows)
    assert packed["role_weight"].dtype == torch.float32 and packed["role_ids"].shape == packed["input_ids"].shape
    with torch.no_grad():
        plogits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits.float()
    metrics = StreamingMetrics(0.4)
    metrics.update(plogits, packed["input_ids"], packed["prompt_mask"], packed["completion_mask"],
                   packed["position_ids"], role_ids=packed["role_ids"], role_weight=packed["role_weight"])  # fmt: skip
    got = metrics.compute()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


def test_train_on_conversations_with_role_weights(tokenizer, tmp_path):
    from plw.cli import main
    from tests.conftest import save_tiny_model

    data = tmp_path / "chats.jsonl"
    rows = []
    for i in range(12):
        turns = [dict(t) for t in CONVERSATION]
        turns[3]["content"] = f"And number {i}?"
        rows.append(json.dumps({"messages": turns}))
    data.write_text("\n".join(rows) + "\n")
    config = {
        "name": "chats",
        "output_dir": str(tmp_path / "runs"),
        "model": str(save_tiny_model(tmp_path / "model", tokenizer)),
        "train_data": str(data),
        "eval_data": str(data),
        "max_steps": 2,
        "batch_size": 2,
        "eval_steps": 1,
        "report_to": [],
        "bf16": False,
        "packing": True,
        "max_length": 256,
        "prompt_loss_weight": 0.5,
        "role_weights": ROLE_WEIGHTS,
    }
    path = tmp_path / "chats.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--no-progress"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "runs" / "chats" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        for role in ("system", "user", "assistant"):
            assert line[f"eval_{role}_loss"] > 0
        assert "eval_tool_loss" not in line  # no tool turns: left out, not reported as 0

    # Role weights on prompt/completion data are a configuration error, not silently ignored.
    config.update(name="pc", train_data={"source": "synthetic", "rows": 4}, eval_data=None)
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--no-progress"]) == 2


def role_weighted_gradient(tokenizer, rows, plw_value):
    """Gradient of sum(w * nll) / sum(w) with w = plw * role weight on prompt tokens, one row at a time."""
    model = make_tiny_model(len(tokenizer), seed=1)
    weights = [
        [
            plw_value * rw * p + c
            for rw, p, c in zip(r["role_weight"], r["prompt_mask"], r["completion_mask"], strict=True)
        ]
        for r in rows
    ]
    total_w = sum(sum(w[1:]) for w in weights)
    for row, w in zip(rows, weights, strict=True):
        ids = torch.tensor([row["input_ids"]])
        nll = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        ((torch.tensor(w[1:]) * nll).sum() / total_w).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_a_training_step_follows_the_role_weights(tokenizer, tmp_path):
    # One SGD step with lr 1 on conversations: the update is the gradient of the role-weighted loss, which differs
    # from the plain plw-weighted one (ROLE_WEIGHTS gives the system turn 0 and an older user turn 0.5).
    from tests.test_trainer import one_sgd_step

    rows = conversation_rows(tokenizer, n=3)
    update = one_sgd_step(tokenizer, rows, 0.5, batch=3, accumulation=1, tmp_path=tmp_path)
    ref = role_weighted_gradient(tokenizer, rows, 0.5)
    for name in ref:
        torch.testing.assert_close(update[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)


def test_role_weight_config_form_and_type_checks():
    assert parse_role_weights({"user": 0.5, "assistant": [1, 0.2]}).to_config() == {
        "user": 0.5,
        "assistant": [1.0, 0.2],
    }
    for bad in (True, "0.5", float("nan")):
        with pytest.raises(RoleWeightsError, match=r"numbers in \[0, 1\]"):
            parse_role_weights({"user": bad})


def test_a_role_weight_is_read_by_turn_position_from_the_latest():
    weights = parse_role_weights({"user": [1.0, 0.2]})
    assert weights.weight("user") == 1.0  # without a position: the latest turn
    assert [weights.weight("user", back=k) for k in range(4)] == [1.0, 0.2, 0.2, 0.2]
    assert RoleWeights().weight("user", back=3) == 1.0


def test_role_weight_errors_in_a_config_name_the_key():
    from plw.config import ConfigError, from_dict

    with pytest.raises(ConfigError) as err:
        from_dict({"train_data": "t.jsonl", "role_weights": {"moderator": 1}})
    assert str(err.value) == "role_weights: unknown role 'moderator'; roles are system, user, assistant, tool"


def pc_row():
    """A prompt/completion row as the encoder gives it: no role_ids, no turn_ids."""
    return {"input_ids": [5, 6, 7], "prompt_mask": [1, 1, 0], "completion_mask": [0, 0, 1]}


def conversation_row():
    """A conversation row: user turn 0, assistant turn 1 (the completion)."""
    return {
        "input_ids": [5, 6, 7, 8],
        "prompt_mask": [1, 1, 0, 0],
        "completion_mask": [0, 0, 1, 1],
        "role_ids": [1, 1, 2, 2],
        "turn_ids": [0, 0, 1, 1],
    }


@pytest.mark.parametrize("kinds", ["pc", "cp", "ccp", "pcc", "pcpc"])
def test_data_that_mixes_the_two_formats_is_refused(kinds):
    # With or without role weights, and wherever the prompt/completion rows are (first, last, between).
    for role_weights in (None, {"user": 0.5}):
        rows = [pc_row() if k == "p" else conversation_row() for k in kinds]
        with pytest.raises(RoleWeightsError) as err:
            apply_role_weights(rows, role_weights, "eval")
        assert str(err.value) == "eval_data: mixes messages records with prompt/completion records; use one format"


def test_conversations_get_role_weights_and_lose_turn_ids():
    rows = [conversation_row(), conversation_row()]
    apply_role_weights(rows, None)
    assert all("turn_ids" not in r and "role_weight" not in r for r in rows)
    rows = [conversation_row(), conversation_row()]
    apply_role_weights(rows, {"user": 0.5})
    assert [r["role_weight"] for r in rows] == [[0.5, 0.5, 1.0, 1.0]] * 2
    assert all("turn_ids" not in r for r in rows)
    rows = [pc_row(), pc_row()]
    apply_role_weights(rows, None)  # prompt/completion data without role weights: left as it is
    assert rows == [pc_row(), pc_row()]


def test_role_weights_on_prompt_completion_data_name_the_data():
    with pytest.raises(RoleWeightsError) as err:
        apply_role_weights([pc_row(), pc_row()], {"user": 0.5}, "eval")
    assert str(err.value) == "role_weights: eval_data has no messages records (role weights apply to conversations)"
