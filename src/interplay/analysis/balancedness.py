"""Balancedness: the layer-norm identity of the rescaling symmetry (Theorem 2).

Derivation (Stein identity). For a positively homogeneous activation (ReLU, identity) the map
``(W_l, b_l, K_{l+1}) -> (lambda W_l, lambda b_l, K_{l+1} / lambda)`` leaves the network function,
hence the likelihood, unchanged. Its generator is the vector field
``v(theta) = (W_l, b_l, -K_{l+1}, 0, ...)`` with divergence ``d_l - d_{l+1}``, where
``d_l = #kernel_l + #bias_l`` and ``d_{l+1} = #kernel_{l+1}``. For any posterior density p,
integration by parts gives ``E[grad log p . v + div v] = 0``; the likelihood drops out of
``grad log p . v`` (invariance) and the Gaussian prior leaves
``-tau_l^-2 ||W_l||^2 - tau_b^-2 ||b_l||^2 + tau_{l+1}^-2 ||K_{l+1}||^2``. Hence

    tau_l^-2 E||W_l||^2 + tau_b^-2 E||b_l||^2 - tau_{l+1}^-2 E||K_{l+1}||^2 = d_l - d_{l+1}.

A flat bias prior contributes no bias term, but the bias still counts in the divergence. The
same argument for one hidden unit j (scale its incoming weights and bias, unscale its outgoing
weights) gives ``tau_l^-2 E||w_in,j||^2 + tau_b^-2 E b_j^2 - tau_{l+1}^-2 E||w_out,j||^2 =
(fan_in + 1) - fan_out`` (fan_in alone without a bias). tanh is not homogeneous: the identity
does not apply there (the table says so but still reports the numbers).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from interplay.analysis.streaming import (
    DEFAULT_BLOCK_BYTES,
    MIN_CHAINS_FOR_CHAIN_SE,
    GroupSums,
    LayerSpec,
    ess_mean_se,
    iter_chain_blocks,
    mc_groups,
    network_layout,
    posterior_counts,
    ratio_se,
    read_run_config,
    run_name,
    write_table,
)

HOMOGENEOUS_ACTIVATIONS = ("relu", "identity", "linear")
DEFAULT_LEVEL = 1e-3
MAX_PER_DRAW_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------- per-draw terms (pure)


def neuron_terms(kernel: np.ndarray, bias: np.ndarray | None, kernel_next: np.ndarray, *, tau: float,
                 bias_tau: float | None, tau_next: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw, per-hidden-unit terms: arrays (chain, draw, unit) in float64 for the units between
    the layers: left_j = tau^-2 ||w_in,j||^2 + tau_b^-2 b_j^2 (no bias term for a flat prior:
    bias_tau None), right_j = tau_next^-2 ||w_out,j||^2. Float32 input is squared and summed over one
    unit's fan-in / fan-out in float32 (relative error ~1e-7); everything after is float64."""
    left = np.einsum("cdij,cdij->cdj", kernel, kernel).astype(np.float64) / tau**2
    if bias is not None and bias_tau is not None:
        left += np.square(bias, dtype=np.float64) / bias_tau**2
    right = np.einsum("cdjk,cdjk->cdj", kernel_next, kernel_next).astype(np.float64) / tau_next**2
    return left, right


def pair_terms(kernel: np.ndarray, bias: np.ndarray | None, kernel_next: np.ndarray, *, tau: float,
               bias_tau: float | None, tau_next: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw left and right terms of the layer identity, arrays (chain, draw): the sums of the
    unit terms, left = tau^-2 ||kernel||^2 + tau_b^-2 ||bias||^2, right = tau_next^-2 ||kernel_next||^2."""
    left, right = neuron_terms(kernel, bias, kernel_next, tau=tau, bias_tau=bias_tau, tau_next=tau_next)
    return left.sum(axis=-1), right.sum(axis=-1)


def pair_rhs(layer: LayerSpec, next_layer: LayerSpec) -> int:
    """d_l - d_{l+1} = (#kernel_l + #bias_l) - #kernel_{l+1} (biases count even under a flat prior)."""
    d_l = layer.fan_in * layer.fan_out + (layer.fan_out if layer.bias else 0)
    return d_l - next_layer.fan_in * next_layer.fan_out


def neuron_rhs(layer: LayerSpec, next_layer: LayerSpec) -> int:
    return layer.fan_in + (1 if layer.bias else 0) - next_layer.fan_out


# ----------------------------------------------------------------------------- tests and verdict


def z_tests(estimate, se, rhs, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """z-scores, two-sided p-values and Bonferroni rejections of estimate == rhs over one family."""
    estimate, se, rhs = (np.asarray(a, dtype=np.float64) for a in (estimate, se, rhs))
    z = (estimate - rhs) / se
    p = 2 * stats.norm.sf(np.abs(z))
    n_tests = max(int(np.isfinite(z).sum()), 1)
    z_critical = stats.norm.isf(level / (2 * n_tests))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_error = np.where(rhs != 0, (estimate - rhs) / np.abs(rhs), np.nan)
    return pd.DataFrame({"z": z, "p_value": p, "rel_error": rel_error, "reject": np.abs(z) > z_critical,
                         "n_tests": n_tests, "z_critical": z_critical, "level": level})


def verdict(table: pd.DataFrame) -> str:
    """'holds' / 'violated' (any Bonferroni rejection) / 'untestable' (no finite z)."""
    if table.empty or not np.isfinite(table["z"]).any():
        return "untestable"
    return "violated" if bool(table["reject"].any()) else "holds"


# ----------------------------------------------------------------------------- streaming estimate


def _pairs(layers: Sequence[LayerSpec]) -> list[tuple[LayerSpec, LayerSpec]]:
    return list(itertools.pairwise(layers))


def balancedness_table(posterior_path, run: Mapping | None = None, *, level: float = DEFAULT_LEVEL,
                       min_chains: int = MIN_CHAINS_FOR_CHAIN_SE, max_bytes: int = DEFAULT_BLOCK_BYTES
                       ) -> pd.DataFrame:
    """Balancedness estimates for every hidden layer (pair l, l+1) and hidden unit, streamed over chains.

    Standard errors: spread of chain means with >= `min_chains` chains (chains are independent);
    otherwise sd / sqrt(ESS) with ArviZ's ESS of the per-draw statistic (the per-draw statistics of
    so few chains are small enough to keep; past MAX_PER_DRAW_BYTES, batch means instead).
    Rows: kind = layer_pair | neuron | verdict.
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    pairs = _pairs(layers)
    n_chains, n_draws = posterior_counts(posterior_path)
    activation = str(run.get("model", {}).get("activation", "relu"))
    applies = activation in HOMOGENEOUS_ACTIVATIONS
    name = run_name(run, posterior_path)
    if not pairs:
        return pd.DataFrame([{"run": name, "kind": "verdict", "family": "layer_pair", "verdict": "untestable",
                              "symmetry_applies": applies, "n_chains": n_chains, "n_draws": n_draws}])

    units = [layer.fan_out for layer, _ in pairs]
    # Few chains: keep the per-draw statistics for ArviZ's ESS, unless they would be large (then
    # batch means over contiguous draws, which needs only per-batch sums).
    per_draw_bytes = n_chains * n_draws * (len(pairs) + sum(units)) * 2 * 8
    use_ess = n_chains < min_chains and per_draw_bytes <= MAX_PER_DRAW_BYTES
    if use_ess:
        pair_draws = np.zeros((n_chains, n_draws, len(pairs), 2))
        neuron_draws = [np.zeros((n_chains, n_draws, u, 2)) for u in units]
    else:
        groups = mc_groups(n_chains, n_draws, min_chains=min_chains)
        pair_sums = GroupSums(groups, (len(pairs), 2))
        neuron_sums = [GroupSums(groups, (u, 2)) for u in units]

    names = sorted({n for layer in layers for n in (layer.kernel, layer.bias) if n is not None})
    for first, block in iter_chain_blocks(posterior_path, "posterior", names, max_bytes=max_bytes,
                                          dtype=np.float32):
        n = next(iter(block.values())).shape[0]
        pair_block = np.empty((n, n_draws, len(pairs), 2))
        for i, (layer, nxt) in enumerate(pairs):
            args = (block[layer.kernel], block[layer.bias] if layer.bias else None, block[nxt.kernel])
            kw = {"tau": layer.kernel_scale, "bias_tau": layer.bias_scale, "tau_next": nxt.kernel_scale}
            left, right = neuron_terms(*args, **kw)
            pair_block[:, :, i, 0], pair_block[:, :, i, 1] = left.sum(axis=-1), right.sum(axis=-1)
            if use_ess:
                neuron_draws[i][first:first + n] = np.stack([left, right], axis=-1)
            else:
                neuron_sums[i].add(first, np.stack([left, right], axis=-1))
        if use_ess:
            pair_draws[first:first + n] = pair_block
        else:
            pair_sums.add(first, pair_block)

    def summarise(left_right_draws=None, sums: GroupSums | None = None):
        """(left, left_se, right, right_se, diff, diff_se, ess) arrays over the last axis groups."""
        if sums is None:
            lr = left_right_draws
            diff = lr[..., 0] - lr[..., 1]
            left, left_se, _ = ess_mean_se(lr[..., 0])
            right, right_se, _ = ess_mean_se(lr[..., 1])
            est, se, ess = ess_mean_se(diff)
            return left, left_se, right, right_se, est, se, ess, "ess"
        mean, se = sums.mean(), sums.se()
        diff_sums = sums.sums[..., 0] - sums.sums[..., 1]
        diff_mean = diff_sums.sum(axis=0) / sums.counts.sum()
        diff_se = ratio_se(diff_sums, sums.counts)
        ess = np.full(diff_mean.shape, np.nan)
        method = "chain_means" if sums.groups.method == "chains" else "batch_means"
        return mean[..., 0], se[..., 0], mean[..., 1], se[..., 1], diff_mean, diff_se, ess, method

    common = {"run": name, "n_chains": n_chains, "n_draws": n_draws, "symmetry_applies": applies}
    pair_summary = summarise(pair_draws if use_ess else None, None if use_ess else pair_sums)
    rows = pd.DataFrame({
        "kind": "layer_pair", "layer": [layer.index for layer, _ in pairs], "neuron": -1,
        "left": pair_summary[0], "left_se": pair_summary[1], "right": pair_summary[2],
        "right_se": pair_summary[3], "estimate": pair_summary[4], "se": pair_summary[5],
        "ess": pair_summary[6], "se_method": pair_summary[7],
        "rhs": [pair_rhs(layer, nxt) for layer, nxt in pairs],
    })
    pair_table = pd.concat([rows, z_tests(rows["estimate"], rows["se"], rows["rhs"], level)], axis=1)
    pair_table["family"] = "layer_pair"

    neuron_rows = []
    for i, (layer, nxt) in enumerate(pairs):
        summary = summarise(neuron_draws[i] if use_ess else None, None if use_ess else neuron_sums[i])
        neuron_rows.append(pd.DataFrame({
            "kind": "neuron", "layer": layer.index, "neuron": np.arange(units[i]),
            "left": summary[0], "left_se": summary[1], "right": summary[2], "right_se": summary[3],
            "estimate": summary[4], "se": summary[5], "ess": summary[6], "se_method": summary[7],
            "rhs": neuron_rhs(layer, nxt),
        }))
    neuron_table = pd.concat(neuron_rows, ignore_index=True)
    neuron_table = pd.concat([neuron_table, z_tests(neuron_table["estimate"], neuron_table["se"],
                                                    neuron_table["rhs"], level)], axis=1)
    neuron_table["family"] = "neuron"

    verdict_rows = pd.DataFrame([
        {"kind": "verdict", "family": family, "level": level, "n_tests": int(t["n_tests"].iloc[0]),
         "z_critical": float(t["z_critical"].iloc[0]), "z": float(np.nanmax(np.abs(t["z"]))),
         "verdict": verdict(t) if applies else f"{verdict(t)} (symmetry does not apply to {activation})"}
        for family, t in (("layer_pair", pair_table), ("neuron", neuron_table))
    ])
    table = pd.concat([pair_table, neuron_table, verdict_rows], ignore_index=True)
    for key, value in common.items():
        table[key] = value
    columns = ["run", "kind", "family", "layer", "neuron", "left", "left_se", "right", "right_se", "estimate",
               "se", "se_method", "ess", "rhs", "z", "p_value", "rel_error", "reject", "n_tests", "z_critical",
               "level", "verdict", "symmetry_applies", "n_chains", "n_draws"]
    return table.reindex(columns=columns)


def run_verdict(table: pd.DataFrame, family: str = "layer_pair") -> str:
    """The run-level verdict stored in a balancedness table."""
    rows = table[(table["kind"] == "verdict") & (table["family"] == family)]
    if rows.empty:
        raise ValueError(f"the table has no verdict row for family {family!r}")
    return str(rows["verdict"].iloc[0])


def analyse_balancedness(posterior_path, out_path, run: Mapping | None = None, *,
                         level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """Snakemake entry point: balancedness table of one run -> CSV (or NetCDF) at `out_path`."""
    table = balancedness_table(posterior_path, run, level=level)
    write_table(table, out_path)
    return table
