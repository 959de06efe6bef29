"""Data stage: download (UCI or a mirror) -> hash-verified study table -> prepared split (NetCDF).

See docs/DESIGN.md ("Prepared data") for the output layout.
"""

from interplay.data.convert import make_table, sha256_file
from interplay.data.download import download, resolve_mirror
from interplay.data.errors import (
    ChecksumError,
    DataError,
    MalformedFile,
    SourceMissing,
    SourceUnreachable,
    UnknownDataset,
)
from interplay.data.prepare import load_split, prepare_split, split_sizes
from interplay.data.sources import DATASETS, UCI_BASE_URL, DatasetSource
from interplay.data.teacher import make_teacher_student_table

__all__ = [
    "DATASETS",
    "UCI_BASE_URL",
    "ChecksumError",
    "DataError",
    "DatasetSource",
    "MalformedFile",
    "SourceMissing",
    "SourceUnreachable",
    "UnknownDataset",
    "download",
    "load_split",
    "make_table",
    "make_teacher_student_table",
    "prepare_split",
    "resolve_mirror",
    "sha256_file",
    "split_sizes",
]
