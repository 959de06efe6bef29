"""The paper's protocol: shuffle with the data seed, standardise, split 70/10/20, NetCDF as in DESIGN.md."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from interplay.data import DATASETS, DataError, MalformedFile, load_split, prepare_split, split_sizes

# Split sizes of the paper (train, valid, test).
PAPER_SIZES = {
    "airfoil": (1052, 150, 301),
    "concrete": (721, 102, 207),
    "energy": (537, 77, 154),
    "bikesharing": (12165, 1738, 3476),
    "ionosphere": (245, 35, 71),
}


def write_table(path: Path, rows: np.ndarray) -> Path:
    path.write_text("".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(("dataset", "sizes"), sorted(PAPER_SIZES.items()))
def test_paper_split_sizes(dataset, sizes):
    assert split_sizes(DATASETS[dataset].n_rows) == sizes


def test_split_rule_truncates_float_products():
    assert split_sizes(1000) == (700, 99, 201)  # int(1000 * (0.7 + 0.1)) = int(799.99...) = 799
    assert split_sizes(10, (0.5, 0.25, 0.25)) == (5, 2, 3)
    with pytest.raises(ValueError, match="summing to 1"):
        split_sizes(10, (0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="three"):
        split_sizes(10, (0.7, 0.3))


@pytest.fixture(scope="module")
def prepared(mirror_dir, tmp_path_factory):
    """Every mirror table prepared once with seed 3 (full-data standardisation)."""
    out_dir = tmp_path_factory.mktemp("prepared")
    files = {}
    for dataset in DATASETS:
        files[dataset] = prepare_split(
            mirror_dir / f"{dataset}.data", out_dir / f"{dataset}.nc", dataset=dataset, seed=3
        )
    return files


@pytest.mark.mirror
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_prepared_mirror_table(dataset, prepared, mirror_dir):
    table = np.loadtxt(mirror_dir / f"{dataset}.data", ndmin=2)
    n_rows = table.shape[0]
    assert n_rows == DATASETS[dataset].n_rows
    order = np.random.default_rng(3).permutation(n_rows)
    sizes = split_sizes(n_rows)
    assert sizes == PAPER_SIZES.get(dataset, sizes) and sum(sizes) == n_rows

    with xr.open_dataset(prepared[dataset]) as ds:
        ds.load()
    np.testing.assert_array_equal(ds["row"].values, order)
    expected_split = ["train"] * sizes[0] + ["valid"] * sizes[1] + ["test"] * sizes[2]
    assert list(ds["split"].values) == expected_split

    # Full-data standardisation: mean 0, population std 1 (no column of these tables is constant).
    x = ds["x"].values
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(x.std(axis=0), 1, rtol=1e-10)
    # ... and it is the table, shuffled: undoing the standardisation gives the table's rows in order.
    np.testing.assert_allclose(
        x * ds["x_std"].values + ds["x_mean"].values, table[order, :-1], rtol=1e-12, atol=1e-12
    )

    y = ds["y"].values
    if DATASETS[dataset].task == "classification":
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        np.testing.assert_array_equal(y, table[order, -1].astype(np.int64))
        assert float(ds["y_mean"]) == 0 and float(ds["y_std"]) == 1
    else:
        assert y.dtype == np.float64
        np.testing.assert_allclose([y.mean(), y.std()], [0, 1], atol=1e-10)
        np.testing.assert_allclose(y * float(ds["y_std"]) + float(ds["y_mean"]), table[order, -1], rtol=1e-12)

    assert ds.attrs["dataset"] == dataset
    assert ds.attrs["task"] == DATASETS[dataset].task
    assert ds.attrs["seed"] == 3 and ds.attrs["standardise"] == "full"
    assert ds.attrs["table_sha256"] == DATASETS[dataset].table_sha256
    assert list(ds["feature"].values) == list(DATASETS[dataset].features)


@pytest.mark.mirror
def test_netcdf_layout(prepared):
    with xr.open_dataset(prepared["airfoil"]) as ds:
        assert ds["x"].dims == ("row", "feature") and ds["x"].dtype == np.float64
        assert ds["y"].dims == ("row",) and ds["split"].dims == ("row",)
        assert ds["x_mean"].dims == ("feature",) and ds["x_std"].dims == ("feature",)
        assert ds["y_mean"].dims == () and ds["y_std"].dims == ()
        assert ds["split"].dtype.kind in ("U", "O")


@pytest.mark.mirror
def test_load_split_returns_the_split_rows(prepared):
    with xr.open_dataset(prepared["concrete"]) as ds:
        x_all, y_all = ds["x"].values, ds["y"].values
    sizes = split_sizes(DATASETS["concrete"].n_rows)
    bounds = np.cumsum((0, *sizes))
    for name, start, stop in zip(("train", "valid", "test"), bounds[:-1], bounds[1:], strict=True):
        x, y = load_split(prepared["concrete"], name)
        np.testing.assert_array_equal(x, x_all[start:stop])
        np.testing.assert_array_equal(y, y_all[start:stop])
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(prepared["concrete"], "validation")


@pytest.mark.mirror
def test_train_only_standardisation(mirror_dir, tmp_path):
    path = prepare_split(
        mirror_dir / "yacht.data", tmp_path / "yacht.nc", dataset="yacht", seed=0, standardise="train"
    )
    x_train, y_train = load_split(path, "train")
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(x_train.std(axis=0), 1, rtol=1e-10)
    np.testing.assert_allclose([y_train.mean(), y_train.std()], [0, 1], atol=1e-10)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["standardise"] == "train"
        full_mean = ds["x"].values.mean(axis=0)
    assert np.abs(full_mean).max() > 1e-3  # the held-out rows are not centred too


@pytest.mark.mirror
@pytest.mark.parametrize("standardise", ["full", "train"])
def test_standardised_values_are_numpys_to_the_bit(mirror_dir, tmp_path, standardise):
    # The split is standardised with scikit-learn's StandardScaler: on every study table it gives exactly the
    # bytes of numpy's population standardisation over the fitted rows, (x - x.mean(0)) / x.std(0) for the
    # features and (y - y.mean()) / y.std() for a regression target.
    for dataset in sorted(DATASETS):
        table = np.loadtxt(mirror_dir / f"{dataset}.data", ndmin=2)
        path = prepare_split(mirror_dir / f"{dataset}.data", tmp_path / f"{dataset}-{standardise}.nc",
                             dataset=dataset, seed=5, standardise=standardise)
        shuffled = table[np.random.default_rng(5).permutation(len(table))]
        x, y = shuffled[:, :-1], shuffled[:, -1]
        fit = slice(None) if standardise == "full" else slice(0, split_sizes(len(table))[0])
        x_mean, x_std = x[fit].mean(axis=0), x[fit].std(axis=0)
        with xr.open_dataset(path) as ds:
            np.testing.assert_array_equal(ds["x"].values, (x - x_mean) / x_std, err_msg=dataset)
            np.testing.assert_array_equal(ds["x_mean"].values, x_mean, err_msg=dataset)
            np.testing.assert_array_equal(ds["x_std"].values, x_std, err_msg=dataset)
            if DATASETS[dataset].task == "regression":
                y_mean, y_std = y[fit].mean(), y[fit].std()
                np.testing.assert_array_equal(ds["y"].values, (y - y_mean) / y_std, err_msg=dataset)
                assert (float(ds["y_mean"]), float(ds["y_std"])) == (y_mean, y_std), dataset


def test_constant_columns_give_no_nan(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=40), np.full(40, 2.5), np.full(40, 7.0)])  # constant x and y
    table = write_table(tmp_path / "flat.data", rows)
    for standardise in ("full", "train"):
        path = prepare_split(
            table, tmp_path / f"flat-{standardise}.nc", dataset="flat", seed=1, standardise=standardise
        )
        with xr.open_dataset(path) as ds:
            assert np.isfinite(ds["x"].values).all() and np.isfinite(ds["y"].values).all()
            np.testing.assert_array_equal(ds["x"].values[:, 1], 0.0)
            np.testing.assert_array_equal(ds["y"].values, 0.0)
            assert float(ds["x_std"][1]) == 1.0 and float(ds["y_std"]) == 1.0
            assert list(ds["feature"].values) == ["x0", "x1"]


def test_seed_fixes_the_order(tmp_path):
    rows = np.arange(60, dtype=float).reshape(20, 3)
    rows[:, 2] = rows[:, 0] ** 2
    table = write_table(tmp_path / "t.data", rows)
    a = prepare_split(table, tmp_path / "a.nc", dataset="t", seed=5)
    b = prepare_split(table, tmp_path / "b.nc", dataset="t", seed=5)
    c = prepare_split(table, tmp_path / "c.nc", dataset="t", seed=6)
    with xr.open_dataset(a) as da, xr.open_dataset(b) as db, xr.open_dataset(c) as dc:
        xr.testing.assert_identical(da.load(), db.load())
        assert not np.array_equal(da["row"].values, dc["row"].values)
        assert sorted(da["row"].values) == list(range(20))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_classification_labels_must_be_integers(tmp_path):
    table = write_table(tmp_path / "c.data", np.array([[0.1, 0.0], [0.2, 1.5], [0.3, 1.0], [0.4, 0.0]] * 3))
    with pytest.raises(DataError, match="labels"):
        prepare_split(table, tmp_path / "c.nc", dataset="c", seed=0, task="classification")
    assert not (tmp_path / "c.nc").exists()


def test_bad_arguments_and_tables(tmp_path):
    table = write_table(tmp_path / "t.data", np.arange(40, dtype=float).reshape(20, 2))
    with pytest.raises(ValueError, match="standardise"):
        prepare_split(table, tmp_path / "o.nc", dataset="t", seed=0, standardise="none")
    with pytest.raises(ValueError, match="task"):
        prepare_split(table, tmp_path / "o.nc", dataset="t", seed=0, task="ranking")
    with pytest.raises(ValueError, match="seed"):
        prepare_split(table, tmp_path / "o.nc", dataset="t", seed=-1)
    bad = tmp_path / "bad.data"
    bad.write_text("1 2\n3 x\n")
    with pytest.raises(MalformedFile, match="bad.data"):
        prepare_split(bad, tmp_path / "o.nc", dataset="t", seed=0)
    assert not (tmp_path / "o.nc").exists()


def test_table_hash_attribute_is_the_input_files(tmp_path):
    table = write_table(tmp_path / "t.data", np.arange(40, dtype=float).reshape(20, 2) ** 1.5)
    path = prepare_split(table, tmp_path / "o.nc", dataset="t", seed=0)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["table_sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
        assert ds.attrs["task"] == "regression"
