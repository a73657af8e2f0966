"""Records -> token ids with prompt/completion masks -> batches."""

from .chat import ChatOptions, chat_options
from .collate import PaddingCollator
from .encode import encode, encode_records, render, validate_record
from .errors import RecordError, TooLongError
from .messages import encode_messages
from .report import LoadReport
from .sources import LoadedRecords, load_records, open_records

__all__ = [
    "ChatOptions",
    "LoadReport",
    "LoadedRecords",
    "PaddingCollator",
    "RecordError",
    "TooLongError",
    "chat_options",
    "encode",
    "encode_messages",
    "encode_records",
    "load_records",
    "open_records",
    "render",
    "validate_record",
]
