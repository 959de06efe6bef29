"""The paper's data protocol: shuffle with the data seed, standardise, split train/valid/test, write NetCDF."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from sklearn.preprocessing import StandardScaler

from interplay.data.atomic import atomic_path
from interplay.data.convert import sha256_file
from interplay.data.errors import DataError, MalformedFile
from interplay.data.sources import DATASETS

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
STANDARDISE = ("full", "train")
TASKS = ("regression", "classification")
# How rows are shuffled before the split: `shuffle` numpy's default_rng(seed).permutation (this pipeline),
# `authors` the permutation of the authors' loader for their `rng` = seed (`interplay.data.authors_split`).
SPLIT_ORDERS = ("shuffle", "authors")


def split_sizes(n_rows: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """Rows in train, valid, test.

    Rule of the authors' loader (MILE / bnn_interplay `get_splits`): the train split ends at
    int(n * f_train), the valid split at int(n * (f_train + f_valid)) -- truncation of the float
    products, with the fraction sum taken in floating point (0.7 + 0.1 = 0.7999999999999999); the test
    split takes the rest. This gives airfoil 1052/150/301, concrete 721/102/207, energy 537/77/154,
    bikesharing 12165/1738/3476, ionosphere 245/35/71.
    """
    f_train, f_valid, _ = _check_fractions(fractions)
    end_train = int(n_rows * f_train)
    end_valid = int(n_rows * (f_train + f_valid))
    return end_train, end_valid - end_train, n_rows - end_valid


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers (train, valid, test) summing to 1, got {fractions!r}"
        )
    return values


def _scaler(values: np.ndarray) -> StandardScaler:
    """scikit-learn's standardisation fitted to `values` (rows, columns): column means and population
    stds (ddof=0), std 1 for a constant column (standardising gives 0, not NaN). On every study table its
    numbers are bit-identical to numpy's ``(x - x.mean(0)) / x.std(0)`` (tests/test_data_prepare.py)."""
    return StandardScaler().fit(values)


def load_table(path: str | Path) -> np.ndarray:
    """A study-format table as a float64 array (rows, columns); target in the last column."""
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise MalformedFile(f"{path}: not a numeric table: {exc}") from exc
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise MalformedFile(
            f"{path}: a table needs at least one row and two columns, got shape {table.shape}"
        )
    if not np.isfinite(table).all():
        row, col = np.argwhere(~np.isfinite(table))[0]
        raise MalformedFile(f"{path}: line {row + 1}, column {col + 1}: non-finite value {table[row, col]}")
    return table


def row_order(n_rows: int, seed: int, split: str = "shuffle") -> np.ndarray:
    """The shuffled order of a table's rows (`SPLIT_ORDERS`): row ``order[i]`` of the table is row i of
    the prepared file, whose first rows are the train split, then valid, then test."""
    if split == "shuffle":
        return np.random.default_rng(int(seed)).permutation(n_rows)
    if split == "authors":
        from interplay.data.authors_split import authors_permutation

        return authors_permutation(n_rows, int(seed))
    raise ValueError(f"split must be one of {SPLIT_ORDERS}, got {split!r}")


def _feature_names(dataset: str, n_features: int) -> list[str]:
    source = DATASETS.get(dataset)
    if source is not None and len(source.features) == n_features:
        return list(source.features)
    return [f"x{i}" for i in range(n_features)]


def prepare_split(
    table_path: str | Path,
    out_path: str | Path,
    *,
    dataset: str,
    seed: int,
    standardise: str = "full",
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    task: str | None = None,
    split: str = "shuffle",
    feature_names: Sequence[str] | None = None,
    source: Mapping[str, str] | None = None,
) -> Path:
    """Shuffle the table's rows (`row_order`: default_rng(seed).permutation, or the authors' permutation
    with `split="authors"`), standardise, split in order; write NetCDF.

    standardise="full": X (and y for regression) use the mean and population std of all rows, as in the
    paper; "train": of the train split only (scikit-learn's StandardScaler). Classification labels stay integers. Layout: DESIGN.md,
    "Prepared data"; the `row` coordinate holds each row's index in the table. `feature_names` name the
    table's feature columns (default: the UCI data set's, else x0, x1, ...); `source` (an own data set's
    `path` and `sha256`) is recorded as the attrs `source` and `source_sha256`, a split other than
    "shuffle" as the attr `split_order`. An image data set's `table_path` is its decoded arrays
    (`interplay.data.images.prepare_image_split` does the work).
    """
    from interplay.data.images import IMAGE_DATASETS, prepare_image_split

    if dataset in IMAGE_DATASETS:  # decoded arrays (`table_path`): per-channel standardisation, the authors' sizes
        return prepare_image_split(table_path, out_path, dataset=dataset, seed=seed, standardise=standardise,
                                   split=split)
    if standardise not in STANDARDISE:
        raise ValueError(f"standardise must be one of {STANDARDISE}, got {standardise!r}")
    task = task or (DATASETS[dataset].task if dataset in DATASETS else "regression")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if split not in SPLIT_ORDERS:
        raise ValueError(f"split must be one of {SPLIT_ORDERS}, got {split!r}")
    out_path = Path(out_path)

    table = load_table(table_path)
    n_rows = table.shape[0]
    sizes = split_sizes(n_rows, fractions)
    if sizes[0] < 2:
        raise DataError(f"{dataset}: {n_rows} rows give only {sizes[0]} training rows; need at least 2")
    order = row_order(n_rows, int(seed), split)
    table = table[order]
    x, y = table[:, :-1], table[:, -1]
    features = list(feature_names) if feature_names is not None else _feature_names(dataset, x.shape[1])
    if len(features) != x.shape[1]:
        raise DataError(f"{dataset}: {table_path} has {x.shape[1]} feature columns, but {len(features)} "
                        f"feature names were given ({features})")
    split_of_row = np.repeat(np.array(SPLITS, dtype=object), sizes)
    fit_rows = slice(None) if standardise == "full" else slice(0, sizes[0])

    x_scaler = _scaler(x[fit_rows])
    x, x_mean, x_std = x_scaler.transform(x), x_scaler.mean_, x_scaler.scale_
    if task == "classification":
        if not np.all(y == np.round(y)) or y.min() < 0:
            raise DataError(f"{dataset}: classification labels must be non-negative integers in {table_path}")
        y_out, y_mean, y_std = y.astype(np.int64), 0.0, 1.0
    else:
        y_scaler = _scaler(y[fit_rows, None])
        y_out, y_mean, y_std = y_scaler.transform(y[:, None])[:, 0], float(y_scaler.mean_[0]), float(y_scaler.scale_[0])

    ds = xr.Dataset(
        {
            "x": (("row", "feature"), x.astype(np.float64)),
            "y": ("row", y_out),
            "split": ("row", split_of_row.astype(str)),
            "x_mean": ("feature", x_mean),
            "x_std": ("feature", x_std),
            "y_mean": ((), y_mean),
            "y_std": ((), y_std),
        },
        coords={"row": order.astype(np.int64), "feature": features},
        attrs={
            "dataset": dataset,
            "task": task,
            "seed": int(seed),
            "standardise": standardise,
            "table_sha256": sha256_file(table_path),
            "fractions": [float(f) for f in fractions],
            # only where they apply, so that the files of the default split keep their bytes (and
            # Snakemake's checksum of them spares the runs downstream)
            **({"split_order": split} if split != "shuffle" else {}),
            **({"source": str(source["path"]), "source_sha256": str(source["sha256"])} if source else {}),
        },
    )
    with atomic_path(out_path) as temp:
        ds.to_netcdf(temp, engine="netcdf4")
    log.info("%s: wrote %s (train/valid/test = %d/%d/%d)", dataset, out_path, *sizes)
    return out_path


def load_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) numpy arrays of one split ('train' | 'valid' | 'test') of a prepared file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with xr.open_dataset(path) as ds:
        mask = ds["split"].values == split
        return np.asarray(ds["x"].values[mask]), np.asarray(ds["y"].values[mask])


def prepared_provenance(path: str | Path) -> dict:
    """What a prepared file was made from, for the chain blocks' root attr `data`: its sha256, the data
    set, its table's sha256, seed, split order, standardisation and, for an own data set, the source
    file and its sha256."""
    with xr.open_dataset(path) as ds:
        attrs = dict(ds.attrs)
    keys = ("dataset", "table_sha256", "seed", "standardise", "source", "source_sha256")
    found = {key: attrs[key] for key in keys if key in attrs}
    found["seed"] = int(found["seed"]) if "seed" in found else None
    return {**found, "split_order": attrs.get("split_order", "shuffle"), "prepared_sha256": sha256_file(path)}
