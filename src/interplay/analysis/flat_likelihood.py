"""Flat-likelihood directions of ReLU nets: redundant units whose output weight can be remixed.

The authors' appendix (configs ``flat_likelihood/*``: 1-5-1 and 1-100-1 ReLU nets with biases on the 1-D
toy set, 5-5-1 and 5-100-1 on airfoil, 200 training points, NUTS, 12 chains, N(0, 1) prior) gauge-fixes
each hidden unit of a draw (||(w_j, b_j)|| = 1, the scale moved to its outgoing weights: a move along
the unit's rescaling orbit, which leaves the network function and so the likelihood exactly unchanged),
finds clusters of units with (nearly) collinear centred activations on the training inputs, and measures
for each cluster of k units the *mixing sensitivity*

    S = sigma_min(A_C Q),

A_C the (N, k) activations of the cluster's gauge-fixed units and Q an orthonormal basis of the
zero-sum directions {t : sum t = 0}: moving output weight t between the units (t of unit norm) changes
the next layer's input on the data by at least S. S = 0 for exact duplicates (an exactly flat direction);
small S means a nearly flat one. Here the clustering threshold is calibrated against independent prior
units (`interplay.analysis.dirichlet.null_cosine_threshold`, false-positive rate `false_positive`), the
clusters are single-linkage (`redundant_clusters`), as in the reallocation analysis.

Memory: the draws of one block of chains at a time, at most `max_inputs` inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from interplay.analysis.dirichlet import (
    _activate,
    centred_activation_cosines,
    gauge_fix,
    layer_inputs,
    null_cosine_threshold,
    redundant_clusters,
    train_inputs,
)
from interplay.analysis.monte_carlo import MIN_CHAINS_FOR_CHAIN_SE, GroupSums, mc_groups
from interplay.analysis.posterior_files import (
    network_layout,
    posterior_counts,
    read_chain_subset,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table
from interplay.specs import HOMOGENEOUS_ACTIVATIONS

S_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def zero_sum_basis(k: int) -> np.ndarray:
    """Q (k, k - 1): an orthonormal basis of {t in R^k : sum t = 0} (Helmert contrasts)."""
    if k < 2:
        return np.zeros((k, 0))
    q = np.zeros((k, k - 1))
    for j in range(1, k):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return q


def mixing_sensitivity(activations: np.ndarray) -> float:
    """S = sigma_min(A Q) of a cluster's (N, k) activations (module docstring); NaN for k < 2."""
    k = activations.shape[1]
    if k < 2:
        return np.nan
    return float(np.linalg.svd(activations @ zero_sum_basis(k), compute_uv=False).min())


def rescale_units(params: Mapping[str, np.ndarray], layer: int, factors: np.ndarray) -> dict[str, np.ndarray]:
    """Move along the rescaling orbits of hidden layer `layer`: unit j's incoming weights and bias times
    factors[j] > 0, its outgoing weights divided by it (for a positively homogeneous activation the
    network function, hence the likelihood, is unchanged)."""
    factors = np.asarray(factors, dtype=np.float64)
    if np.any(factors <= 0):
        raise ValueError("rescaling factors must be positive (ReLU is only positively homogeneous)")
    out = dict(params)
    out[f"kernel_{layer}"] = np.asarray(params[f"kernel_{layer}"]) * factors[None, :]
    if f"bias_{layer}" in params:
        out[f"bias_{layer}"] = np.asarray(params[f"bias_{layer}"]) * factors
    out[f"kernel_{layer + 1}"] = np.asarray(params[f"kernel_{layer + 1}"]) / factors[:, None]
    return out


def draw_flat_directions(params: Mapping[str, np.ndarray], x: np.ndarray, layer: int, activation: str,
                         threshold: float) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """(alive mask, clusters, their S) of hidden layer `layer` for one draw."""
    h = layer_inputs(params, x, layer, activation)
    w, b, _, _ = gauge_fix(params[f"kernel_{layer}"], params.get(f"bias_{layer}"), params[f"kernel_{layer + 1}"])
    cos, alive = centred_activation_cosines(h, w, b, activation)
    clusters = redundant_clusters(cos, alive, threshold)
    a = _activate(h @ w + b, activation)
    return alive, clusters, [mixing_sensitivity(a[:, members]) for members in clusters]


def flat_likelihood_table(posterior_path, x_train: np.ndarray, run: Mapping | None = None, *, layer: int = 0,
                          max_draws: int = 1000, max_inputs: int = 200, false_positive: float = 1e-3,
                          threshold: float | None = None, seed: int = 0,
                          min_chains: int = MIN_CHAINS_FOR_CHAIN_SE) -> pd.DataFrame:
    """Flat directions of hidden layer `layer` (module docstring) at ~`max_draws` draws (evenly thinned
    draws of the first max(min_chains, max_draws / 50) chains), as rows of kind

    - ``cluster``: chain, draw, cluster_size, s (the mixing sensitivity);
    - ``draw``: chain, draw, n_alive, n_clusters, n_redundant (sum of k - 1: the flat directions' count),
      s_median;
    - ``summary``: quantiles of s over clusters (s_q05 ... s_q95), mean n_redundant and frac_alive with
      Monte Carlo standard errors from chain groups, the threshold and the numbers analysed.

    `threshold`: a fixed cosine instead of the calibrated one (config `analysis.flat_likelihood`).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    if not 0 <= layer < len(layers) - 1:
        raise ValueError(f"layer {layer} is not a hidden layer (the net has {len(layers) - 1} hidden layers)")
    activation = run.get("model", {}).get("activation", "relu")
    if activation not in HOMOGENEOUS_ACTIVATIONS:
        raise ValueError(f"flat-likelihood directions need a homogeneous activation {HOMOGENEOUS_ACTIVATIONS} "
                         f"(gauge fixing), got {activation!r}")
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != layers[0].fan_in:
        raise ValueError(f"x_train must be (N, {layers[0].fan_in}), got shape {x.shape}")
    if len(x) > max_inputs:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_inputs, replace=False))]
    if threshold is None:  # calibrated; on 1-D inputs independent prior units are nearly collinear (~1)
        threshold, _ = null_cosine_threshold(x, run, layers, layer, false_positive=false_positive, seed=seed)
    elif not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold!r}")
    threshold = min(float(threshold), 1.0)
    n_chains, n_draws = posterior_counts(posterior_path)
    n_sel = min(n_chains, max(min_chains, max_draws // 50))
    per_chain = min(n_draws, max(1, max_draws // n_sel))
    draw_index = np.unique(np.linspace(0, n_draws - 1, per_chain).round().astype(np.int64))
    names = [n for spec in layers[:layer + 2] for n in (spec.kernel, spec.bias) if n is not None]
    groups = mc_groups(n_sel, len(draw_index), min_chains=min_chains)
    counts = GroupSums(groups, (2,))  # per draw: n_redundant, fraction alive
    rows = []
    for c in range(n_sel):
        draws = {n: read_chain_subset(posterior_path, "posterior", n, np.array([c]))[0, draw_index] for n in names}
        per_draw = np.zeros((1, len(draw_index), 2))
        for i, d in enumerate(draw_index):
            params = {n: draws[n][i] for n in names}
            alive, clusters, s = draw_flat_directions(params, x, layer, activation, threshold)
            redundant = sum(m.size - 1 for m in clusters)
            per_draw[0, i] = redundant, alive.mean()
            rows += [{"kind": "cluster", "chain": c, "draw": int(d), "cluster_size": m.size, "s": v}
                     for m, v in zip(clusters, s)]
            rows.append({"kind": "draw", "chain": c, "draw": int(d), "n_alive": int(alive.sum()),
                         "n_clusters": len(clusters), "n_redundant": redundant,
                         "s_median": float(np.median(s)) if s else np.nan})
        counts.add(c, per_draw)
    s_all = np.array([r["s"] for r in rows if r["kind"] == "cluster"], dtype=np.float64)
    mean, se = counts.mean(), counts.se()
    summary = {"kind": "summary", "n_draws_analysed": n_sel * len(draw_index), "n_chains_analysed": n_sel,
               "n_clusters": s_all.size, "n_units": layers[layer].fan_out, "n_inputs": len(x),
               "threshold": threshold, "false_positive": false_positive,
               "n_redundant_mean": mean[0], "n_redundant_se": se[0], "frac_alive": mean[1], "frac_alive_se": se[1],
               "se_method": groups.method}
    for q in S_QUANTILES:
        summary[f"s_q{round(100 * q):02d}"] = float(np.quantile(s_all, q)) if s_all.size else np.nan
    table = pd.DataFrame([summary, *rows])
    table.insert(0, "run", run_name(run, posterior_path))
    table["layer"] = layer
    return table


def analyse_flat_likelihood(posterior_path, out_path, run: Mapping | None = None, *, x_train=None,
                            data_path=None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: flat-likelihood directions (needs `x_train` or the prepared split `data_path`)."""
    table = flat_likelihood_table(posterior_path, train_inputs(x_train, data_path, "flat-likelihood"), run, **kwargs)
    write_table(table, out_path)
    return table
