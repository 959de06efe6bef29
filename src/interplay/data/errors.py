"""Errors of the data stage: every failure names the dataset, file or URL at fault."""

from __future__ import annotations


class DataError(Exception):
    """Any failure of the data stage (download, conversion, preparation)."""


class UnknownDataset(DataError, KeyError):
    """A dataset name that `DATASETS` does not list."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class SourceUnreachable(DataError):
    """A download source could not be reached after all attempts (network error, timeout, HTTP error)."""


class SourceMissing(DataError):
    """A download source answered, but holds no file for the dataset (HTTP 404, missing file or zip member)."""


class ChecksumError(DataError):
    """A converted table does not have its pinned sha256."""


class MalformedFile(DataError):
    """A downloaded file cannot be parsed (corrupted archive, non-numeric cell, wrong column count)."""
