"""Researchers' own tables: a CSV or Parquet file declared in the study config's `datasets` section.

```yaml
datasets:
  mydata: {path: data/my.csv, target: y, task: regression, sha256: <sha256 of the file>}
```

`load_own_table` reads and checks the file (it exists; the target and feature columns are there, numeric
and finite; there are rows enough for the 70/10/20 split; classification labels are class indices; the
file has its pinned sha256), each failure a `DataError` naming the file and the column. The config
parser runs it for every declared data set before any job, and the `table` rule writes its result in
the study's table format (features in the declared order, target last, Python's shortest round-trip
float repr), which `prepare` then treats like any UCI table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interplay.data.atomic import write_bytes_atomic
from interplay.data.convert import sha256_file
from interplay.data.errors import ChecksumError, DataError, MalformedFile, SourceMissing
from interplay.data.numbers import format_rows

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
TASKS = ("regression", "classification")
# The smallest split `prepare` accepts: 2 training rows (a standardisation), 1 validation row (the warm
# start's early stopping), 1 test row (the predictive metrics).
MIN_SPLIT_ROWS = (2, 1, 1)


@dataclass(frozen=True)
class OwnDataset:
    """One entry of the config's `datasets` section (workflow/schemas/config.schema.yaml).

    `features` None: every column but the target, in file order. `format` None: from the file suffix.
    """

    name: str
    path: str
    target: str
    task: str = "regression"
    features: tuple[str, ...] | None = None
    sha256: str | None = None
    format: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: Mapping) -> OwnDataset:
        features = entry.get("features")
        return cls(
            name=name,
            path=str(entry["path"]),
            target=str(entry["target"]),
            task=str(entry.get("task", "regression")),
            features=None if features is None else tuple(str(f) for f in features),
            sha256=None if entry.get("sha256") is None else str(entry["sha256"]).lower(),
            format=entry.get("format"),
        )

    @property
    def where(self) -> str:
        """How messages name the entry: the config key and the file."""
        return f"datasets.{self.name} ({self.path})"

    @property
    def file_format(self) -> str:
        if self.format is not None:
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix not in FORMATS:
            raise MalformedFile(
                f"{self.where}: cannot tell the format from the suffix {suffix!r}; name the file "
                f"*.csv or *.parquet, or set datasets.{self.name}.format to one of {sorted(set(FORMATS.values()))}"
            )
        return FORMATS[suffix]


@dataclass(frozen=True)
class OwnTable:
    """A checked own data set: `values` (rows, features + target) float64, columns in that order."""

    dataset: OwnDataset
    columns: tuple[str, ...]
    values: np.ndarray
    sha256: str

    @property
    def features(self) -> tuple[str, ...]:
        return self.columns[:-1]

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])


def own_datasets(section: Mapping | None) -> dict[str, OwnDataset]:
    """The config's `datasets` section (already schema-validated) as `OwnDataset`s by name."""
    return {name: OwnDataset.from_config(name, entry) for name, entry in (section or {}).items()}


def read_frame(dataset: OwnDataset):
    """The file as a pandas DataFrame (CSV: header line, comma-separated; Parquet: via pyarrow)."""
    import pandas as pd

    path = Path(dataset.path)
    if not path.is_file():
        raise SourceMissing(f"{dataset.where}: the file {path} does not exist"
                            + (f" (working directory {Path.cwd()})" if not path.is_absolute() else ""))
    file_format = dataset.file_format
    try:
        if file_format == "csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MalformedFile(f"{dataset.where}: not a readable {file_format} table: {exc}") from None
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        raise MalformedFile(f"{dataset.where}: duplicate column name(s) {duplicated}")
    return frame


def select_columns(dataset: OwnDataset, found) -> tuple[str, ...]:
    """Feature columns then the target, checked against the file's columns `found`."""
    found = [str(c) for c in found]
    if dataset.target not in found:
        raise MalformedFile(
            f"{dataset.where}: no target column {dataset.target!r} (datasets.{dataset.name}.target); "
            f"the file has columns {found}"
        )
    if dataset.features is None:
        features = tuple(c for c in found if c != dataset.target)
    else:
        features = dataset.features
        missing = [c for c in features if c not in found]
        if missing:
            raise MalformedFile(
                f"{dataset.where}: no feature column(s) {missing} (datasets.{dataset.name}.features); "
                f"the file has columns {found}"
            )
        if dataset.target in features:
            raise MalformedFile(f"{dataset.where}: the target column {dataset.target!r} is also listed "
                                f"in datasets.{dataset.name}.features")
    if not features:
        raise MalformedFile(f"{dataset.where}: no feature columns besides the target {dataset.target!r}")
    return (*features, dataset.target)


def _row_name(dataset: OwnDataset, index: int) -> str:
    """A data row, 1-based; in a CSV file also its line (the header is line 1)."""
    if dataset.file_format == "csv":
        return f"row {index + 1} (line {index + 2})"
    return f"row {index + 1}"


def numeric_column(dataset: OwnDataset, frame, column: str) -> np.ndarray:
    """One column as finite float64 values, or MalformedFile naming the column and the first bad row."""
    import pandas as pd

    series = frame[column]
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        numbers = pd.to_numeric(series, errors="coerce")
        bad = (numbers.isna() & series.notna()) | series.map(lambda v: isinstance(v, (bool, np.bool_)))
        index = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
        raise MalformedFile(
            f"{dataset.where}: column {column!r} is not numeric ({series.dtype}): {_row_name(dataset, index)} "
            f"holds {series.iloc[index]!r}; encode categories as numbers first"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        what = "a missing value (NaN)" if np.isnan(values[index]) else f"the non-finite value {values[index]}"
        raise MalformedFile(
            f"{dataset.where}: column {column!r} has {int(bad.sum())} missing or non-finite value(s), first "
            f"{what} in {_row_name(dataset, index)}; drop or impute them first"
        )
    return values


def check_labels(dataset: OwnDataset, labels: np.ndarray) -> None:
    """Classification targets must be class indices 0, 1, ... (at least two classes)."""
    bad = (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise MalformedFile(
            f"{dataset.where}: target column {dataset.target!r} of a classification data set must hold class "
            f"indices 0, 1, ...: {_row_name(dataset, index)} holds {float(labels[index]):g}"
        )
    if np.unique(labels).size < 2:
        raise MalformedFile(f"{dataset.where}: target column {dataset.target!r} holds a single class")


def min_rows_for_split() -> int:
    """The fewest rows whose 70/10/20 split (`split_sizes`) meets `MIN_SPLIT_ROWS`."""
    from interplay.data.prepare import split_sizes

    n = sum(MIN_SPLIT_ROWS)
    while any(size < least for size, least in zip(split_sizes(n), MIN_SPLIT_ROWS, strict=True)):
        n += 1
    return n


def check_rows(dataset: OwnDataset, n_rows: int) -> None:
    from interplay.data.prepare import split_sizes

    sizes = split_sizes(n_rows)
    if any(size < least for size, least in zip(sizes, MIN_SPLIT_ROWS, strict=True)):
        raise DataError(
            f"{dataset.where}: {n_rows} rows are too few for the 70/10/20 split (train/valid/test = "
            f"{'/'.join(map(str, sizes))}); it needs at least {min_rows_for_split()} rows"
        )


def verify_sha256(dataset: OwnDataset) -> str:
    """The file's sha256; ChecksumError unless it is the pinned `datasets.<name>.sha256`."""
    actual = sha256_file(dataset.path)
    if dataset.sha256 is None:
        raise ChecksumError(
            f"{dataset.where}: no pinned hash; pin the file's content with datasets.{dataset.name}.sha256: {actual}"
        )
    if actual != dataset.sha256:
        raise ChecksumError(
            f"{dataset.where}: the file has sha256 {actual}, expected the pinned {dataset.sha256} "
            f"(datasets.{dataset.name}.sha256): the file changed; if that is intended, pin the new hash"
        )
    return actual


def _load(dataset: OwnDataset) -> OwnTable:
    if dataset.task not in TASKS:
        raise DataError(f"{dataset.where}: task must be one of {TASKS}, got {dataset.task!r}")
    frame = read_frame(dataset)
    columns = select_columns(dataset, frame.columns)
    check_rows(dataset, len(frame))
    values = np.column_stack([numeric_column(dataset, frame, c) for c in columns])
    if dataset.task == "classification":
        check_labels(dataset, values[:, -1])
    return OwnTable(dataset, columns, values, verify_sha256(dataset))


@functools.lru_cache(maxsize=16)
def _load_cached(dataset: OwnDataset, stamp: tuple[int, int]) -> OwnTable:
    return _load(dataset)


def load_own_table(dataset: OwnDataset) -> OwnTable:
    """The checked table of `dataset` (see the module doc); read once per process while the file's
    size and mtime stay the same (the config parser and the `table` job both call it)."""
    try:
        stat = Path(dataset.path).stat()
    except OSError:
        return _load(dataset)  # read_frame names the missing file
    return _load_cached(dataset, (stat.st_size, stat.st_mtime_ns))


def data_shape(table: OwnTable) -> dict[str, int]:
    """`in_dim` and `n` of a checked table, the keys `interplay.resources.data_shape` reads."""
    return {"in_dim": len(table.features), "n": table.n_rows}


def make_own_table(dataset: OwnDataset, out_path: str | Path) -> Path:
    """Write the checked table of `dataset` in the study format (space-separated, target last)."""
    table = load_own_table(dataset)
    data = format_rows(table.values.tolist(), "repr").encode("ascii")
    write_bytes_atomic(data, out_path)
    return Path(out_path)
