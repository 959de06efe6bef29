"""`data.split: authors`: the authors' row permutation, against the issue's known answer and against JAX
run with its pre-0.5 threefry semantics (`jax_threefry_partitionable` off)."""

import numpy as np
import pytest
import xarray as xr

from interplay import config as study_config
from interplay.data import prepare_split, split_sizes
from interplay.data.authors_split import (
    authors_permutation,
    key_from_seed,
    permutation,
    random_bits,
    split,
)

# Issue 12, part 5: with the authors' rng 42, the first ten test rows of airfoil (0-based rows of
# airfoil.data) and the split sizes.
AIRFOIL_ROWS = 1503
AIRFOIL_FIRST_TEST_ROWS = [560, 1037, 704, 876, 1169, 318, 69, 34, 195, 267]
AIRFOIL_SIZES = (1052, 150, 301)


def test_airfoil_known_answer():
    sizes = split_sizes(AIRFOIL_ROWS)
    assert sizes == AIRFOIL_SIZES
    order = authors_permutation(AIRFOIL_ROWS, 42)
    assert sorted(order.tolist()) == list(range(AIRFOIL_ROWS))
    first_test = sizes[0] + sizes[1]
    assert order[first_test:first_test + 10].tolist() == AIRFOIL_FIRST_TEST_ROWS


@pytest.mark.mirror
def test_prepared_authors_split_tests_on_the_papers_rows(mirror_dir, tmp_path):
    out = prepare_split(mirror_dir / "airfoil.data", tmp_path / "authors-42_std-full.nc", dataset="airfoil",
                        seed=42, split="authors")
    with xr.open_dataset(out) as ds:
        test = ds["split"].values == "test"
        assert [int((ds["split"].values == s).sum()) for s in ("train", "valid", "test")] == list(AIRFOIL_SIZES)
        assert ds["row"].values[test][:10].tolist() == AIRFOIL_FIRST_TEST_ROWS
        assert ds.attrs["split_order"] == "authors" and ds.attrs["seed"] == 42
        table = np.loadtxt(mirror_dir / "airfoil.data")
        y = ds["y"].values * float(ds["y_std"]) + float(ds["y_mean"])
        np.testing.assert_allclose(y[test][:10], table[AIRFOIL_FIRST_TEST_ROWS, -1], rtol=1e-12)


@pytest.fixture
def old_threefry():
    """JAX with the threefry semantics of JAX < 0.5 (the authors' 0.4.33), restored afterwards."""
    import jax

    previous = jax.config.jax_threefry_partitionable
    try:
        jax.config.update("jax_threefry_partitionable", False)
    except (AttributeError, KeyError) as error:  # a JAX that no longer has the flag
        pytest.skip(f"this JAX cannot run the old threefry semantics: {error}")
    yield jax
    jax.config.update("jax_threefry_partitionable", previous)


SEEDS = (0, 1, 42, 2**31 - 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_split_and_bits_are_jaxs(old_threefry, seed):
    jax = old_threefry
    key = jax.random.key(seed)
    np.testing.assert_array_equal(key_from_seed(seed), np.asarray(jax.random.key_data(key)))
    for num in (2, 3, 5):
        np.testing.assert_array_equal(split(key_from_seed(seed), num),
                                      np.asarray(jax.random.key_data(jax.random.split(key, num))))
    for n in (1, 2, 7, 1000):
        np.testing.assert_array_equal(random_bits(key_from_seed(seed), n),
                                      np.asarray(jax.random.bits(key, (n,), dtype=np.uint32)))


@pytest.mark.parametrize("n", [1, 2, 10, 1503, 1700, 17379])  # 1700 and more: two sorting rounds
def test_permutation_is_jaxs(old_threefry, n):
    jax = old_threefry
    for seed in (0, 42):
        expected = np.asarray(jax.random.permutation(jax.random.key(seed), jax.numpy.arange(n)))
        np.testing.assert_array_equal(permutation(key_from_seed(seed), n), expected)


@pytest.mark.parametrize("seed", [42, 0, 7])
def test_authors_key_chain_is_jaxs(old_threefry, seed):
    """The trainer hands its third key to the loader, which shuffles with its own second key; each key
    handed out is the second half of a split whose first half the stream keeps."""
    jax = old_threefry

    def draw(state):
        kept, handed_out = jax.random.split(state)
        return kept, handed_out

    trainer = jax.random.key(seed)
    trainer, _ = draw(trainer)  # ensemble / sampling / evaluation keys
    trainer, _ = draw(trainer)  # the chains' keys
    trainer, loader = draw(trainer)
    loader, _ = draw(loader)  # the loader's chain keys
    loader, shuffle = draw(loader)
    for n in (1030, 1503):
        expected = np.asarray(jax.random.permutation(shuffle, jax.numpy.arange(n)))
        np.testing.assert_array_equal(authors_permutation(n, seed), expected)


def test_config_split_authors_names_its_prepared_file():
    runs = study_config.resolve_runs({"runs": {"paper": {"dataset": "airfoil",
                                                         "data": {"split": "authors", "seed": 42}},
                                               "ours": {"dataset": "airfoil"}}})
    assert study_config.prepared_data_path(runs["paper"]) == "results/data/prepared/airfoil/authors-42_std-full.nc"
    assert study_config.prepared_data_path(runs["ours"]) == "results/data/prepared/airfoil/seed-0_std-full.nc"
    with pytest.raises(study_config.ConfigError, match=r"runs\.big\.data\.seed: .* below 2\^31"):
        study_config.resolve_runs({"runs": {"big": {"dataset": "airfoil",
                                                    "data": {"split": "authors", "seed": 2**31}}}})
    with pytest.raises(ValueError, match="rng must be an integer"):
        authors_permutation(10, -1)


def test_default_split_keeps_the_prepared_files_attrs(tmp_path):
    """The default split writes the attrs it always wrote (no `split_order`), so its files keep their bytes."""
    table = tmp_path / "t.data"
    table.write_text("".join(f"{i} {i * i % 7}\n" for i in range(20)))
    default = prepare_split(table, tmp_path / "a.nc", dataset="t", seed=1)
    explicit = prepare_split(table, tmp_path / "b.nc", dataset="t", seed=1, split="shuffle")
    with xr.open_dataset(default) as a, xr.open_dataset(explicit) as b:
        assert set(a.attrs) == {"dataset", "task", "seed", "standardise", "table_sha256", "fractions"}
        xr.testing.assert_identical(a, b)
    with pytest.raises(ValueError, match="split must be one of"):
        prepare_split(table, tmp_path / "c.nc", dataset="t", seed=1, split="paper")
