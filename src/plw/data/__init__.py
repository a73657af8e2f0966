"""Records -> token ids with prompt/completion masks -> batches."""

from .collate import PaddingCollator
from .encode import EncodeReport, RecordError, TooLongError, encode, encode_records, render, validate_record
from .messages import encode_messages
from .report import LoadReport
from .sources import LoadedRecords, load_records, open_records

__all__ = [
    "EncodeReport",
    "LoadReport",
    "LoadedRecords",
    "PaddingCollator",
    "RecordError",
    "TooLongError",
    "encode",
    "encode_messages",
    "encode_records",
    "load_records",
    "open_records",
    "render",
    "validate_record",
]
