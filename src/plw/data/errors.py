"""Errors of the data layer, in one module that imports nothing else of plw (so no data module imports in a cycle)."""

from __future__ import annotations


class RecordError(ValueError):
    """A record cannot be encoded; the message names the record (file and line, or index)."""


class TooLongError(RecordError):
    """The record does not fit ``max_length`` under the chosen truncation policy."""
