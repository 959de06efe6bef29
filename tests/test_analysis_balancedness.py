"""Balancedness (Theorem 2) against draws whose expectations are known exactly.

Exact prior draws satisfy the Stein identity of the rescaling symmetry (the prior is a posterior
with a constant, hence invariant, likelihood), so the estimates must sit within a few standard
errors of d_l - d_{l+1}; inflated draws (a wrong sampler) must be flagged.
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from interplay.analysis import analyse_balancedness, balancedness_table, run_verdict
from interplay.analysis.balancedness import neuron_terms, pair_terms
from interplay.testing.posteriors import layer_widths, make_run, prior_draws, prior_scales, write_posterior

WIDTHS = layer_widths(3, [6, 5], 2)
SCALE = [1.0, 0.5, 2.0]


def _prior_file(tmp_path, *, seed=0, chains=40, draws=150, inflate=None, autocorrelation=0.0, name="prior"):
    run = make_run(name, hidden=WIDTHS[1:-1], scale=SCALE, bias_scale=0.7, chains=chains)
    scales = prior_scales(WIDTHS, SCALE, 0.7)
    params = prior_draws(np.random.default_rng(seed), WIDTHS, scales, chains, draws, inflate=inflate,
                         autocorrelation=autocorrelation)
    return write_posterior(tmp_path / f"{name}.nc", params, run, scales=scales), run


def test_terms_match_direct_sums():
    rng = np.random.default_rng(1)
    k0, b0, k1 = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5, 2))
    left, right = pair_terms(k0, b0, k1, tau=2.0, bias_tau=0.5, tau_next=3.0)
    np.testing.assert_allclose(left, (k0**2).sum(axis=(2, 3)) / 4 + (b0**2).sum(axis=2) / 0.25)
    np.testing.assert_allclose(right, (k1**2).sum(axis=(2, 3)) / 9)
    n_left, n_right = neuron_terms(k0, b0, k1, tau=2.0, bias_tau=0.5, tau_next=3.0)
    np.testing.assert_allclose(n_left.sum(axis=-1), left)
    np.testing.assert_allclose(n_right.sum(axis=-1), right)
    flat_left, _ = pair_terms(k0, b0, k1, tau=2.0, bias_tau=None, tau_next=3.0)
    np.testing.assert_allclose(flat_left, (k0**2).sum(axis=(2, 3)) / 4)


def test_prior_draws_satisfy_the_identity(tmp_path):
    path, run = _prior_file(tmp_path)
    table = balancedness_table(path, run)
    pairs = table[table["kind"] == "layer_pair"]
    # d_l - d_{l+1}: (3*6 + 6) - 6*5 = -6 and (6*5 + 5) - 5*2 = 25
    assert pairs["rhs"].tolist() == [-6, 25]
    assert (pairs["se_method"] == "chain_means").all()
    assert (np.abs(pairs["estimate"] - pairs["rhs"]) < 3 * pairs["se"]).all()
    assert (pairs["se"] > 0).all() and (pairs["se"] < 2).all()
    assert run_verdict(table) == "holds"
    assert run_verdict(table, "neuron") == "holds"

    neurons = table[table["kind"] == "neuron"]
    assert len(neurons) == 6 + 5
    # per-unit rhs: fan_in + 1 - fan_out
    assert set(neurons.loc[neurons["layer"] == 0, "rhs"]) == {3 + 1 - 5}
    assert set(neurons.loc[neurons["layer"] == 1, "rhs"]) == {6 + 1 - 2}
    # t-scores of 11 units: calibrated, not degenerate (sd neither ~0 nor inflated)
    z = neurons["t"].to_numpy()
    assert 0.4 < z.std(ddof=1) < 1.8
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_z_scores_are_calibrated_over_replicates(tmp_path):
    """Across independent replicate files the layer-pair z-scores look standard normal."""
    zs = []
    for seed in range(12):
        path, run = _prior_file(tmp_path, seed=100 + seed, chains=20, draws=40, name=f"rep{seed}")
        table = balancedness_table(path, run)
        zs.extend(table.loc[table["kind"] == "layer_pair", "t"])
    zs = np.asarray(zs)
    assert 0.6 < zs.std(ddof=1) < 1.5
    assert abs(zs.mean()) < 0.6
    assert stats.kstest(zs, "norm").pvalue > 1e-3


def test_wrong_sampler_is_flagged(tmp_path):
    path, run = _prior_file(tmp_path, inflate={"kernel_1": 1.15}, name="inflated")
    table = balancedness_table(path, run)
    pairs = table[table["kind"] == "layer_pair"]
    assert run_verdict(table) == "deviates"
    assert pairs["reject"].all()  # kernel_1 enters both pairs
    assert run_verdict(table, "neuron") == "deviates"
    assert run_verdict(table, "run") == "deviates"
    # the simultaneous interval of every rejected row excludes 0, and the worst relative error is reported
    rejected = pairs[pairs["reject"]]
    assert ((rejected["rel_error_lo"] > 0) | (rejected["rel_error_hi"] < 0)).all()
    row = table[(table["kind"] == "verdict") & (table["family"] == "layer_pair")].iloc[0]
    assert row["worst_rel_error"] == pairs.loc[pairs["rel_error"].abs().idxmax(), "rel_error"]


def test_few_autocorrelated_chains_use_batch_means(tmp_path):
    path, run = _prior_file(tmp_path, chains=4, draws=1500, autocorrelation=0.9, name="batches")
    table = balancedness_table(path, run)
    pairs = table[table["kind"] == "layer_pair"]
    assert (pairs["se_method"] == "batch_means").all()
    # 4 chains x 5 batches: df = 4 * (5 - 1), Student-t critical values above the normal ones
    assert (pairs["df"] == 16).all()
    assert (pairs["t_critical"] > stats.norm.isf(1e-3 / 4)).all()
    assert (np.abs(pairs["t"]) < 3.5).all()
    assert run_verdict(table) == "holds"
    # batch means see the autocorrelation: errors several times the iid ones (left ~ chi^2_{d_l}, d = 24, 35)
    naive = np.sqrt(2 * np.array([24.0, 35.0]) / (4 * 1500))
    assert (pairs["left_se"].to_numpy() > 2 * naive).all()


def test_many_chains_use_chain_means_with_g_minus_1_df(tmp_path):
    path, run = _prior_file(tmp_path, chains=12, draws=30, name="chains12")
    table = balancedness_table(path, run)
    rows = table[table["kind"] != "verdict"]
    assert (rows["se_method"] == "chain_means").all()
    assert (rows["df"] == 11).all()
    expected = stats.t.isf(1e-3 / (2 * 2), 11)
    np.testing.assert_allclose(rows.loc[rows["kind"] == "layer_pair", "t_critical"], expected)


def test_flat_bias_prior_counts_the_bias_on_the_right(tmp_path):
    """Exact draws from a posterior with a flat bias prior and a rescaling-invariant likelihood.

    Likelihood per unit j: N(b_j / r_j; 0, 1) with r_j = ||w_in,j|| (invariant under the rescaling).
    Integrating b_j out leaves a factor r_j, so r_j^2 / tau^2 ~ chi^2_{fan_in + 1}; b_j | w = r_j z.
    Then tau^-2 E||w_in,j||^2 = fan_in + 1: the identity holds with the bias counted in d_l only.
    """
    rng = np.random.default_rng(3)
    chains, draws, n_in, hidden, n_out, tau, tau_out = 40, 100, 3, 6, 2, 0.8, 1.5
    direction = rng.normal(size=(chains, draws, n_in, hidden))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    radius = tau * np.sqrt(rng.chisquare(n_in + 1, size=(chains, draws, 1, hidden)))
    kernel_0 = direction * radius
    bias_0 = radius[:, :, 0, :] * rng.normal(size=(chains, draws, hidden))
    kernel_1 = tau_out * rng.normal(size=(chains, draws, hidden, n_out))
    bias_1 = rng.normal(size=(chains, draws, n_out))
    run = make_run("flat", hidden=[hidden], scale=[tau, tau_out], bias_prior="flat", chains=chains)
    scales = {"kernel_0": tau, "bias_0": None, "kernel_1": tau_out, "bias_1": None}
    params = {"kernel_0": kernel_0, "bias_0": bias_0, "kernel_1": kernel_1, "bias_1": bias_1}
    path = write_posterior(tmp_path / "flat.nc", params, run, scales=scales)
    table = balancedness_table(path, run)
    pair = table[table["kind"] == "layer_pair"].iloc[0]
    assert pair["rhs"] == (n_in * hidden + hidden) - hidden * n_out
    assert abs(pair["t"]) < 3.5
    assert run_verdict(table) == "holds"
    neurons = table[table["kind"] == "neuron"]
    assert set(neurons["rhs"]) == {n_in + 1 - n_out}
    assert run_verdict(table, "neuron") == "holds"


def test_entry_point_writes_csv_and_tanh_is_marked(tmp_path):
    path, run = _prior_file(tmp_path, chains=12, draws=30, name="tanhnet")
    run["model"]["activation"] = "tanh"
    out = tmp_path / "results" / "analysis" / "tanhnet" / "balancedness.csv"
    analyse_balancedness(path, out, run)
    table = pd.read_csv(out)
    assert set(table["kind"]) == {"layer_pair", "neuron", "verdict"}
    assert run_verdict(table) == "not applicable"
    assert run_verdict(table, "run") == "not applicable"
    assert table.loc[table["kind"] == "layer_pair", "rel_error"].notna().all()  # numbers still reported
    assert not table["symmetry_applies"].any()
    nc_table = analyse_balancedness(path, out.with_suffix(".nc"), run)
    with xr.open_dataset(out.with_suffix(".nc")) as ds:
        assert ds.sizes["row"] == len(nc_table)
        np.testing.assert_allclose(ds["estimate"].values, nc_table["estimate"].to_numpy())


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        balancedness_table(tmp_path / "missing.nc", make_run())
    run = make_run(hidden=[4])
    params = {"bias_0": np.zeros((2, 3, 4), dtype=np.float32)}
    path = write_posterior(tmp_path / "nokernel.nc", params, run)
    with pytest.raises(ValueError, match="kernel"):
        balancedness_table(path, run)
