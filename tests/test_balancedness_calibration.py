"""The balancedness verdict as a calibrated instrument: known answers for its false-alarm rate, its
power and its margin logic.

Exact draws (the per-unit terms of prior draws, where the identity holds exactly) are generated directly
as per-draw statistics, so that hundreds of replications are cheap; they go through the same groups,
standard errors, degrees of freedom and Bonferroni t tests as `balancedness_table`
(`draws_family_table`).
"""

import numpy as np
import pandas as pd
import pytest
from scipy import signal, stats

from interplay.analysis import balancedness_table, run_verdict
from interplay.analysis.balancedness import (
    VERDICTS,
    combine_verdicts,
    draws_family_table,
    family_verdict,
    t_tests,
)
from interplay.testing.posteriors import layer_widths, make_run, prior_draws, prior_scales, write_posterior

FAN_IN, FAN_OUT, UNITS = 3, 2, 64      # a 64-unit family; rhs per unit = fan_in + 1 - fan_out = 2
LEVEL = 0.05                           # nominal family-wise level, measurable in 200 replications
REPLICATIONS = 200


def _ar1(rng, shape, rho):
    """Standard normal AR(1) series along axis 1, stationary from the first draw."""
    noise = rng.standard_normal(shape)
    if rho == 0:
        return noise
    s = np.sqrt(1 - rho**2)
    zi = ((1 - s) * noise[:, :1])
    return signal.lfilter([s], [1, -rho], noise, axis=1, zi=zi)[0]


def unit_terms(rng, chains, draws, *, rho=0.0, w_in_scale=1.0):
    """Per-draw (left, right) terms of UNITS hidden units, (chain, draw, unit, 2), from exact prior
    draws with unit prior scales: left = ||w_in||^2 + b^2, right = ||w_out||^2. `w_in_scale` != 1
    draws the incoming weights from a wrong prior scale (the analysis assumes 1)."""
    w_in = w_in_scale * _ar1(rng, (chains, draws, UNITS, FAN_IN), rho)
    rest = _ar1(rng, (chains, draws, UNITS, 1 + FAN_OUT), rho)
    left = np.square(w_in).sum(-1) + np.square(rest[..., 0])
    right = np.square(rest[..., 1:]).sum(-1)
    return np.stack([left, right], axis=-1)


SETTINGS = {  # chains: (draws, AR(1) coefficient)
    4: (600, 0.8),     # batch means within autocorrelated chains
    10: (40, 0.5),     # chain means
    20: (40, 0.5),
}


def _replicate(chains, seed):
    draws, rho = SETTINGS[chains]
    rng = np.random.default_rng(seed)
    t_abs, critical, methods, dfs = [], [], set(), set()
    for _ in range(REPLICATIONS):
        table = draws_family_table(unit_terms(rng, chains, draws, rho=rho), FAN_IN + 1 - FAN_OUT, level=LEVEL)
        t_abs.append(np.abs(table["t"].to_numpy()).max())
        critical.append(table["t_critical"].iloc[0])
        methods |= set(table["se_method"])
        dfs |= set(table["df"])
    return np.asarray(t_abs), np.asarray(critical), methods, dfs


@pytest.mark.parametrize("chains", [4, 10, 20])
def test_family_wise_false_alarm_rate_is_at_most_twice_nominal(chains):
    t_abs, critical, methods, dfs = _replicate(chains, seed=1000 + chains)
    rate = float(np.mean(t_abs > critical))
    print(f"G={chains}: family-wise false-alarm rate {rate:.3f} at nominal {LEVEL} ({methods}, df {dfs})")
    assert rate <= 2 * LEVEL, f"G={chains}: false-alarm rate {rate:.3f} > {2 * LEVEL}"
    assert methods == ({"batch_means"} if chains < 10 else {"chain_means"})
    assert dfs == ({chains * 4} if chains < 10 else {chains - 1})
    # The test has teeth: normal critical values on the same statistics exceed the allowed rate.
    z_critical = stats.norm.isf(LEVEL / (2 * UNITS))
    assert float(np.mean(t_abs > z_critical)) > 2 * LEVEL


def test_a_ten_percent_wrong_prior_scale_is_flagged_at_20_chains():
    rng = np.random.default_rng(7)
    verdicts = []
    for _ in range(20):
        table = draws_family_table(unit_terms(rng, 20, 50, w_in_scale=1.1), FAN_IN + 1 - FAN_OUT)  # level 1e-3
        verdicts.append(family_verdict(table)[0])
    flagged = np.mean([v != "holds" for v in verdicts])
    # E left = 3 * 1.21 + 1 against 4: rel error 0.63 / 2 ~ 0.3, far outside a 0.05 margin
    assert flagged >= 0.9, verdicts
    assert all(v in {"holds", "deviates"} for v in verdicts), verdicts


def _rows(estimate, se, rhs, df=19, scale=None, level=1e-3):
    return t_tests(estimate, se, df, rhs, level, scale=scale)


def test_each_outcome_on_constructed_inputs():
    # exact: nothing rejected
    assert family_verdict(_rows([100.0, -6.0], [1.0, 1.0], [100, -6])) == ("holds", 0.0)
    # 20% off, interval ~ [0.15, 0.25]: outside the 0.05 margin
    outcome, worst = family_verdict(_rows([120.0, 100.0], [1.0, 1.0], [100, 100]))
    assert outcome == "deviates" and worst == pytest.approx(0.2)
    # 2% off with a tiny error (many chains): rejected, interval ~ [0.01, 0.03] inside the margin
    rows = _rows([102.0], [0.2], [100])
    assert bool(rows["reject"].iloc[0])
    assert family_verdict(rows) == ("holds within margin", pytest.approx(0.02))
    # 5% off, t = 5 rejected, interval ~ [0.011, 0.089] straddles 0.05
    rows = _rows([105.0], [1.0], [100])
    assert bool(rows["reject"].iloc[0]) and rows["rel_error_lo"].iloc[0] < 0.05 < rows["rel_error_hi"].iloc[0]
    assert family_verdict(rows)[0] == "inconclusive"
    # a wider margin turns it into holds within margin, a narrower one into deviates
    assert family_verdict(rows, margin=0.1)[0] == "holds within margin"
    assert family_verdict(rows, margin=0.005)[0] == "deviates"
    # no finite test; an activation outside the identity's scope
    assert family_verdict(_rows([1.0], [np.nan], [1]))[0] == "untestable"
    assert family_verdict(_rows([120.0], [1.0], [100]), applies=False) == ("not applicable", pytest.approx(0.2))
    assert family_verdict(pd.DataFrame(columns=["t", "reject", "rel_error", "rel_error_lo", "rel_error_hi"]))[0] \
        == "untestable"


def test_t_tests_agree_with_their_intervals_and_scale_rhs_zero_by_the_left_term():
    rng = np.random.default_rng(3)
    estimate, se, rhs = rng.normal(5, 3, 50), rng.uniform(0.1, 1, 50), np.full(50, 5.0)
    rows = _rows(estimate, se, rhs, df=9, level=0.05)
    excludes_zero = (rows["rel_error_lo"] > 0) | (rows["rel_error_hi"] < 0)
    np.testing.assert_array_equal(rows["reject"], excludes_zero)
    assert rows["t_critical"].iloc[0] == pytest.approx(stats.t.isf(0.05 / 100, 9))
    np.testing.assert_allclose(rows["p_value"], 2 * stats.t.sf(np.abs((estimate - rhs) / se), 9))
    # rhs == 0 (fan_in + 1 == fan_out): relative to the left term's mean, never divided by zero
    rows = _rows([0.3, 2.0], [0.1, 0.1], [0, 4], scale=[6.0, 6.0])
    np.testing.assert_allclose(rows["rel_scale"], [6.0, 4.0])
    np.testing.assert_allclose(rows["rel_error"], [0.05, -0.5])


def test_run_verdict_is_the_most_severe_family():
    assert combine_verdicts(["holds", "holds within margin"]) == "holds within margin"
    assert combine_verdicts(["inconclusive", "deviates"]) == "deviates"
    assert combine_verdicts(["holds", "untestable"]) == "holds"
    assert combine_verdicts(["untestable", "untestable"]) == "untestable"
    assert combine_verdicts(["not applicable", "not applicable"]) == "not applicable"
    assert set(VERDICTS) == {"holds", "holds within margin", "inconclusive", "deviates", "untestable",
                             "not applicable"}


def test_a_ten_percent_wrong_prior_scale_deviates_in_the_table(tmp_path):
    """The streamed table of a 3-64-2 net, 20 chains, kernel_0 drawn with a 10% larger scale than the
    run's prior: both families and the run deviate, with the worst relative error next to the verdict."""
    widths = layer_widths(3, [64], 2)
    run = make_run("wrong-scale", hidden=[64], scale=[1.0, 1.0], bias_scale=1.0, chains=20)
    scales = prior_scales(widths, [1.0, 1.0], 1.0)
    params = prior_draws(np.random.default_rng(11), widths, scales, 20, 50, inflate={"kernel_0": 1.1})
    table = balancedness_table(write_posterior(tmp_path / "w.nc", params, run, scales=scales), run)
    assert run_verdict(table) == run_verdict(table, "neuron") == run_verdict(table, "run") == "deviates"
    rows = table[table["kind"] == "verdict"].set_index("family")
    assert (rows["worst_rel_error"] > 0.05).all() and (rows["margin"] == 0.05).all()
    assert (table.loc[table["kind"] != "verdict", "df"] == 19).all()
