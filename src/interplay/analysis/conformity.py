"""Prior conformity: how far the posterior marginals are from the prior N(0, tau^2).

Per layer, kernels and biases separately, on the standardised scale z = theta / tau:
- pooled over parameters, chains and draws: mean, variance ratio var(theta) / tau^2, excess
  kurtosis, KS statistic and Wasserstein-1 distance (in units of tau) to N(0, 1), each with a
  delete-one-group jackknife standard error over independent chain groups;
- per parameter (over chains and draws), then summarised as quantiles across the layer's parameters,
  with the KS level that Monte Carlo noise alone produces (0.87 / sqrt(ESS)) for reference.

Streaming accuracy. KS and W1 come from exact counts in fixed bins (no sub-sampling):
- pooled: `POOLED_BINS` bins of width 2 * POOLED_RANGE / POOLED_BINS = 5e-4 on z in
  [-POOLED_RANGE, POOLED_RANGE], plus under/overflow counts and the summed excess beyond the range.
  The KS statistic is evaluated at the bin edges: the true sup lies in [ks, ks + ks_gap] with
  ks_gap = the largest N(0,1) mass of one bin (<= 2e-4). W1 = integral |F_n - Phi| by the
  trapezoid rule on the edges (error <= bin width = 5e-4) plus the exact tail integrals.
- per parameter: `PARAM_BINS` bins on [-PARAM_RANGE, PARAM_RANGE] (width 0.025): ks_gap <= 0.01 as a
  bound (for a smooth marginal the error is far smaller), W1 error <= 0.025. Layers so large that
  the per-parameter histograms would pass PARAM_HIST_BYTES get fewer bins (the table's ks_gap says).
A flat (improper) bias prior has no tau: those rows report moments of theta itself and no
distances (NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from interplay.analysis.monte_carlo import MIN_CHAINS_FOR_CHAIN_SE, jackknife, mc_groups, ratio_se
from interplay.analysis.posterior_files import (
    DEFAULT_BLOCK_BYTES,
    iter_chain_blocks,
    network_layout,
    posterior_counts,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table

POOLED_RANGE, POOLED_BINS = 8.0, 32_000
PARAM_RANGE, PARAM_BINS = 6.0, 480
MIN_PARAM_BINS = 24
PARAM_HIST_BYTES = 256 * 2**20  # per variable; layers with > ~70k parameters get coarser bins
BINCOUNT_SLOTS = 2**22
MAX_JACKKNIFE_GROUPS = 20
KS_NULL_CONSTANT = 0.8687  # E[sqrt(n) D_n] of the one-sample KS statistic under the null (n large)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return special.ndtr(z)


# ----------------------------------------------------------------------------- histograms (pure)


def bin_edges(half_range: float, n_bins: int) -> np.ndarray:
    return np.linspace(-half_range, half_range, n_bins + 1)


def bin_index(z: np.ndarray, half_range: float, n_bins: int) -> np.ndarray:
    """Histogram slot per value: 0 = underflow, 1..n_bins = bins, n_bins + 1 = overflow.

    Computed in the precision of z: in float32 a value within ~1e-6 of a bin edge may land on
    either side of it, far inside the discretisation gap that the KS and W1 bounds already allow.
    """
    scaled = (z + half_range) * (n_bins / (2 * half_range)) + 1
    np.clip(scaled, 0, n_bins + 1, out=scaled)  # also maps -inf/+inf to under/overflow
    if np.isnan(scaled.min(initial=0.0)):
        raise ValueError("the draws contain NaN: a diverged chain that was not dropped?")
    return scaled.astype(np.intp)  # truncation = floor for the non-negative values


def histogram_distances(counts: np.ndarray, excess_low: np.ndarray, excess_high: np.ndarray,
                        half_range: float) -> tuple[np.ndarray, np.ndarray, float]:
    """KS (at the bin edges), W1 and the KS discretisation gap to N(0, 1) from slot counts.

    counts (..., n_bins + 2) with under/overflow slots; excess_low/high (...) the sums of
    (-R - z) below and (z - R) above the range, so the tail integrals of |F_n - Phi| are exact up to
    Phi's own tail beyond R (< 1e-15 at R = 8).
    """
    n_bins = counts.shape[-1] - 2
    edges = bin_edges(half_range, n_bins)
    total = counts.sum(axis=-1)
    total = np.where(total > 0, total, 1)
    # F_n at every edge: underflow plus the bins below it.
    ecdf = np.cumsum(counts[..., :-1], axis=-1) / total[..., None]
    diff = np.abs(ecdf - normal_cdf(edges))
    ks = diff.max(axis=-1)
    width = edges[1] - edges[0]
    w1 = width * (diff[..., 1:] + diff[..., :-1]).sum(axis=-1) / 2
    w1 = w1 + (excess_low + excess_high) / total
    gap = float(np.max(np.diff(normal_cdf(edges))))
    return ks, w1, gap


def moment_statistics(m1, m2, m3, m4):
    """(mean, variance, excess kurtosis) from raw moments E z, E z^2, E z^3, E z^4."""
    var = m2 - m1**2
    central4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = central4 / var**2 - 3
    return m1, var, kurt


# ----------------------------------------------------------------------------- streaming accumulators


class _VariableAccumulator:
    """Everything one variable contributes: pooled per-group moments and histograms, per-parameter
    moments and histograms, per-group per-parameter means (for the per-parameter ESS)."""

    def __init__(self, groups, n_params: int, param_bins: int):
        self.groups = groups
        # coarser per-parameter bins for very large layers keep the histograms within the budget
        param_bins = int(min(param_bins, max(MIN_PARAM_BINS, PARAM_HIST_BYTES // (8 * n_params) - 2)))
        g = groups.n_groups
        self.moments = np.zeros((g, 4))                    # sums of z^1..z^4 per group
        self.counts = np.zeros(g)
        self.hist = np.zeros((g, POOLED_BINS + 2), dtype=np.int64)
        self.excess = np.zeros((g, 2))
        self.param_moments = np.zeros((4, n_params))
        self.param_group_sums = np.zeros((g, n_params))
        self.param_hist = np.zeros((n_params, param_bins + 2), dtype=np.int64)
        self.param_excess = np.zeros((2, n_params))
        self.param_bins = param_bins

    def add(self, first: int, z: np.ndarray) -> None:
        """z: (c, D, n_params) standardised draws of a chain block (float32 is fine: every sum is
        accumulated in float64)."""
        c, _d, p = z.shape
        groups = self.groups
        ids = groups.group_ids(first, c)                                     # (c, n_batches)
        draw_batch = np.repeat(np.arange(groups.n_batches), groups.batch_sizes)
        slot_group = ids[:, draw_batch]                                      # (c, D) group of each draw
        flat_group = slot_group.ravel()
        n_groups = groups.n_groups
        z2 = z * z
        for k, power in enumerate((z, z2, z2 * z, z2 * z2)):
            per_draw = power.sum(axis=2, dtype=np.float64).ravel()           # (c * D,)
            self.moments[:, k] += np.bincount(flat_group, weights=per_draw, minlength=n_groups)
            self.param_moments[k] += power.sum(axis=(0, 1), dtype=np.float64)
        del z2
        self.counts += np.bincount(flat_group, minlength=n_groups) * p
        np.add.at(self.param_group_sums, ids.ravel(), groups.reduce_draws(z).reshape(-1, p))
        # pooled histogram per group: one bincount over (group, slot)
        slots = bin_index(z, POOLED_RANGE, POOLED_BINS)
        slots += (slot_group * (POOLED_BINS + 2))[:, :, None]
        self.hist += np.bincount(slots.ravel(), minlength=self.hist.size).reshape(self.hist.shape)
        del slots
        # excess beyond the range: only the (rare) values outside it are touched
        group_of = np.broadcast_to(slot_group[:, :, None], z.shape)
        param_of = np.broadcast_to(np.arange(p), z.shape)
        for side, (mask, excess) in enumerate((((z < -POOLED_RANGE), lambda v: -POOLED_RANGE - v),
                                               ((z > POOLED_RANGE), lambda v: v - POOLED_RANGE))):
            if mask.any():
                self.excess[:, side] += np.bincount(group_of[mask], weights=excess(z[mask].astype(np.float64)),
                                                    minlength=n_groups)
        for side, (mask, excess) in enumerate((((z < -PARAM_RANGE), lambda v: -PARAM_RANGE - v),
                                               ((z > PARAM_RANGE), lambda v: v - PARAM_RANGE))):
            if mask.any():
                self.param_excess[side] += np.bincount(param_of[mask], weights=excess(z[mask].astype(np.float64)),
                                                       minlength=p)
        # per-parameter histogram: bincounts over (parameter, slot), a bounded number of slots at a time
        width = self.param_bins + 2
        step = max(1, BINCOUNT_SLOTS // width)
        for lo in range(0, p, step):
            hi = min(lo + step, p)
            pslots = bin_index(z[:, :, lo:hi], PARAM_RANGE, self.param_bins)
            pslots += np.arange(hi - lo) * width
            self.param_hist[lo:hi] += np.bincount(pslots.ravel(), minlength=(hi - lo) * width).reshape(hi - lo, width)


def _pooled_row(acc: _VariableAccumulator, has_prior: bool) -> dict:
    counts = acc.counts

    def moments(m):  # m: (..., 4) means
        mean, var, kurt = moment_statistics(m[..., 0], m[..., 1], m[..., 2], m[..., 3])
        return np.stack([mean, var, kurt], axis=-1)

    (mean, var, kurt), (mean_se, var_se, kurt_se) = jackknife(moments, [acc.moments], counts)

    def distances(hist_means, excess_means):
        ks, w1, _ = histogram_distances(hist_means, excess_means[..., 0], excess_means[..., 1], POOLED_RANGE)
        return np.stack([ks, w1], axis=-1)

    (ks, w1), (ks_se, w1_se) = jackknife(distances, [acc.hist.astype(np.float64), acc.excess], counts)
    gap = float(np.max(np.diff(normal_cdf(bin_edges(POOLED_RANGE, POOLED_BINS)))))
    row = {"mean": mean, "mean_se": mean_se, "var_ratio": var, "var_ratio_se": var_se,
           "excess_kurtosis": kurt, "excess_kurtosis_se": kurt_se, "ks": ks, "ks_se": ks_se, "ks_gap": gap,
           "w1": w1, "w1_se": w1_se, "n_values": int(counts.sum())}
    if not has_prior:
        row.update({k: np.nan for k in ("ks", "ks_se", "ks_gap", "w1", "w1_se")})
    return row


def _per_parameter(acc: _VariableAccumulator, n_values_per_param: int, has_prior: bool) -> pd.DataFrame:
    m = acc.param_moments / n_values_per_param
    mean, var, kurt = moment_statistics(*m)
    ks, w1, gap = histogram_distances(acc.param_hist, acc.param_excess[0], acc.param_excess[1], PARAM_RANGE)
    # ESS per parameter: variance of one draw / squared MC error of the parameter's mean.
    se = ratio_se(acc.param_group_sums, acc.counts / acc.param_moments.shape[1])  # draws per group
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = np.minimum(var / se**2, n_values_per_param)
    frame = pd.DataFrame({"mean": mean, "var_ratio": var, "excess_kurtosis": kurt, "ks": ks, "w1": w1,
                          "ess": ess, "ks_null": KS_NULL_CONSTANT / np.sqrt(ess), "ks_gap": gap})
    if not has_prior:
        frame[["ks", "w1", "ks_null", "ks_gap"]] = np.nan
    return frame


def conformity_tables(posterior_path, run: Mapping | None = None, *, param_bins: int = PARAM_BINS,
                      min_chains: int = MIN_CHAINS_FOR_CHAIN_SE, max_bytes: int = DEFAULT_BLOCK_BYTES
                      ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(summary table, {variable: per-parameter table}) for every kernel and bias of a run.

    Summary rows per variable: scope "pooled" (with jackknife SEs) and "param_q{..}" / "param_mean"
    (quantiles and mean over the variable's parameters of the per-parameter statistics).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    n_chains, n_draws = posterior_counts(posterior_path)
    groups = mc_groups(n_chains, n_draws, min_chains=min_chains, max_groups=MAX_JACKKNIFE_GROUPS)
    specs = []  # (variable, layer, kind, tau or None, n_params)
    for layer in layers:
        specs.append((layer.kernel, layer.index, "kernel", layer.kernel_scale, layer.fan_in * layer.fan_out))
        if layer.bias:
            specs.append((layer.bias, layer.index, "bias", layer.bias_scale, layer.fan_out))
    accumulators = {name: _VariableAccumulator(groups, n, param_bins) for name, _, _, _, n in specs}
    # One variable at a time keeps the block (and its int64 bin indices) small.
    for name, _, _, tau, n_params in specs:
        for first, block in iter_chain_blocks(posterior_path, "posterior", [name], max_bytes=max_bytes,
                                              dtype=np.float32):
            values = block.pop(name)
            z = values.reshape(values.shape[0], n_draws, n_params)
            if tau is not None:
                z *= np.float32(1.0 / tau)
            accumulators[name].add(first, z)

    rows, per_param = [], {}
    for name, layer, kind, tau, n_params in specs:
        acc = accumulators[name]
        common = {"run": run_name(run, posterior_path), "variable": name, "layer": layer, "kind": kind,
                  "prior_scale": tau if tau is not None else np.nan, "n_params": n_params,
                  "n_chains": n_chains, "n_draws": n_draws, "se_method": f"jackknife_{groups.method}",
                  "n_groups": groups.n_groups}
        rows.append({**common, "scope": "pooled", **_pooled_row(acc, tau is not None)})
        frame = _per_parameter(acc, n_chains * n_draws, tau is not None)
        per_param[name] = frame
        for q in QUANTILES:
            rows.append({**common, "scope": f"param_q{round(100 * q):02d}",
                         **frame.quantile(q).to_dict(), "n_values": n_chains * n_draws})
        rows.append({**common, "scope": "param_mean", **frame.mean().to_dict(), "n_values": n_chains * n_draws})
    columns = ["run", "variable", "layer", "kind", "scope", "prior_scale", "n_params", "n_values", "mean",
               "mean_se", "var_ratio", "var_ratio_se", "excess_kurtosis", "excess_kurtosis_se", "ks", "ks_se",
               "ks_gap", "w1", "w1_se", "ess", "ks_null", "n_chains", "n_draws", "se_method", "n_groups"]
    return pd.DataFrame(rows).reindex(columns=columns), per_param


def conformity_table(posterior_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    return conformity_tables(posterior_path, run, **kwargs)[0]


def analyse_conformity(posterior_path, out_path, run: Mapping | None = None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: prior-conformity table of one run -> CSV (or NetCDF) at `out_path`."""
    table = conformity_table(posterior_path, run, **kwargs)
    write_table(table, out_path)
    return table


def conformity_sweep_table(entries: Sequence[tuple[Mapping, pd.DataFrame | str | Path]],
                           scope: str = "pooled") -> pd.DataFrame:
    """One row per (run, variable) at `scope`, with the run's width, depth and tau: the sweep table
    (conformity against width/depth). `entries`: (resolved run, its conformity table or CSV path)."""
    from interplay.analysis.dirichlet import run_descriptors

    frames = []
    for run, table in entries:
        table = pd.read_csv(table) if isinstance(table, (str, Path)) else table
        rows = table[table["scope"] == scope].copy()
        for key, value in run_descriptors(run).items():
            rows[key] = value
        frames.append(rows)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["kind", "layer", "depth", "max_width", "run"]).reset_index(drop=True)
