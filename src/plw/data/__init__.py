"""Records -> token ids with prompt/completion masks -> batches."""

from .collate import PaddingCollator
from .encode import EncodeReport, RecordError, TooLongError, encode, encode_records, render, validate_record
from .jsonl import load_jsonl_records, read_jsonl

__all__ = [
    "EncodeReport",
    "PaddingCollator",
    "RecordError",
    "TooLongError",
    "encode",
    "encode_records",
    "load_jsonl_records",
    "read_jsonl",
    "render",
    "validate_record",
]
