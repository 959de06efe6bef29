"""Posterior files: block layout, atomic writes, streaming merge, streaming reads (no sampling here)."""

import json
import os
import subprocess
import sys
import textwrap

import arviz
import netCDF4
import numpy as np
import pytest
import xarray as xr

from interplay.models import ModelSpec, param_shapes
from interplay.posterior_io import (
    GROUPS,
    merge_blocks,
    open_posterior,
    read_root_attrs,
    write_block,
)

RUN = {
    "name": "io-test",
    "model": {"hidden": [3], "activation": "relu", "bias": True, "likelihood": "mean_regr", "sigma": None},
    "prior": {"scale": [0.5, 2.0], "bias_scale": None, "bias": "flat", "log_sigma_scale": 0.7},
    "sampler": {"kind": "mile", "chains": 7, "block_size": 3, "seed": 11},
}
MODEL = ModelSpec.from_run(RUN, in_dim=2)
N_DRAW, N_TEST, N_DIAG = 5, 6, 2


def fake_block(chains, diverged=(), seed=0):
    """Arrays of one block in write_block's input format; chains listed in `diverged` get NaN draws."""
    rng = np.random.default_rng(seed)
    n = len(chains)
    draws = {name: rng.normal(size=(n, N_DRAW, *shape)) for name, shape in param_shapes(MODEL).items()}
    flags = np.array([c in diverged for c in chains])
    for leaf in draws.values():
        leaf[flags] = np.nan
    stats = {
        "step_size": rng.uniform(size=n), "L": rng.uniform(size=n), "energy_variance": rng.uniform(size=n),
        "diverged": flags, "warmstart_val_loss": rng.normal(size=n), "warmup_seconds": np.full(n, 1.5),
        "sampling_seconds": np.full(n, 2.5), "n_grad_evals": np.full(n, 100, np.int64),
    }
    predictive = {
        "log_pred_density": rng.normal(size=(n, N_TEST)), "pred_mean": rng.normal(size=(n, N_TEST)),
        "pit": rng.uniform(size=(n, N_TEST)), "pred_draws": rng.normal(size=(n, N_DRAW, N_DIAG)),
        "y_test": np.linspace(-1, 1, N_TEST),
    }
    return draws, stats, predictive


def write_fake(path, chains, diverged=(), seed=0):
    draws, stats, predictive = fake_block(chains, diverged, seed)
    write_block(path, draws, stats, predictive, model=MODEL, run=RUN, chains=chains,
                attrs={"versions": {"jax": "x"}, "git_commit": "abc", "device": "cpu", "block": seed})
    return draws, stats, predictive


def test_block_layout_follows_design(tmp_path):
    path = tmp_path / "block-0000.nc"
    draws, _, _ = write_fake(path, range(3, 6))
    groups = open_posterior(path)
    assert set(groups) == set(GROUPS)
    post = groups["posterior"]
    assert post["kernel_0"].dims == ("chain", "draw", "units_0", "units_1")
    assert post["bias_1"].dims == ("chain", "draw", "units_2")
    assert post["log_sigma"].dims == ("chain", "draw")
    assert all(post[v].dtype == np.float32 for v in post.data_vars)
    np.testing.assert_array_equal(post["chain"], [3, 4, 5])
    np.testing.assert_array_equal(post["kernel_1"], draws["kernel_1"].astype(np.float32))
    # Per-layer tau, flat biases carry no prior_scale, log_sigma its own scale.
    assert post["kernel_0"].attrs["prior_scale"] == 0.5 and post["kernel_1"].attrs["prior_scale"] == 2.0
    assert post["kernel_1"].attrs["layer"] == 1 and post["bias_0"].attrs["layer"] == 0
    assert "prior_scale" not in post["bias_0"].attrs
    assert post["log_sigma"].attrs["prior_scale"] == pytest.approx(0.7)
    assert groups["sample_stats"]["diverged"].dtype == np.int8
    pred = groups["predictive"]
    assert pred["pred_draws"].dims == ("chain", "draw", "diag_point")
    assert pred["y_test"].dims == ("test_point",)
    assert all(pred[v].dtype == np.float64 for v in pred.data_vars)
    attrs = read_root_attrs(path)
    assert attrs["run"] == "io-test" and attrs["seed"] == 11 and attrs["git_commit"] == "abc"
    assert attrs["config"] == json.loads(json.dumps(RUN)) and attrs["versions"] == {"jax": "x"}
    with netCDF4.Dataset(path) as nc:
        var = nc["posterior"]["kernel_0"]
        assert var.filters()["zlib"] and var.chunking()[0] == 3  # chunked by chain (= block size)


def test_write_block_rejects_bad_input(tmp_path):
    draws, stats, predictive = fake_block(range(2))
    with pytest.raises(ValueError, match="draws have leaves"):
        write_block(tmp_path / "b.nc", {"kernel_0": draws["kernel_0"]}, stats, predictive, model=MODEL,
                    run=RUN, chains=range(2))
    with pytest.raises(ValueError, match="sample_stats lack"):
        write_block(tmp_path / "b.nc", draws, {"L": stats["L"]}, predictive, model=MODEL, run=RUN,
                    chains=range(2))
    bad = {**predictive, "pit": predictive["pit"][:, :-1]}
    with pytest.raises(ValueError, match="test_point"):
        write_block(tmp_path / "b.nc", draws, stats, bad, model=MODEL, run=RUN, chains=range(2))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "block-0000.nc"
    write_fake(path, range(3), seed=1)
    before = path.read_bytes()

    def disk_full(self, key, value):
        raise OSError("No space left on device")

    monkeypatch.setattr(netCDF4.Variable, "__setitem__", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_fake(path, range(3), seed=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block-0000.nc"]


def test_killed_write_leaves_nothing_under_final_name(tmp_path):
    """SIGKILL in the middle of writing (after the first variable): no file under the final name."""
    path = tmp_path / "block-0000.nc"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import netCDF4
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_posterior_io import write_fake
        original, calls = netCDF4.Variable.__setitem__, []
        def killing(self, key, value):
            calls.append(1)
            if len(calls) == 8:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, key, value)
        netCDF4.Variable.__setitem__ = killing
        write_fake({str(path)!r}, range(3))
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == -9, result.stderr
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".block-0000.nc.tmp")]


def test_merge_equals_concatenation_of_blocks(tmp_path):
    paths = [tmp_path / f"block-{b:04d}.nc" for b in range(3)]
    for b, chains in enumerate([range(3), range(3, 6), range(6, 7)]):
        write_fake(paths[b], chains, seed=b)
    merged = tmp_path / "merged.nc"
    summary = merge_blocks(paths, merged)
    assert summary["blocks"] == 3 and summary["kept"] == 7 and summary["n_diverged_dropped"] == 0
    blocks = [open_posterior(p) for p in paths]
    result = open_posterior(merged)
    for group in GROUPS:
        expected = xr.concat([b[group] for b in blocks], dim="chain", data_vars="minimal", coords="minimal",
                             compat="equals", join="exact")
        xr.testing.assert_identical(result[group].drop_attrs(), expected.drop_attrs())
        for name in expected.data_vars:  # variable attrs (prior_scale, layer) carried over
            assert result[group][name].attrs == expected[name].attrs
    attrs = read_root_attrs(merged)
    assert attrs["blocks"] == 3 and attrs["n_diverged_dropped"] == 0 and attrs["run"] == "io-test"
    assert "block" not in attrs
    with netCDF4.Dataset(merged) as nc:
        var = nc["posterior"]["kernel_0"]
        assert var.filters()["zlib"] and var.chunking()[0] == 3


def test_merge_drops_and_counts_diverged_chains(tmp_path):
    paths = [tmp_path / "block-0000.nc", tmp_path / "block-0001.nc"]
    write_fake(paths[0], range(3), diverged=(1,), seed=0)
    write_fake(paths[1], range(3, 6), diverged=(3, 5), seed=1)
    merged = tmp_path / "merged.nc"
    log = tmp_path / "merge.log"
    summary = merge_blocks(paths, merged, log=log)
    assert summary["n_diverged_dropped"] == 3 and summary["dropped_chains"] == [1, 3, 5]
    assert read_root_attrs(merged)["n_diverged_dropped"] == 3
    assert "3 diverged chains dropped" in log.read_text()
    result = open_posterior(merged)
    np.testing.assert_array_equal(result["posterior"]["chain"], [0, 2, 4])
    np.testing.assert_array_equal(result["predictive"]["chain"], [0, 2, 4])
    assert not result["sample_stats"]["diverged"].any()
    assert np.isfinite(result["posterior"]["kernel_0"]).all()
    block_1 = open_posterior(paths[1])
    xr.testing.assert_equal(result["predictive"]["pit"].sel(chain=4),
                            block_1["predictive"]["pit"].sel(chain=4))

    kept_all = tmp_path / "kept.nc"
    summary = merge_blocks(paths, kept_all, drop_diverged=False)
    assert summary["n_diverged_dropped"] == 0 and summary["kept"] == 6
    assert int(open_posterior(kept_all)["sample_stats"]["diverged"].sum()) == 3


def test_merge_errors(tmp_path):
    a, b, c = (tmp_path / f"{n}.nc" for n in "abc")
    write_fake(a, range(2), diverged=(0, 1))
    write_fake(b, range(2, 4), diverged=(2, 3))
    with pytest.raises(RuntimeError, match="all 4 chains of 2 blocks diverged"):
        merge_blocks([a, b], tmp_path / "m.nc")
    write_fake(c, range(1, 3))
    with pytest.raises(ValueError, match=r"chains \[1\] appear in more than one block"):
        merge_blocks([a, c], tmp_path / "m.nc")
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        merge_blocks([a, tmp_path / "missing.nc"], tmp_path / "m.nc")
    other = ModelSpec.from_run({**RUN, "model": {**RUN["model"], "hidden": [4]}}, in_dim=2)
    draws = {k: np.zeros((2, N_DRAW, *s)) for k, s in param_shapes(other).items()}
    _, stats, predictive = fake_block(range(4, 6))
    write_block(tmp_path / "d.nc", draws, stats, predictive, model=other, run=RUN, chains=range(4, 6))
    with pytest.raises(ValueError, match="does not match"):
        merge_blocks([c, tmp_path / "d.nc"], tmp_path / "m.nc")
    assert not (tmp_path / "m.nc").exists()


def test_arviz_opens_merged_file(tmp_path):
    paths = [tmp_path / "block-0000.nc", tmp_path / "block-0001.nc"]
    write_fake(paths[0], range(3), seed=0)
    write_fake(paths[1], range(3, 5), seed=1)
    merge_blocks(paths, tmp_path / "merged.nc")
    idata = arviz.from_netcdf(tmp_path / "merged.nc")
    assert {"posterior", "sample_stats", "predictive"} <= set(idata.groups())
    assert idata.posterior.sizes["chain"] == 5 and idata.posterior.sizes["draw"] == N_DRAW
    # A standard ArviZ diagnostic runs on the merged posterior.
    assert arviz.rhat(idata, var_names=["log_sigma"])["log_sigma"].shape == ()


def test_an_all_diverged_block_is_dropped_and_only_a_run_without_chains_fails(tmp_path):
    healthy, doomed, also_doomed = (tmp_path / f"block-{b:04d}.nc" for b in range(3))
    write_fake(healthy, range(3), diverged=(1,), seed=0)  # no diverged_causes attr (an older block)
    draws, stats, predictive = fake_block(range(3, 5), diverged=(3, 4), seed=1)
    causes = {"3": "non-finite energies", "4": "non-finite energies, non-finite positions"}
    write_block(doomed, draws, stats, predictive, model=MODEL, run=RUN, chains=range(3, 5),
                attrs={"block": 1, "diverged_causes": causes})
    merged = tmp_path / "merged.nc"
    summary = merge_blocks([healthy, doomed], merged)
    assert summary["kept"] == 2 and summary["n_diverged_dropped"] == 3 and summary["dropped_chains"] == [1, 3, 4]
    np.testing.assert_array_equal(open_posterior(merged)["posterior"]["chain"], [0, 2])
    attrs = read_root_attrs(merged)
    assert attrs["n_diverged_dropped"] == 3
    assert attrs["diverged_causes"] == {"1": "cause not recorded", **causes}
    assert attrs["config"]["merge"] == {"drop_diverged": True}  # the merge settings it was made with

    write_fake(also_doomed, range(5, 7), diverged=(5, 6), seed=2)
    out = tmp_path / "none.nc"
    with pytest.raises(RuntimeError) as info:
        merge_blocks([doomed, also_doomed], out)
    message = str(info.value)
    assert "run 'io-test': no chain left to merge: all 4 chains of 2 blocks diverged" in message
    assert "block-0001.nc: chains [3, 4] (non-finite energies: 2, non-finite positions: 1)" in message
    assert "block-0002.nc: chains [5, 6] (cause not recorded: 2)" in message
    assert not out.exists()
    kept = merge_blocks([doomed, also_doomed], out, drop_diverged=False)  # asked to keep them: no failure
    assert kept["kept"] == 4 and read_root_attrs(out)["config"]["merge"] == {"drop_diverged": False}
