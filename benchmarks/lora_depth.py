"""Training-step time of LoRA on every decoder layer vs on the top N only (``lora.top_layers``), on the CPU.

SmolLM2-135M-Instruct (30 layers), bf16 autocast where the CPU has it, one padded batch of the demo's rows (the
synthetic reading task, one fact per person, text answers, SmolLM2 chat template), forward and backward through
the model's own loss. The variants run in interleaved rounds so that other load hits each alike; each line is the
median of the rounds after the first (which pays one-off set-up), and its ratio to every layer.

    python benchmarks/lora_depth.py --top 30 10 5 --rounds 4 --threads 1

Speed is not the whole answer: on the demo's task the top 10 or 5 layers did not learn to read in the demo's
budget (docs/calibration.md, runs I and J).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, nargs="+", default=[30, 10, 5], help="adapted top layers per variant")
    parser.add_argument("--rows", type=int, default=8, help="rows in the batch (the demo: 8)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    import plw
    from plw.data.encode import encode
    from plw.data.synthetic import make_synthetic_mcqa
    from plw.runner import apply_lora, cpu_supports_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = plw.load_tokenizer("smollm2-135m-instruct")
    records = make_synthetic_mcqa(args.rows, seed=1, people=4, fillers=0, facts=1, answer="text")
    encoded = [encode(tokenizer, record)["input_ids"] for record in records]
    length = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([row + [pad] * (length - len(row)) for row in encoded])
    mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in encoded])
    labels = ids.masked_fill(mask == 0, -100)
    bf16 = cpu_supports_bf16()
    models = {
        top: apply_lora(plw.load_model("smollm2-135m-instruct"), {"r": 16, "alpha": 32, "top_layers": top})
        for top in args.top
    }
    print(f"{args.rows} rows padded to {length} tokens, bf16 autocast: {bf16}, threads: {torch.get_num_threads()}")
    seconds: dict[int, list[float]] = {top: [] for top in args.top}
    for _ in range(args.rounds):
        for top, model in models.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            seconds[top].append(time.perf_counter() - start)
    base = statistics.median(seconds[args.top[0]][1:])
    print(" top layers | seconds per step | vs first")
    for top, values in seconds.items():
        median = statistics.median(values[1:])
        print(f"{top:>11} | {median:>16.2f} | {median / base:>7.2f}x")


if __name__ == "__main__":
    main()
