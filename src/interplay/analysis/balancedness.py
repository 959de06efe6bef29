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

Convolutions (family ``filter``): scaling filter f of convolution k (its kernel slice ``K_k[..., f]`` and bias
``b_k[f]``) by lambda and every weight that reads channel f of its output by 1 / lambda (the next
convolution's ``K_{k+1}[:, :, f, :]``, or, after the last convolution, the rows of the first dense kernel
for the pixels of channel f: flattened unit i has channel i mod F) leaves a ReLU net unchanged, so the same
argument gives, per filter,

    tau_k^-2 E||K_k[..., f]||^2 + tau_b^-2 E b_k[f]^2 - tau_out^-2 E||out_f||^2
        = (kernel^2 c_in + 1) - #out_f,

#out_f = kernel'^2 c_out' (next convolution) or pixels x units_1 (first dense layer). tests/test_balancedness_conv.py
checks it on prior draws, where both sides are known.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from interplay.analysis.monte_carlo import MIN_CHAINS_FOR_CHAIN_SE, GroupSums, McGroups, mc_groups, ratio_se
from interplay.analysis.posterior_files import (
    DEFAULT_BLOCK_BYTES,
    LayerSpec,
    iter_chain_blocks,
    network_layout,
    posterior_counts,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table
from interplay.specs import HOMOGENEOUS_ACTIVATIONS

DEFAULT_LEVEL = 1e-3


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

DEFAULT_MARGIN = 0.05
VERDICTS = ("holds", "holds within margin", "inconclusive", "deviates", "untestable", "not applicable")
# Severity order of the testable outcomes: the run verdict is the most severe of its families'.
_SEVERITY = {"holds": 0, "holds within margin": 1, "inconclusive": 2, "deviates": 3}


def se_df(groups: McGroups) -> int:
    """Degrees of freedom of a standard error from `groups` (the Student t the test uses).

    Chain means (independent chains, possibly merged into contiguous sets): G - 1 for G groups.
    Batch means (fewer than MIN_CHAINS_FOR_CHAIN_SE chains, B > 1 contiguous batches per chain): the
    conservative n_chains * (B - 1) = G - n_chains, the degrees of freedom of the within-chain spread of
    batch means; it gives up one per chain for the chain's own level and the residual correlation of
    neighbouring batches. One batch per chain (very short chains) is chain means again: G - 1."""
    n_chain_groups = int(groups.chain_group.max() + 1)
    n_groups = groups.n_groups
    if groups.method == "batch_means" and groups.n_batches > 1:
        return n_groups - n_chain_groups
    return n_groups - 1


def t_tests(estimate, se, df, rhs, level: float = DEFAULT_LEVEL, *, scale=None) -> pd.DataFrame:
    """Two-sided Student-t tests of estimate == rhs over one family, Bonferroni-corrected, with the
    relative error and its simultaneous confidence interval.

    t = (estimate - rhs) / se with `df` degrees of freedom (per row); p-values from t_df; reject where
    |t| > t_critical = t_df quantile at 1 - level / (2 m), m the number of finite tests, so a family
    of exact estimates has a family-wise false-alarm rate <= level. rel_error = (estimate - rhs) /
    rel_scale with rel_scale = |rhs|, or where rhs == 0 the positive `scale` given (the left term's
    mean); rel_error_lo/hi = (estimate -+ t_critical se - rhs) / rel_scale: the Bonferroni interval,
    which excludes 0 exactly when the row is rejected."""
    estimate, se, df, rhs = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (estimate, se, df, rhs)))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (estimate - rhs) / se
        finite = np.isfinite(t) & np.isfinite(df) & (df > 0)
        n_tests = max(int(finite.sum()), 1)
        p = np.where(finite, 2 * stats.t.sf(np.abs(t), np.where(finite, df, 1.0)), np.nan)
        t_critical = np.where(finite, stats.t.isf(level / (2 * n_tests), np.where(finite, df, 1.0)), np.nan)
        fallback = np.full(estimate.shape, np.nan) if scale is None else np.abs(np.asarray(scale, np.float64))
        rel_scale = np.where(rhs != 0, np.abs(rhs), fallback)
        rel_scale = np.where(rel_scale > 0, rel_scale, np.nan)
        rel_error = (estimate - rhs) / rel_scale
        half = t_critical * se / rel_scale
    return pd.DataFrame({"t": np.where(finite, t, np.nan), "df": df, "p_value": p, "reject": finite & (np.abs(t) > t_critical),
                         "n_tests": n_tests, "t_critical": t_critical, "level": level, "rel_scale": rel_scale,
                         "rel_error": rel_error, "rel_error_lo": rel_error - half, "rel_error_hi": rel_error + half})


def family_verdict(rows: pd.DataFrame, margin: float = DEFAULT_MARGIN, *, applies: bool = True
                   ) -> tuple[str, float]:
    """(verdict, worst relative error) of one family of test rows (columns t, reject, rel_error,
    rel_error_lo, rel_error_hi).

    untestable: no finite test. not applicable: the identity does not hold for the activation (the
    numbers are still reported). holds: nothing rejected. Otherwise, over the rejected rows: deviates
    if some row's interval lies outside [-margin, margin] (a bias that matters, resolved); holds within
    margin if every rejected row's interval lies inside it (a real but negligible bias, resolved by
    many chains); inconclusive otherwise (an interval straddles the margin, or has no relative scale).
    The worst relative error is the signed rel_error of largest magnitude over the finite rows."""
    t = np.asarray(rows["t"], dtype=np.float64) if len(rows) else np.zeros(0)
    finite = np.isfinite(t)
    rel = np.asarray(rows["rel_error"], dtype=np.float64)[finite] if len(rows) else np.zeros(0)
    rel = rel[np.isfinite(rel)]
    worst = float(rel[np.argmax(np.abs(rel))]) if rel.size else float("nan")
    if not finite.any():
        return "untestable", worst
    if not applies:
        return "not applicable", worst
    rejected = rows[np.asarray(rows["reject"], dtype=bool)]
    if rejected.empty:
        return "holds", worst
    lo = rejected["rel_error_lo"].to_numpy(np.float64)
    hi = rejected["rel_error_hi"].to_numpy(np.float64)
    if ((lo > margin) | (hi < -margin)).any():
        return "deviates", worst
    if ((lo >= -margin) & (hi <= margin)).all():
        return "holds within margin", worst
    return "inconclusive", worst


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """The run verdict from its families' verdicts: the most severe testable one; 'not applicable' if
    any family is; 'untestable' if no family is testable."""
    verdicts = list(verdicts)
    if "not applicable" in verdicts:
        return "not applicable"
    testable = [v for v in verdicts if v in _SEVERITY]
    return max(testable, key=_SEVERITY.__getitem__) if testable else "untestable"


class Summary(NamedTuple):
    """Means and standard errors over the groups, per statistic (the last axis of the group sums)."""
    left: np.ndarray
    left_se: np.ndarray
    right: np.ndarray
    right_se: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    df: int
    se_method: str


def summarise(sums: GroupSums) -> Summary:
    """Summary of group sums of shape (G, ..., 2) with (left, right) on the last axis; the estimate is
    left - right with its own (paired) standard error."""
    mean, se = sums.mean(), sums.se()
    diff_sums = sums.sums[..., 0] - sums.sums[..., 1]
    diff_mean = diff_sums.sum(axis=0) / sums.counts.sum()
    diff_se = ratio_se(diff_sums, sums.counts)
    # one batch per chain (chains too short to batch) is chain means
    method = "chain_means" if sums.groups.method == "chains" or sums.groups.n_batches == 1 else "batch_means"
    return Summary(mean[..., 0], se[..., 0], mean[..., 1], se[..., 1], diff_mean, diff_se, se_df(sums.groups),
                   method)


def family_table(summary: Summary, rhs, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """The estimate, standard-error and test columns of one family from its Summary."""
    rows = pd.DataFrame({"left": summary.left, "left_se": summary.left_se, "right": summary.right,
                         "right_se": summary.right_se, "estimate": summary.estimate, "se": summary.se,
                         "se_method": summary.se_method})
    tests = t_tests(rows["estimate"], rows["se"], summary.df, rhs, level, scale=rows["left"])
    rows["rhs"] = np.broadcast_to(np.asarray(rhs), len(rows))
    return pd.concat([rows, tests], axis=1)


def draws_family_table(left_right: np.ndarray, rhs, *, level: float = DEFAULT_LEVEL,
                       min_chains: int = MIN_CHAINS_FOR_CHAIN_SE) -> pd.DataFrame:
    """One family's table from in-memory per-draw terms (chain, draw, n, 2): the same groups, standard
    errors and tests as `balancedness_table` (for tests and small studies)."""
    left_right = np.asarray(left_right, dtype=np.float64)
    groups = mc_groups(left_right.shape[0], left_right.shape[1], min_chains=min_chains)
    sums = GroupSums(groups, left_right.shape[2:])
    sums.add(0, left_right)
    return family_table(summarise(sums), rhs, level)


def verdict(table: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> str:
    """The verdict of one family's rows (see family_verdict)."""
    return family_verdict(table, margin)[0]


# ----------------------------------------------------------------------------- streaming estimate


class ConvSpec(NamedTuple):
    """One convolution of a posterior file: its leaves, prior scales and what reads its output."""

    index: int
    kernel: str
    bias: str | None
    shape: tuple[int, int, int, int]  # (kernel, kernel, c_in, filters)
    kernel_scale: float
    bias_scale: float | None
    outgoing: str                     # the next conv_kernel, or kernel_0
    outgoing_scale: float
    outgoing_per_filter: int


def conv_layout(posterior_path, layers: Sequence[LayerSpec]) -> list[ConvSpec]:
    """The convolutions stored in a posterior file (conv_kernel_k with its prior_scale attrs), in order."""
    from interplay.analysis.posterior_files import group_variables

    variables = group_variables(posterior_path, "posterior")
    kernels = sorted((n for n in variables if n.startswith("conv_kernel_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    specs = []
    for index, name in enumerate(kernels):
        var = variables[name]
        shape = tuple(var.shape[2:])
        bias = variables.get(f"conv_bias_{index}")
        if index + 1 < len(kernels):
            nxt = variables[f"conv_kernel_{index + 1}"]
            outgoing, out_scale = nxt.name, nxt.prior_scale
            per_filter = nxt.shape[2] * nxt.shape[3] * nxt.shape[5]
        else:
            first = layers[0]
            outgoing, out_scale = first.kernel, first.kernel_scale
            per_filter = first.fan_in // shape[3] * first.fan_out
        if var.prior_scale is None or out_scale is None:
            raise ValueError(f"{posterior_path}: {name} or {outgoing} has no prior_scale attr")
        specs.append(ConvSpec(index, name, None if bias is None else bias.name, shape, var.prior_scale,
                              None if bias is None else bias.prior_scale, outgoing, float(out_scale), per_filter))
    return specs


def filter_terms(kernel: np.ndarray, bias: np.ndarray | None, outgoing: np.ndarray, *, tau: float,
                 bias_tau: float | None, tau_next: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw, per-filter terms (chain, draw, filter), float64: left_f = tau^-2 ||K[..., f]||^2 + tau_b^-2
    b_f^2, right_f = tau_next^-2 ||weights reading channel f||^2. `kernel` (chain, draw, k, k, c_in, F);
    `outgoing` the next convolution's kernel (chain, draw, k', k', F, F') or the first dense kernel
    (chain, draw, pixels * F, units_1), whose row i reads channel i mod F."""
    filters = kernel.shape[-1]
    left = np.einsum("cdhwif,cdhwif->cdf", kernel, kernel).astype(np.float64) / tau**2
    if bias is not None and bias_tau is not None:
        left += np.square(bias, dtype=np.float64) / bias_tau**2
    if outgoing.ndim == 6:
        right = np.einsum("cdhwfo,cdhwfo->cdf", outgoing, outgoing)
    else:
        rows = outgoing.reshape(*outgoing.shape[:2], -1, filters, outgoing.shape[-1])
        right = np.einsum("cdpfu,cdpfu->cdf", rows, rows)
    return left, right.astype(np.float64) / tau_next**2


def filter_rhs(conv: ConvSpec) -> int:
    """(#kernel entries of one filter + its bias) - #weights reading its channel."""
    k_h, k_w, c_in, _ = conv.shape
    return k_h * k_w * c_in + (1 if conv.bias else 0) - conv.outgoing_per_filter


def _pairs(layers: Sequence[LayerSpec]) -> list[tuple[LayerSpec, LayerSpec]]:
    return list(itertools.pairwise(layers))


COLUMNS = ["run", "kind", "family", "layer", "neuron", "left", "left_se", "right", "right_se", "estimate", "se",
           "se_method", "df", "rhs", "t", "p_value", "reject", "n_tests", "t_critical", "level", "rel_scale",
           "rel_error", "rel_error_lo", "rel_error_hi", "margin", "verdict", "worst_rel_error",
           "symmetry_applies", "n_chains", "n_draws"]


def balancedness_table(posterior_path, run: Mapping | None = None, *, level: float = DEFAULT_LEVEL,
                       margin: float = DEFAULT_MARGIN, min_chains: int = MIN_CHAINS_FOR_CHAIN_SE,
                       max_bytes: int = DEFAULT_BLOCK_BYTES) -> pd.DataFrame:
    """Balancedness estimates for every hidden layer (pair l, l+1) and hidden unit, streamed over chains.

    Standard errors (column se_method, degrees of freedom df; see se_df): spread of chain means with
    >= `min_chains` chains (chains are independent), df = G - 1; otherwise batch means over contiguous
    draws of each chain, df = n_chains * (batches - 1). Tests: Student t, Bonferroni per family
    (layer pairs; units) at `level`; relative errors with simultaneous intervals judged against
    `margin` (family_verdict). Rows: kind = layer_pair | neuron | filter (convolutions) | verdict (families layer_pair, neuron, filter
    and run, the most severe of the two).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    pairs = _pairs(layers)
    n_chains, n_draws = posterior_counts(posterior_path)
    activation = str(run.get("model", {}).get("activation", "relu"))
    applies = activation in HOMOGENEOUS_ACTIVATIONS
    name = run_name(run, posterior_path)
    common = {"run": name, "n_chains": n_chains, "n_draws": n_draws, "symmetry_applies": applies}
    if not pairs:
        rows = [{"kind": "verdict", "family": family, "verdict": "untestable", "margin": margin, "level": level}
                for family in ("layer_pair", "neuron", "run")]
        return pd.DataFrame(rows).assign(**common).reindex(columns=COLUMNS)

    units = [layer.fan_out for layer, _ in pairs]
    groups = mc_groups(n_chains, n_draws, min_chains=min_chains)
    pair_sums = GroupSums(groups, (len(pairs), 2))
    neuron_sums = [GroupSums(groups, (u, 2)) for u in units]

    convs = conv_layout(posterior_path, layers)
    filter_sums = [GroupSums(groups, (conv.shape[3], 2)) for conv in convs]
    names = sorted({n for layer in layers for n in (layer.kernel, layer.bias) if n is not None}
                   | {n for conv in convs for n in (conv.kernel, conv.bias) if n is not None})
    for first, block in iter_chain_blocks(posterior_path, "posterior", names, max_bytes=max_bytes,
                                          dtype=np.float32):
        n = next(iter(block.values())).shape[0]
        for conv, sums in zip(convs, filter_sums):
            left, right = filter_terms(block[conv.kernel], block[conv.bias] if conv.bias else None,
                                       block[conv.outgoing], tau=conv.kernel_scale, bias_tau=conv.bias_scale,
                                       tau_next=conv.outgoing_scale)
            sums.add(first, np.stack([left, right], axis=-1))
        pair_block = np.empty((n, n_draws, len(pairs), 2))
        for i, (layer, nxt) in enumerate(pairs):
            args = (block[layer.kernel], block[layer.bias] if layer.bias else None, block[nxt.kernel])
            kw = {"tau": layer.kernel_scale, "bias_tau": layer.bias_scale, "tau_next": nxt.kernel_scale}
            left, right = neuron_terms(*args, **kw)
            pair_block[:, :, i, 0], pair_block[:, :, i, 1] = left.sum(axis=-1), right.sum(axis=-1)
            neuron_sums[i].add(first, np.stack([left, right], axis=-1))
        pair_sums.add(first, pair_block)

    pair_table = family_table(summarise(pair_sums), [pair_rhs(layer, nxt) for layer, nxt in pairs], level)
    pair_table.insert(0, "neuron", -1)
    pair_table.insert(0, "layer", [layer.index for layer, _ in pairs])
    pair_table["kind"] = pair_table["family"] = "layer_pair"

    # One Bonferroni family over all hidden units of the net (units of every layer together).
    neuron_summaries = [summarise(s) for s in neuron_sums]
    stacked = Summary(*(np.concatenate([getattr(s, f) for s in neuron_summaries]) for f in Summary._fields[:6]),
                      neuron_summaries[0].df, neuron_summaries[0].se_method)
    neuron_rhs_values = np.concatenate([np.full(u, neuron_rhs(layer, nxt)) for u, (layer, nxt) in zip(units, pairs)])
    neuron_table = family_table(stacked, neuron_rhs_values, level)
    neuron_table.insert(0, "neuron", np.concatenate([np.arange(u) for u in units]))
    neuron_table.insert(0, "layer", np.concatenate([np.full(u, layer.index) for u, (layer, _) in zip(units, pairs)]))
    neuron_table["kind"] = neuron_table["family"] = "neuron"

    families = [("layer_pair", pair_table), ("neuron", neuron_table)]
    if convs:  # one Bonferroni family over the filters of every convolution
        summaries = [summarise(sums) for sums in filter_sums]
        stacked = Summary(*(np.concatenate([getattr(x, f) for x in summaries]) for f in Summary._fields[:6]),
                          summaries[0].df, summaries[0].se_method)
        filter_table = family_table(stacked, np.concatenate([np.full(c.shape[3], filter_rhs(c)) for c in convs]),
                                    level)
        filter_table.insert(0, "neuron", np.concatenate([np.arange(c.shape[3]) for c in convs]))
        filter_table.insert(0, "layer", np.concatenate([np.full(c.shape[3], c.index) for c in convs]))
        filter_table["kind"] = filter_table["family"] = "filter"
        families.append(("filter", filter_table))
    verdict_rows = []
    for family, t in families:
        outcome, worst = family_verdict(t, margin, applies=applies)
        abs_t = np.abs(t["t"].to_numpy(np.float64))
        verdict_rows.append({
            "kind": "verdict", "family": family, "level": level, "margin": margin, "n_tests": int(t["n_tests"].iloc[0]),
            "df": float(t["df"].iloc[0]), "se_method": t["se_method"].iloc[0],
            "t_critical": float(np.nanmax(t["t_critical"])) if t["t_critical"].notna().any() else np.nan,
            "t": float(np.nanmax(abs_t)) if np.isfinite(abs_t).any() else np.nan,
            "verdict": outcome, "worst_rel_error": worst})
    worst_all = [r["worst_rel_error"] for r in verdict_rows if np.isfinite(r["worst_rel_error"])]
    verdict_rows.append({"kind": "verdict", "family": "run", "level": level, "margin": margin,
                         "verdict": combine_verdicts([r["verdict"] for r in verdict_rows]),
                         "worst_rel_error": max(worst_all, key=abs) if worst_all else np.nan})
    table = pd.concat([t for _, t in families] + [pd.DataFrame(verdict_rows)], ignore_index=True)
    return table.assign(**common).reindex(columns=COLUMNS)


def run_verdict(table: pd.DataFrame, family: str = "layer_pair") -> str:
    """The verdict stored in a balancedness table for `family` (layer_pair, neuron, or run)."""
    rows = table[(table["kind"] == "verdict") & (table["family"] == family)]
    if rows.empty:
        raise ValueError(f"the table has no verdict row for family {family!r}")
    return str(rows["verdict"].iloc[0])


def analyse_balancedness(posterior_path, out_path, run: Mapping | None = None, *,
                         level: float = DEFAULT_LEVEL, margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """Snakemake entry point: balancedness table of one run -> CSV (or NetCDF) at `out_path`."""
    table = balancedness_table(posterior_path, run, level=level, margin=margin)
    write_table(table, out_path)
    return table
