"""Bias marginals per layer, pooled over the layer's units, against the Gaussian bias prior.

The authors' appendix (configs ``marginals_bias/*``: airfoil 5-16-16-16-1 ReLU, ``mean_regr``, MCLMC with
50,000 warmup steps, 12 chains of 10,000 draws thinned by 10) plots the pooled density of every layer's
biases under an N(0, 1) prior on all parameters ("penalized") and under a flat bias prior ("uniform").
A flat bias prior makes the posterior of a net with hidden layers improper, so this pipeline refuses it
(docs/DESIGN.md); the Gaussian case is analysed here.

Per layer l with bias prior N(0, tau_l^2), on z = b / tau_l pooled over units, chains and draws:
the mean of z (prior: 0), the variance ratio var(z) (prior: 1) and the fraction of negative biases
(prior: 1/2), each with its Monte Carlo standard error from independent groups
(`interplay.analysis.monte_carlo.mc_groups`: chains, or batch means with fewer than 10 chains) and a
Student-t test against the prior value (df = groups - 1, or chains x (batches - 1) for batch means, as
in the balancedness tests), Bonferroni-corrected over the run's tests at `level`. Under the prior the
tests are calibrated (tests/test_analysis_appendix.py); a posterior typically deviates (that is the
finding: the data move the biases). A pooled density on a fixed grid of z (counts, so it streams) is
stored for the figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from interplay.analysis.monte_carlo import MIN_CHAINS_FOR_CHAIN_SE, GroupSums, jackknife, mc_groups
from interplay.analysis.posterior_files import (
    DEFAULT_BLOCK_BYTES,
    iter_chain_blocks,
    network_layout,
    posterior_counts,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table

DEFAULT_LEVEL = 1e-3
HALF_RANGE, N_BINS = 6.0, 120  # density grid on z = b / tau: [-6, 6] in bins of 0.1
PRIOR_VALUES = {"mean": 0.0, "var_ratio": 1.0, "frac_negative": 0.5}


def degrees_of_freedom(groups) -> int:
    """Student-t df of a test on group means: G - 1 for chain groups, chains x (batches - 1) for batch means."""
    if groups.method == "chains" or groups.n_batches == 1:
        return int(groups.chain_group.max() + 1) - 1
    return groups.n_chains * (groups.n_batches - 1)


def moment_tests(sums: np.ndarray, counts: np.ndarray, df: int, level: float = DEFAULT_LEVEL,
                 n_tests: int | None = None) -> list[dict]:
    """Tests of one layer from per-group sums of (z, z^2, 1[z < 0]) (sums (G, 3), counts (G,)).

    Returns one row per statistic (mean, var_ratio, frac_negative): estimate, se, t against the prior
    value, two-sided p-value, t_critical at level / (2 n_tests) and reject. The variance ratio's error is
    a delete-one-group jackknife; the others are ratio estimates of group means."""
    n_tests = 3 if n_tests is None else n_tests
    t_crit = float(stats.t.ppf(1 - level / (2 * n_tests), df)) if df > 0 else np.nan
    rows = []
    for stat, fn in (("mean", lambda m1, m2, f: m1), ("var_ratio", lambda m1, m2, f: m2 - m1**2),
                     ("frac_negative", lambda m1, m2, f: f)):
        est, se = jackknife(fn, [sums[:, 0], sums[:, 1], sums[:, 2]], counts)
        est, se = float(est), float(se)
        t = (est - PRIOR_VALUES[stat]) / se if se > 0 else np.nan
        p = float(2 * stats.t.sf(abs(t), df)) if np.isfinite(t) and df > 0 else np.nan
        rows.append({"statistic": stat, "estimate": est, "se": se, "prior_value": PRIOR_VALUES[stat], "t": t,
                     "p_value": p, "df": df, "t_critical": t_crit,
                     "reject": bool(np.isfinite(t) and abs(t) > t_crit)})
    return rows


def bias_marginal_table(posterior_path, run: Mapping | None = None, *, level: float = DEFAULT_LEVEL,
                        half_range: float = HALF_RANGE, n_bins: int = N_BINS,
                        min_chains: int = MIN_CHAINS_FOR_CHAIN_SE, max_bytes: int = DEFAULT_BLOCK_BYTES
                        ) -> pd.DataFrame:
    """Rows of kind ``test`` (per layer and statistic, module docstring; plus a ``verdict`` row per layer
    and for the run: conforms / deviates) and ``density`` (per layer: bin_lo, bin_hi in bias units and the
    pooled density; mass outside the grid in ``outside``)."""
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = [spec for spec in network_layout(posterior_path, run) if spec.bias is not None]
    if not layers:
        raise ValueError(f"{posterior_path}: the net has no biases (model.bias: false)")
    flat = [spec.bias for spec in layers if spec.bias_scale is None]
    if flat:
        raise ValueError(f"{posterior_path}: biases {flat} have a flat prior (no prior scale to compare with)")
    n_chains, n_draws = posterior_counts(posterior_path)
    groups = mc_groups(n_chains, n_draws, min_chains=min_chains)
    sums = {spec.bias: GroupSums(groups, (3,)) for spec in layers}
    edges = np.linspace(-half_range, half_range, n_bins + 1)
    hist = {spec.bias: np.zeros(n_bins + 2) for spec in layers}  # + under/overflow
    names = [spec.bias for spec in layers]
    for first, block in iter_chain_blocks(posterior_path, "posterior", names, max_bytes=max_bytes):
        for spec in layers:
            z = block[spec.bias] / spec.bias_scale  # (c, D, units)
            per_draw = np.stack([z.mean(-1), (z**2).mean(-1), (z < 0).mean(-1)], axis=-1)
            sums[spec.bias].add(first, per_draw)
            index = np.clip(np.searchsorted(edges, z.ravel(), side="right"), 0, n_bins + 1)
            hist[spec.bias] += np.bincount(index, minlength=n_bins + 2)
    df = degrees_of_freedom(groups)
    n_tests = 3 * len(layers)
    rows = []
    for spec in layers:
        acc = sums[spec.bias]
        tests = moment_tests(acc.sums, acc.counts, df, level, n_tests)
        base = {"layer": spec.index, "variable": spec.bias, "tau": spec.bias_scale, "n_units": spec.fan_out,
                "se_method": groups.method}
        rows += [{"kind": "test", **base, **t} for t in tests]
        rows.append({"kind": "verdict", **base,
                     "verdict": "deviates" if any(t["reject"] for t in tests) else "conforms"})
        counts = hist[spec.bias]
        total = counts.sum()
        width = edges[1] - edges[0]
        for i in range(n_bins):
            rows.append({"kind": "density", **base, "bin_lo": edges[i] * spec.bias_scale,
                         "bin_hi": edges[i + 1] * spec.bias_scale,
                         "density": counts[i + 1] / (total * width * spec.bias_scale),
                         "outside": (counts[0] + counts[-1]) / total})
    run_reject = any(r.get("reject") for r in rows if r["kind"] == "test")
    rows.append({"kind": "verdict", "layer": -1, "variable": "run", "verdict": "deviates" if run_reject else "conforms",
                 "se_method": groups.method})
    table = pd.DataFrame(rows)
    table.insert(0, "run", run_name(run, posterior_path))
    table["level"] = level
    return table


def analyse_bias_marginals(posterior_path, out_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: the bias-marginal table of one run."""
    table = bias_marginal_table(posterior_path, run, **kwargs)
    write_table(table, out_path)
    return table
