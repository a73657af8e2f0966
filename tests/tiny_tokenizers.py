"""Tiny tokenizers of the kinds real chat models use, trained in-process in milliseconds with ``tokenizers``.

* ``bpe``: byte-level BPE (GPT-2, Llama-3, Qwen, SmolLM2): every byte is in the vocabulary;
* ``metaspace``: SentencePiece-like BPE with a Metaspace pre-tokenizer that prepends ``▁`` to the first piece only
  (Llama-2/Mistral/Gemma as converted by transformers today), with byte fallback;
* ``metaspace_always``: ``▁`` prepended to every piece between special tokens;
* ``legacy``: the older Llama conversion: a normalizer that prepends ``▁`` and turns spaces into ``▁``.

The template's special tokens are added as special tokens, as in the real tokenizers.
"""

from __future__ import annotations

import string

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

KINDS = ("bpe", "metaspace", "metaspace_always", "legacy")
TEXT = [
    "Hello world, what is 2 + 2? The answer is 4. Be brief and answer in one word.",
    "system user assistant tool function weather Paris city temperature call",
    "You are a helpful assistant. Name a colour. Blue, like the sky. Think step by step.",
    string.printable,
]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def tiny_tokenizer(
    kind: str,
    special_tokens: list[str] = (),
    bos: str | None = None,
    eos: str | None = None,
    extra_text: str = "",
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A trained tiny tokenizer of ``kind`` with ``special_tokens`` (BOS/EOS included) marked special."""
    specials = list(dict.fromkeys([t for t in [bos, eos, *special_tokens] if t]))
    corpus = TEXT + ([extra_text] if extra_text else [])
    if kind == "bpe":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
    elif kind in ("metaspace", "metaspace_always", "legacy"):
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        if kind == "legacy":
            tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
            tk.decoder = decoders.Sequence(
                [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
            )
        else:
            scheme = "first" if kind == "metaspace" else "always"
            tk.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme)
            tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme=scheme)])
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", *BYTES], show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tk.train_from_iterator(corpus, trainer)
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos)
    if kind != "bpe":
        tok.unk_token = "<unk>"
    tok.chat_template = chat_template
    return tok
