"""Dirichlet reallocation: MLE against numpy Dirichlet samples with known alpha, streamed share fits of
1-M-1 identity nets built to have Dirichlet shares, and redundant-unit clusters of ReLU nets."""

import numpy as np
import pandas as pd
import pytest

from interplay.analysis import (
    analyse_reallocation,
    dirichlet_mle,
    fit_dirichlet_samples,
    identity_share_fits,
    reallocation_sweep_table,
    relu_cluster_fits,
    symmetric_dirichlet_mle,
)
from interplay.analysis.dirichlet import gauge_fix, identity_net_shares, layer_inputs, redundant_clusters
from interplay.testing.posteriors import make_run, write_posterior


def test_symmetric_mle_recovers_half_with_k5():
    shares = np.random.default_rng(0).dirichlet(np.full(5, 0.5), size=20_000)
    fits = fit_dirichlet_samples(shares, confidence=0.99)
    sym = fits[fits["fit"] == "symmetric"].iloc[0]
    assert sym["ci_low"] < 0.5 < sym["ci_high"]
    assert abs(sym["alpha"] - 0.5) < 3 * sym["se_fisher"]
    assert sym["se_fisher"] < 0.01  # informative, not a vacuous interval
    # iid rows: the sandwich error agrees with the Fisher error
    assert 0.8 < sym["se_mc"] / sym["se_fisher"] < 1.25
    full = fits[fits["fit"] == "full"]
    assert ((full["ci_low"] < 0.5) & (0.5 < full["ci_high"])).all()


def test_full_mle_recovers_an_asymmetric_alpha():
    alpha = np.array([0.3, 0.8, 1.5, 3.0])
    shares = np.random.default_rng(1).dirichlet(alpha, size=20_000)
    mean_log = np.log(shares).mean(axis=0)
    estimate = dirichlet_mle(mean_log)
    # the MLE solves the likelihood equations psi(a_k) - psi(sum a) = mean log p_k
    from scipy.special import digamma
    np.testing.assert_allclose(digamma(estimate) - digamma(estimate.sum()), mean_log, atol=1e-9)
    fits = fit_dirichlet_samples(shares, confidence=0.999).query("fit == 'full'").sort_values("component")
    assert ((fits["ci_low"].to_numpy() < alpha) & (alpha < fits["ci_high"].to_numpy())).all()
    assert np.all(np.abs(fits["alpha"].to_numpy() - alpha) < 3.5 * fits["se_fisher"].to_numpy())


def test_symmetric_z_scores_are_calibrated():
    rng = np.random.default_rng(2)
    z = []
    for _ in range(60):
        shares = rng.dirichlet(np.full(3, 0.5), size=400)
        sym = fit_dirichlet_samples(shares).query("fit == 'symmetric'").iloc[0]
        z.append(sym["z_theory"])
    z = np.asarray(z)
    assert abs(z.mean()) < 0.5 and 0.7 < z.std(ddof=1) < 1.4


def test_autocorrelated_groups_widen_the_interval():
    """Each share vector repeated 10 times (10 perfectly correlated 'draws' per group): the sandwich
    error sees ~1/10 of the draws, the iid Fisher error does not."""
    base = np.random.default_rng(3).dirichlet(np.full(4, 0.5), size=2000)
    shares = np.repeat(base, 10, axis=0)
    groups = np.repeat(np.arange(200), 100)
    sym = fit_dirichlet_samples(shares, groups).query("fit == 'symmetric'").iloc[0]
    assert sym["se_mc"] > 2.5 * sym["se_fisher"]
    assert 1000 < sym["n_eff"] < 4000  # ~ the 2000 distinct vectors
    assert sym["ci_se"] == "mc"


def test_bad_shares_are_rejected():
    with pytest.raises(ValueError, match="positive and sum to one"):
        fit_dirichlet_samples(np.array([[0.5, 0.6], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="infinite"):
        symmetric_dirichlet_mle(np.log(np.full(3, 1 / 3)))


def _identity_net(rng, chains, draws, alpha, angle=None):
    """Kernels of a 1-M-1 net whose norm shares are Dir(alpha); with angle pi/4 rho equals them too."""
    m = len(alpha)
    shares = rng.dirichlet(alpha, size=(chains, draws))
    total = rng.gamma(5.0, 1.0, size=(chains, draws, 1))
    theta = np.full(shares.shape, np.pi / 4) if angle is None else angle(shares.shape)
    w = np.sqrt(total * shares) * np.cos(theta)
    v = np.sqrt(total * shares) * np.sin(theta)
    return {"kernel_0": w.reshape(chains, draws, 1, m), "kernel_1": v.reshape(chains, draws, m, 1)}, shares


def test_identity_shares_are_computed_exactly():
    rng = np.random.default_rng(4)
    params, shares = _identity_net(rng, 2, 3, np.full(4, 0.5))
    rho, norm = identity_net_shares(params["kernel_0"], params["kernel_1"])
    np.testing.assert_allclose(norm, shares, rtol=1e-10)
    np.testing.assert_allclose(rho, shares, rtol=1e-10)


def test_identity_net_fit_streams_and_recovers_alpha(tmp_path):
    rng = np.random.default_rng(5)
    params, _ = _identity_net(rng, 12, 400, np.full(5, 0.5))
    run = make_run("identity", hidden=[5], activation="identity", bias=False, chains=12)
    path = write_posterior(tmp_path / "identity.nc", params, run, scales={"kernel_0": 1.0, "kernel_1": 1.0})
    table = identity_share_fits(path, run)
    sym = table[table["fit"] == "symmetric"].set_index("share")
    for share in ("rho_abs", "norm"):
        assert sym.loc[share, "ci_low"] < 0.5 < sym.loc[share, "ci_high"]
        assert sym.loc[share, "ks_pvalue_symmetric"] > 1e-3 / 5  # Bonferroni over the 5 components
    assert (table["frac_sign_consistent"] == 1.0).all()
    assert (table["se_method"] == "chains").all()
    # streaming in many small blocks gives the same answer as a few big ones
    small = identity_share_fits(path, run, max_bytes=2_000)
    np.testing.assert_allclose(small["alpha"], table["alpha"], rtol=1e-9)
    np.testing.assert_allclose(small["se_mc"], table["se_mc"], rtol=1e-9)


def test_identity_net_with_mixed_signs_uses_abs_shares(tmp_path):
    rng = np.random.default_rng(6)
    params, _ = _identity_net(rng, 10, 100, np.full(3, 1.0), angle=lambda s: rng.uniform(0, 2 * np.pi, s))
    run = make_run("signs", hidden=[3], activation="identity", bias=False, chains=10)
    path = write_posterior(tmp_path / "signs.nc", params, run, scales={"kernel_0": 1.0, "kernel_1": 1.0})
    out = tmp_path / "analysis" / "reallocation.csv"
    analyse_reallocation(path, out, run)
    table = pd.read_csv(out)
    consistent = table["frac_sign_consistent"].iloc[0]
    assert 0.0 < consistent < 0.5  # random signs: few draws have all products of one sign
    norm = table.query("share == 'norm' and fit == 'symmetric'").iloc[0]
    assert norm["ci_low"] < 1.0 < norm["ci_high"]  # norm shares are exactly Dir(1, 1, 1)


def test_gauge_fix_keeps_the_function():
    rng = np.random.default_rng(7)
    k0, b0, k1 = rng.normal(size=(3, 6)), rng.normal(size=6), rng.normal(size=(6, 2))
    x = rng.normal(size=(50, 3))
    w, b, v, _norm = gauge_fix(k0, b0, k1)
    before = np.maximum(x @ k0 + b0, 0) @ k1
    after = np.maximum(x @ w + b, 0) @ v
    np.testing.assert_allclose(after, before, atol=1e-12)
    np.testing.assert_allclose(np.sum(w**2, axis=0) + b**2, 1.0)
    np.testing.assert_allclose(layer_inputs({"kernel_0": k0, "bias_0": b0}, x, 1, "relu"),
                               np.maximum(x @ k0 + b0, 0))


def _redundant_relu_net(rng, chains, draws, n_in=3, cluster=3, others=3, alpha=0.5):
    """ReLU net whose first `cluster` units are positive rescalings of one unit, with gauge-fixed
    outgoing weights in Dir(alpha) proportions; the other units are independent."""
    m = cluster + others
    k0 = rng.normal(size=(chains, draws, n_in, m))
    b0 = rng.normal(size=(chains, draws, m))
    scale = rng.uniform(0.3, 3.0, size=(chains, draws, cluster))
    k0[..., :cluster] = k0[..., :1] * scale[:, :, None, :]
    b0[..., :cluster] = b0[..., :1] * scale
    unit_norm = np.sqrt(np.sum(k0[..., :1] ** 2, axis=2) + b0[..., :1] ** 2)   # (chains, draws, 1)
    shares = rng.dirichlet(np.full(cluster, alpha), size=(chains, draws))
    k1 = rng.normal(size=(chains, draws, m, 1))
    total = rng.uniform(1.0, 2.0, size=(chains, draws, 1))
    k1[:, :, :cluster, 0] = shares * total / (scale * unit_norm)   # gauge-fixed v_j = share_j * total
    return {"kernel_0": k0, "bias_0": b0, "kernel_1": k1, "bias_1": rng.normal(size=(chains, draws, 1))}


def test_redundant_clusters_are_the_single_linkage_components_above_the_threshold():
    # units 0-1-2 form a chain of links above 0.9 (0 and 2 are linked only through 1), 3-4 a pair,
    # 5 is alone, 6 would link to 3 but is dead
    cos = np.eye(7)
    for a, b, value in [(0, 1, 0.95), (1, 2, 0.92), (0, 2, 0.5), (3, 4, 0.99), (4, 5, 0.9), (3, 6, 0.97)]:
        cos[a, b] = cos[b, a] = value
    alive = np.array([True] * 6 + [False])
    clusters = redundant_clusters(cos, alive, threshold=0.9)
    assert sorted(map(list, clusters)) == [[0, 1, 2], [3, 4]]
    assert redundant_clusters(cos, np.eye(7, dtype=bool)[0], 0.9) == []  # one alive unit: no cluster


def test_relu_clusters_are_found_and_fitted(tmp_path):
    rng = np.random.default_rng(8)
    params = _redundant_relu_net(rng, 10, 60)
    run = make_run("relu", hidden=[6], chains=10)
    scales = {"kernel_0": 1.0, "bias_0": 1.0, "kernel_1": 1.0, "bias_1": 1.0}
    path = write_posterior(tmp_path / "relu.nc", params, run, scales=scales)
    x_train = rng.normal(size=(200, 3))
    table = relu_cluster_fits(path, x_train, run, max_draws=600)
    assert 0.5 < table["threshold"].iloc[0] < 1.0
    assert table["n_draws_analysed"].iloc[0] == 600
    by_size = table[table["share"] == "rho_abs"].set_index("cluster_size")
    assert by_size["n_clusters"].idxmax() == 3 and by_size.loc[3, "n_clusters"] > 500
    assert by_size.loc[3, "frac_sign_consistent"] == 1.0
    row = by_size.loc[3]
    assert abs(row["alpha"] - 0.5) < 3.5 * row["se_mc"]
    assert row["ks_pvalue_symmetric"] > 1e-3


def test_relu_needs_inputs_and_sweep_table(tmp_path):
    rng = np.random.default_rng(9)
    params = _redundant_relu_net(rng, 10, 5)
    run = make_run("relu-tau", hidden=[6], chains=10, scale=2.0)
    path = write_posterior(tmp_path / "r.nc", params, run, scales={k: 2.0 for k in params})
    with pytest.raises(ValueError, match="x_train or data_path"):
        analyse_reallocation(path, tmp_path / "out.csv", run)
    identity_run = make_run("identity", hidden=[5], activation="identity", bias=False, chains=12, scale=0.5)
    id_params, _ = _identity_net(rng, 12, 50, np.full(5, 0.5))
    id_path = write_posterior(tmp_path / "i.nc", id_params, identity_run, scales={"kernel_0": 0.5, "kernel_1": 0.5})
    entries = [(identity_run, identity_share_fits(id_path, identity_run))]
    sweep = reallocation_sweep_table(entries)
    assert set(sweep["share"]) == {"rho_abs", "norm"}
    assert (sweep["tau"] == 0.5).all() and (sweep["width"] == 5).all()
