"""Predictive performance and sampler diagnostics, from the ``predictive`` / ``sample_stats`` groups only.

Chains weigh equally: each chain stores its own draw-averaged predictive density, CDF at y (pit)
and mean, so the posterior predictive over any set S of chains is the average over S:
- LPPD = mean_i [logsumexp_{c in S} log_pred_density_{c,i} - log |S|];
- posterior-mean prediction = mean over chains of pred_mean (RMSE on the standardised scale);
- mixture CDF at y_i: F_i = mean over chains of pit_{c,i}; y_i lies inside the central q interval
  iff (1 - q)/2 <= F_i <= (1 + q)/2 (coverage);
- classification: accuracy of argmax_k of the mean class probabilities, and their calibration: the
  expected calibration error (`ece`: top-label confidence in 10 equal-width bins, sum over bins of
  n_b / N |accuracy_b - confidence_b|) and the multi-class Brier score (`brier`: mean_i sum_k (p_ik - 1[y_i = k])^2).
Monte Carlo errors: delete-one-group jackknife over <= 100 contiguous chain groups (chains are
independent); `test_se` is the separate sampling error over test points (sd_i / sqrt(N)).
Deep ensembles and MFVI write the same groups and are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from interplay.analysis.posterior_files import (
    DEFAULT_BLOCK_BYTES,
    group_dim_sizes,
    group_variables,
    iter_chain_blocks,
    read_root_attr,
    read_run_config,
    read_variable,
    run_name,
)
from interplay.analysis.tables import write_table

COVERAGE_LEVELS = (0.5, 0.9, 0.95)
MAX_GROUPS = 100
N_ORDERINGS = 5
MAX_DIAG_CHAINS = 512


# ----------------------------------------------------------------------------- pure metrics


def inside_central_interval(mixture_cdf: np.ndarray, level: float) -> np.ndarray:
    return (mixture_cdf >= (1 - level) / 2) & (mixture_cdf <= (1 + level) / 2)


def cumulative_lppd(log_pred_density: np.ndarray, *, n_orderings: int = N_ORDERINGS, seed: int = 0,
                    chunk: int = 256) -> pd.DataFrame:
    """LPPD of the first k chains for k = 1..C under `n_orderings` seeded random chain orders:
    mean and population sd (ddof 0) over orderings. Running logaddexp in chunks of chains keeps the
    temporaries at (chunk, N)."""
    lpd = np.asarray(log_pred_density, dtype=np.float64)
    n_chains, n_test = lpd.shape
    rng = np.random.default_rng(seed)
    curves = np.empty((n_orderings, n_chains))
    log_k = np.log(np.arange(1, n_chains + 1))
    for o in range(n_orderings):
        order = rng.permutation(n_chains)
        running = np.full(n_test, -np.inf)
        for start in range(0, n_chains, chunk):
            acc = np.logaddexp.accumulate(np.vstack([running[None], lpd[order[start:start + chunk]]]), axis=0)[1:]
            curves[o, start:start + len(acc)] = acc.mean(axis=1)
            running = acc[-1]
        curves[o] -= log_k
    return pd.DataFrame({"k": np.arange(1, n_chains + 1), "lppd_mean": curves.mean(axis=0),
                         "lppd_sd": curves.std(axis=0, ddof=0), "n_orderings": n_orderings})


# ----------------------------------------------------------------------------- group-level (streamed)


def _loo_logsumexp(group_lse: np.ndarray) -> np.ndarray:
    """(G, N) -> (G, N): logsumexp over all groups but g, from prefix and suffix running sums."""
    n = len(group_lse)
    pad = np.full((1, group_lse.shape[1]), -np.inf)
    prefix = np.vstack([pad, np.logaddexp.accumulate(group_lse, axis=0)[:-1]])
    suffix = np.vstack([np.logaddexp.accumulate(group_lse[::-1], axis=0)[::-1][1:], pad])
    return np.logaddexp(prefix, suffix) if n > 1 else np.full_like(group_lse, np.nan)


def _jackknife_se(loo: np.ndarray) -> float:
    g = len(loo)
    if g < 2 or not np.all(np.isfinite(loo)):
        return float("nan")
    return float(np.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))


ECE_BINS = 10


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE of class probabilities (n, classes): confidences max_k p_ik in `n_bins` equal-width bins
    of (0, 1], sum over bins of (share of points) x |accuracy - mean confidence|."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def brier_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per point sum_k (p_ik - 1[y_i = k])^2."""
    onehot = np.eye(probs.shape[-1])[labels]
    return np.square(probs - onehot).sum(axis=-1)


def predictive_metrics(posterior_path, run: Mapping | None = None, *, levels: Sequence[float] = COVERAGE_LEVELS,
                       max_groups: int = MAX_GROUPS, max_bytes: int = DEFAULT_BLOCK_BYTES) -> pd.DataFrame:
    """LPPD, RMSE / accuracy and interval coverage with Monte Carlo (chain jackknife) and test-set errors."""
    run = dict(run) if run is not None else read_run_config(posterior_path)
    variables = group_variables(posterior_path, "predictive")
    for needed in ("log_pred_density", "pred_mean", "y_test"):
        if needed not in variables:
            raise KeyError(f"{posterior_path}: predictive group lacks {needed!r} (has {sorted(variables)})")
    classification = len(variables["pred_mean"].dims) == 3
    has_pit = "pit" in variables and not classification
    y = read_variable(posterior_path, "predictive", "y_test")
    n_chains = group_dim_sizes(posterior_path, "predictive")["chain"]
    n_groups = min(n_chains, max_groups)
    chain_group = (np.arange(n_chains) * n_groups) // n_chains
    n_test = len(y)
    lse = np.full((n_groups, n_test), -np.inf)
    mean_sum = np.zeros((n_groups, *variables["pred_mean"].shape[1:]))
    pit_sum = np.zeros((n_groups, n_test))
    counts = np.bincount(chain_group, minlength=n_groups).astype(np.float64)
    names = ["log_pred_density", "pred_mean"] + (["pit"] if has_pit else [])
    for first, block in iter_chain_blocks(posterior_path, "predictive", names, max_bytes=max_bytes):
        ids = chain_group[first:first + len(block["log_pred_density"])]
        for g in np.unique(ids):
            rows = ids == g
            lse[g] = np.logaddexp(lse[g], special.logsumexp(block["log_pred_density"][rows], axis=0))
            mean_sum[g] += block["pred_mean"][rows].sum(axis=0)
            if has_pit:
                pit_sum[g] += block["pit"][rows].sum(axis=0)

    total_lse = special.logsumexp(lse, axis=0)
    loo_count = n_chains - counts
    rows = []

    def add(metric, value, loo_values, pointwise, **extra):
        test_se = float(np.std(pointwise, ddof=1) / np.sqrt(len(pointwise))) if len(pointwise) > 1 else np.nan
        rows.append({"metric": metric, "value": float(value), "mc_se": _jackknife_se(loo_values),
                     "test_se": test_se, **extra})

    point = total_lse - np.log(n_chains)
    with np.errstate(invalid="ignore", divide="ignore"):
        loo_lppd = (_loo_logsumexp(lse) - np.log(loo_count)[:, None]).mean(axis=1)
    add("lppd", point.mean(), loo_lppd, point)

    total_mean = mean_sum.sum(axis=0) / n_chains
    with np.errstate(invalid="ignore", divide="ignore"):
        loo_mean = (mean_sum.sum(axis=0)[None] - mean_sum) / loo_count.reshape(-1, *[1] * (mean_sum.ndim - 1))
    if classification:
        correct = total_mean.argmax(axis=-1) == y.astype(np.int64)
        loo_acc = (loo_mean.argmax(axis=-1) == y.astype(np.int64)[None]).mean(axis=1)
        add("accuracy", correct.mean(), loo_acc, correct.astype(np.float64))
        labels = y.astype(np.int64)
        add("ece", expected_calibration_error(total_mean, labels),
            np.array([expected_calibration_error(m, labels) for m in loo_mean]), np.zeros(0))
        brier = brier_scores(total_mean, labels)
        add("brier", brier.mean(), np.array([brier_scores(m, labels).mean() for m in loo_mean]), brier)
    else:
        sq = (total_mean - y) ** 2
        add("rmse", np.sqrt(sq.mean()), np.sqrt(((loo_mean - y[None]) ** 2).mean(axis=1)), sq)
        # test_se of the RMSE by the delta method on the mean squared error
        rows[-1]["test_se"] = rows[-1]["test_se"] / (2 * rows[-1]["value"]) if rows[-1]["value"] > 0 else np.nan
    if has_pit:
        mixture_cdf = pit_sum.sum(axis=0) / n_chains
        with np.errstate(invalid="ignore", divide="ignore"):
            loo_cdf = (pit_sum.sum(axis=0)[None] - pit_sum) / loo_count[:, None]
        for level in levels:
            inside = inside_central_interval(mixture_cdf, level)
            add(f"coverage_{round(100 * level)}", inside.mean(),
                inside_central_interval(loo_cdf, level).mean(axis=1), inside.astype(np.float64), level=level)
    table = pd.DataFrame(rows)
    table.insert(0, "run", run_name(run, posterior_path))
    table["task"] = "classification" if classification else "regression"
    table["n_chains"] = n_chains
    table["n_test"] = n_test
    table["n_groups"] = n_groups
    table["sampler"] = run.get("sampler", {}).get("kind")
    return table


def read_log_pred_density(posterior_path) -> np.ndarray:
    """The (C, N) log_pred_density, assembled chain block by chain block."""
    parts = [b["log_pred_density"] for _, b in iter_chain_blocks(posterior_path, "predictive", ["log_pred_density"])]
    return np.concatenate(parts, axis=0)


def cumulative_lppd_table(posterior_path, run: Mapping | None = None, *, n_orderings: int = N_ORDERINGS,
                          seed: int | None = None) -> pd.DataFrame:
    run = dict(run) if run is not None else read_run_config(posterior_path)
    seed = int(run.get("sampler", {}).get("seed", 0)) if seed is None else seed
    table = cumulative_lppd(read_log_pred_density(posterior_path), n_orderings=n_orderings, seed=seed)
    table.insert(0, "run", run_name(run, posterior_path))
    table["seed"] = seed
    return table


# ----------------------------------------------------------------------------- diagnostics


def function_space_diagnostics(pred_draws: np.ndarray) -> pd.DataFrame:
    """Rank-normalised split R-hat, bulk and tail ESS (ArviZ) of predictions (chain, draw, diag_point)."""
    import arviz as az
    import xarray as xr

    pred_draws = np.asarray(pred_draws, dtype=np.float64)
    _n_chains, n_draws, n_points = pred_draws.shape
    if n_draws < 4:  # deep ensembles: one draw per member, no within-chain information
        nan = np.full(n_points, np.nan)
        return pd.DataFrame({"diag_point": np.arange(n_points), "rhat": nan, "ess_bulk": nan, "ess_tail": nan})
    ds = xr.Dataset({"f": (("chain", "draw", "diag_point"), pred_draws)})
    return pd.DataFrame({
        "diag_point": np.arange(n_points),
        "rhat": az.rhat(ds)["f"].values,
        "ess_bulk": az.ess(ds, method="bulk")["f"].values,
        "ess_tail": az.ess(ds, method="tail")["f"].values,
    })


def _summary_rows(section: str, name: str, values: np.ndarray) -> list[dict]:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    stats_ = {"count": float(values.size)}
    if finite.size:
        stats_.update({"min": finite.min(), "q05": np.quantile(finite, 0.05), "median": np.median(finite),
                       "mean": finite.mean(), "q95": np.quantile(finite, 0.95), "max": finite.max()})
    return [{"section": section, "variable": name, "statistic": k, "value": float(v)} for k, v in stats_.items()]


def diagnostics_table(posterior_path, run: Mapping | None = None, *, max_chains: int = MAX_DIAG_CHAINS
                      ) -> pd.DataFrame:
    """Function-space R-hat / ESS of pred_draws (first `max_chains` chains: chains are iid, so these are
    a random subset; `ess_per_chain` scales to any number of chains), summaries of per-chain step
    size, L and the other sample_stats, divergence counts."""
    run = dict(run) if run is not None else read_run_config(posterior_path)
    rows: list[dict] = []
    pred_vars = group_variables(posterior_path, "predictive")
    if "pred_draws" in pred_vars:
        n_chains = pred_vars["pred_draws"].shape[0]
        used = min(n_chains, max_chains)
        parts, seen = [], 0
        for _, block in iter_chain_blocks(posterior_path, "predictive", ["pred_draws"]):
            parts.append(block["pred_draws"][:used - seen])
            seen += len(parts[-1])
            if seen >= used:
                break
        diag = function_space_diagnostics(np.concatenate(parts, axis=0))
        for _, r in diag.iterrows():
            for stat in ("rhat", "ess_bulk", "ess_tail"):
                rows.append({"section": "function_space", "variable": f"pred_draws[{int(r['diag_point'])}]",
                             "statistic": stat, "value": float(r[stat])})
            rows.append({"section": "function_space", "variable": f"pred_draws[{int(r['diag_point'])}]",
                         "statistic": "ess_bulk_per_chain", "value": float(r["ess_bulk"]) / used})
        rows += _summary_rows("function_space", "rhat_over_points", diag["rhat"].to_numpy())
        rows += _summary_rows("function_space", "ess_bulk_over_points", diag["ess_bulk"].to_numpy())
        rows.append({"section": "function_space", "variable": "chains_used", "statistic": "count",
                     "value": float(used)})
    for name, info in group_variables(posterior_path, "sample_stats").items():
        values = read_variable(posterior_path, "sample_stats", name)
        if name in ("diverged", "n_divergent"):
            rows.append({"section": "sample_stats", "variable": name, "statistic": "sum",
                         "value": float(np.sum(values))})
        if values.dtype.kind in "fiu" and info.dims == ("chain",):
            rows += _summary_rows("sample_stats", name, values)
    dropped = read_root_attr(posterior_path, "n_diverged_dropped")
    if dropped is not None:
        rows.append({"section": "merge", "variable": "n_diverged_dropped", "statistic": "count",
                     "value": float(dropped)})
    table = pd.DataFrame(rows, columns=["section", "variable", "statistic", "value"])
    table.insert(0, "run", run_name(run, posterior_path))
    table["sampler"] = run.get("sampler", {}).get("kind")
    return table


# ----------------------------------------------------------------------------- entry points


def analyse_predictive(posterior_path, out_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: predictive metrics of one run -> CSV (or NetCDF) at `out_path`."""
    table = predictive_metrics(posterior_path, run, **kwargs)
    write_table(table, out_path)
    return table


def analyse_cumulative_lppd(posterior_path, out_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: LPPD against the number of chains (5 seeded orderings)."""
    table = cumulative_lppd_table(posterior_path, run, **kwargs)
    write_table(table, out_path)
    return table


def analyse_diagnostics(posterior_path, out_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: function-space R-hat/ESS and sampler summaries of one run."""
    table = diagnostics_table(posterior_path, run, **kwargs)
    write_table(table, out_path)
    return table


def predictive_sweep_table(entries: Sequence[tuple[Mapping, pd.DataFrame | str]]) -> pd.DataFrame:
    """Predictive metrics across a sweep's runs (e.g. LPPD against tau and depth): the per-run tables
    stacked, each row tagged with its run's sweep coordinates. `entries`: (resolved run, table or CSV path)."""
    from interplay.analysis.dirichlet import run_descriptors

    frames = []
    for run, table in entries:
        table = table if isinstance(table, pd.DataFrame) else pd.read_csv(table)
        frames.append(table.assign(**run_descriptors(run)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
