"""Predictive metrics and diagnostics against direct numpy computations on small synthetic posteriors."""

import numpy as np
import pandas as pd
import pytest

from interplay.analysis import (
    analyse_cumulative_lppd,
    analyse_diagnostics,
    analyse_predictive,
    predictive_metrics,
)
from interplay.analysis.predictive import cumulative_lppd, diagnostics_table, function_space_diagnostics
from interplay.testing.posteriors import make_run, write_posterior

C, N, D = 7, 30, 50


def _posterior(tmp_path, name="pred", classes=None, draws=D, chains=C, seed=0, sample_stats=None):
    rng = np.random.default_rng(seed)
    run = make_run(name, hidden=[3], chains=chains, likelihood="class" if classes else "regr")
    params = {"kernel_0": rng.normal(size=(chains, draws, 2, 3)), "kernel_1": rng.normal(size=(chains, draws, 3, 1))}
    predictive = {
        "log_pred_density": rng.normal(-1.0, 0.7, size=(chains, N)),
        "pred_draws": rng.normal(size=(chains, draws, 4)),
    }
    if classes:
        probs = rng.dirichlet(np.ones(classes), size=(chains, N))
        predictive.update(pred_mean=probs, y_test=rng.integers(0, classes, size=N))
    else:
        predictive.update(pred_mean=rng.normal(size=(chains, N)), pit=rng.uniform(size=(chains, N)),
                          y_test=rng.normal(size=N))
    path = write_posterior(tmp_path / f"{name}.nc", params, run, predictive=predictive, sample_stats=sample_stats)
    return path, run, predictive


def _direct_lppd(lpd):
    return np.mean(np.log(np.mean(np.exp(lpd), axis=0)))


def test_regression_metrics_match_numpy(tmp_path):
    path, run, pred = _posterior(tmp_path)
    table = predictive_metrics(path, run).set_index("metric")
    lpd, y = pred["log_pred_density"], pred["y_test"]
    assert table.loc["lppd", "value"] == pytest.approx(_direct_lppd(lpd), rel=1e-12)
    mean_prediction = pred["pred_mean"].mean(axis=0)
    assert table.loc["rmse", "value"] == pytest.approx(np.sqrt(np.mean((mean_prediction - y) ** 2)), rel=1e-12)
    cdf = pred["pit"].mean(axis=0)
    for level in (0.5, 0.9, 0.95):
        direct = np.mean([(1 - level) / 2 <= f <= (1 + level) / 2 for f in cdf])
        assert table.loc[f"coverage_{round(100 * level)}", "value"] == pytest.approx(direct)
    # Monte Carlo error: delete-one-chain jackknife (7 chains -> 7 groups), computed directly
    loo = np.array([_direct_lppd(np.delete(lpd, c, axis=0)) for c in range(C)])
    direct_se = np.sqrt((C - 1) / C * np.sum((loo - loo.mean()) ** 2))
    assert table.loc["lppd", "mc_se"] == pytest.approx(direct_se, rel=1e-9)
    point = np.log(np.mean(np.exp(lpd), axis=0))
    assert table.loc["lppd", "test_se"] == pytest.approx(point.std(ddof=1) / np.sqrt(N), rel=1e-9)
    assert (table["n_chains"] == C).all() and (table["task"] == "regression").all()


def test_grouped_chains_and_small_blocks_agree(tmp_path):
    path, run, _pred = _posterior(tmp_path, chains=40, name="many")
    whole = predictive_metrics(path, run)
    grouped = predictive_metrics(path, run, max_groups=8, max_bytes=500)
    np.testing.assert_allclose(grouped["value"], whole["value"], rtol=1e-12)
    assert (grouped["n_groups"] == 8).all()
    assert np.all(np.isfinite(grouped["mc_se"]))


def test_classification_accuracy(tmp_path):
    path, run, pred = _posterior(tmp_path, classes=3, name="cls")
    out = tmp_path / "analysis" / "cls" / "predictive.csv"
    table = analyse_predictive(path, out, run).set_index("metric")
    direct = np.mean(pred["pred_mean"].mean(axis=0).argmax(axis=1) == pred["y_test"])
    assert table.loc["accuracy", "value"] == pytest.approx(direct)
    assert table.loc["lppd", "value"] == pytest.approx(_direct_lppd(pred["log_pred_density"]), rel=1e-12)
    assert "rmse" not in table.index and not any(m.startswith("coverage") for m in table.index)
    assert pd.read_csv(out)["task"].eq("classification").all()


def test_cumulative_lppd_matches_direct_orderings(tmp_path):
    path, run, pred = _posterior(tmp_path)
    lpd = pred["log_pred_density"]
    table = cumulative_lppd(lpd, n_orderings=5, seed=11, chunk=3)
    rng = np.random.default_rng(11)
    curves = []
    for _ in range(5):
        order = rng.permutation(C)
        curves.append([_direct_lppd(lpd[order[:k]]) for k in range(1, C + 1)])
    curves = np.asarray(curves)
    np.testing.assert_allclose(table["lppd_mean"], curves.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(table["lppd_sd"], curves.std(axis=0), atol=1e-12)
    assert table["lppd_mean"].iloc[-1] == pytest.approx(_direct_lppd(lpd), rel=1e-12)
    assert table["lppd_sd"].iloc[-1] < 1e-12 and table["lppd_sd"].iloc[0] > 0
    out = tmp_path / "cum.csv"
    written = analyse_cumulative_lppd(path, out, run, seed=11)
    assert len(pd.read_csv(out)) == C
    np.testing.assert_allclose(written["lppd_mean"], table["lppd_mean"], rtol=1e-12)


def test_function_space_diagnostics_detect_a_stuck_chain():
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(6, 400, 3))
    good = function_space_diagnostics(draws)
    assert (good["rhat"] < 1.02).all()
    assert ((good["ess_bulk"] > 0.6 * 2400) & (good["ess_bulk"] < 1.5 * 2400)).all()
    draws[0] += 3.0
    bad = function_space_diagnostics(draws)
    assert (bad["rhat"] > 1.1).all()
    single = function_space_diagnostics(draws[:, :1])  # a deep ensemble: one draw per member
    assert single["rhat"].isna().all()


def test_diagnostics_table_summarises_sample_stats(tmp_path):
    stats = {"step_size": np.linspace(0.01, 0.07, C), "L": np.arange(1.0, C + 1),
             "diverged": np.array([0, 1, 0, 0, 1, 0, 0], dtype=np.int8)}
    path, run, _ = _posterior(tmp_path, sample_stats=stats)
    out = tmp_path / "diag.csv"
    analyse_diagnostics(path, out, run)
    table = pd.read_csv(out)
    get = table.set_index(["section", "variable", "statistic"])["value"]
    assert get[("sample_stats", "step_size", "median")] == pytest.approx(0.04)
    assert get[("sample_stats", "L", "max")] == pytest.approx(7.0)
    assert get[("sample_stats", "diverged", "sum")] == 2
    assert get[("merge", "n_diverged_dropped", "count")] == 0
    assert get[("function_space", "chains_used", "count")] == C
    assert get[("function_space", "rhat_over_points", "max")] < 1.1
    limited = diagnostics_table(path, run, max_chains=3)
    assert limited.set_index(["variable", "statistic"])["value"][("chains_used", "count")] == 3


def test_missing_predictive_variables_are_named(tmp_path):
    rng = np.random.default_rng(0)
    run = make_run("nopred", hidden=[3])
    params = {"kernel_0": rng.normal(size=(2, 3, 2, 3)), "kernel_1": rng.normal(size=(2, 3, 3, 1))}
    path = write_posterior(tmp_path / "nopred.nc", params, run,
                           predictive={"log_pred_density": rng.normal(size=(2, 4)), "y_test": np.zeros(4)})
    with pytest.raises(KeyError, match="pred_mean"):
        predictive_metrics(path, run)
