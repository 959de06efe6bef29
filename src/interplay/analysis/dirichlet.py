"""Reallocation shares and their Dirichlet law (Theorem 1, Corollary 1).

Shares. In a 1-M-1 identity net without bias, f(x) = x * sum_j w_j v_j; the rescaling symmetry
moves "function mass" between the units while the total stays fixed. Two share vectors:
- rho_j = w_j v_j / sum_k w_k v_k: the units' shares of the function. They can be negative or
  exceed one (units of opposite sign), so the Dirichlet is fitted to |rho|-shares
  |w_j v_j| / sum_k |w_k v_k| (identical to rho whenever all products share one sign; the table
  reports that fraction as `frac_sign_consistent`).
- norm shares (w_j^2 + v_j^2) / sum_k (w_k^2 + v_k^2): always on the simplex.
For ReLU nets with bias, units are first gauge-fixed ((w_j, b_j) scaled to unit norm, v_j by the
inverse: the function is unchanged), redundant units are found by the cosine similarity of their
centred activations on the training inputs, and shares are taken within each redundant cluster.

Dirichlet fits use the sufficient statistic mean(log p) (streamed per Monte Carlo group): the
symmetric alpha solves K psi(K a) - K psi(a) + sum_k mean(log p_k) = 0 (one-dimensional, monotone),
the full vector Minka's fixed point followed by Newton steps. Uncertainty: observed Fisher
information (independent draws) and a sandwich with the group covariance of mean(log p), which
accounts for autocorrelation (its ratio to the Fisher variance gives an effective sample size).
The theory's value is alpha = 1/2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from sklearn.cluster import AgglomerativeClustering

from interplay.analysis.monte_carlo import (
    MIN_CHAINS_FOR_CHAIN_SE,
    GroupSums,
    bernoulli_keep,
    mc_groups,
    mean_covariance,
)
from interplay.analysis.posterior_files import (
    DEFAULT_BLOCK_BYTES,
    group_variables,
    iter_chain_blocks,
    network_layout,
    posterior_counts,
    read_chain_subset,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table
from interplay.specs import ACTIVATIONS

ALPHA_THEORY = 0.5
TINY = 1e-300  # floor inside log(share): a share of exactly zero has probability zero under a Dirichlet


# ----------------------------------------------------------------------------- shares (pure)


def identity_net_shares(kernel_0: np.ndarray, kernel_1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed function shares rho and norm shares of a 1-M-1 net: (..., 1, M), (..., M, 1) -> (..., M)."""
    w = kernel_0[..., 0, :]
    v = kernel_1[..., :, 0]
    products = w * v
    rho = products / products.sum(axis=-1, keepdims=True)
    norms = w**2 + v**2
    return rho, norms / norms.sum(axis=-1, keepdims=True)


def abs_shares(values: np.ndarray) -> np.ndarray:
    """|x_j| / sum_k |x_k| along the last axis (on the simplex)."""
    magnitude = np.abs(values)
    return magnitude / magnitude.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- Dirichlet MLE (pure)


def inverse_digamma(y: np.ndarray, iterations: int = 8) -> np.ndarray:
    """x with digamma(x) = y (Minka's initialisation + Newton)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.where(y >= -2.22, np.exp(y) + 0.5, -1.0 / (y + np.euler_gamma))
    for _ in range(iterations):
        x = x - (special.digamma(x) - y) / special.polygamma(1, x)
    return x


def symmetric_dirichlet_mle(mean_log_p: np.ndarray) -> float:
    """MLE of a in Dir(a, ..., a) from the K-vector of mean log shares."""
    mean_log_p = np.asarray(mean_log_p, dtype=np.float64)
    k = mean_log_p.size
    total = mean_log_p.sum()
    if not np.isfinite(total):
        raise ValueError("mean log shares are not finite (a share of zero?)")
    if total >= -k * np.log(k) - 1e-12:
        raise ValueError("mean log shares are those of constant uniform shares: alpha is infinite")

    def score(log_a):
        a = np.exp(log_a)
        return k * special.digamma(k * a) - k * special.digamma(a) + total

    return float(np.exp(optimize.brentq(score, np.log(1e-10), np.log(1e10), xtol=1e-14, rtol=1e-13)))


def dirichlet_mle(mean_log_p: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-12) -> np.ndarray:
    """MLE of the full alpha vector (Minka 2000): fixed point psi(a_k) = psi(sum a) + mean log p_k,
    then Newton steps with the diagonal-plus-rank-one Hessian (kept positive by step halving)."""
    m = np.asarray(mean_log_p, dtype=np.float64)
    alpha = np.full(m.size, symmetric_dirichlet_mle(m))
    for _ in range(max_iter):  # fixed point: globally convergent, linear rate
        new = inverse_digamma(special.digamma(alpha.sum()) + m)
        done = np.max(np.abs(new - alpha) / alpha) < 1e-6
        alpha = new
        if done:
            break
    for _ in range(100):  # Newton: quadratic rate near the optimum
        gradient = special.digamma(alpha.sum()) - special.digamma(alpha) + m
        q = -special.polygamma(1, alpha)
        z = special.polygamma(1, alpha.sum())
        b = np.sum(gradient / q) / (1.0 / z + np.sum(1.0 / q))
        step = (gradient - b) / q
        scale = 1.0
        while np.any(alpha - scale * step <= 0):
            scale /= 2
        alpha = alpha - scale * step
        if np.max(np.abs(scale * step) / alpha) < tol:
            break
    return alpha


def dirichlet_information(alpha: np.ndarray) -> np.ndarray:
    """Per-observation Fisher information of Dir(alpha) (= covariance of log p)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    return np.diag(special.polygamma(1, alpha)) - special.polygamma(1, alpha.sum())


def symmetric_information(a: float, k: int) -> float:
    """Per-observation Fisher information of the symmetric parameter: K psi'(a) - K^2 psi'(K a)."""
    return float(k * special.polygamma(1, a) - k**2 * special.polygamma(1, k * a))


def _log_ci(estimate, se, confidence: float):
    """Wald interval on the log scale (keeps alpha > 0)."""
    z = stats.norm.isf((1 - confidence) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = z * np.asarray(se) / np.asarray(estimate)
    return estimate * np.exp(-half), estimate * np.exp(half)


def fit_dirichlet(group_sums: np.ndarray, group_counts: np.ndarray, *, confidence: float = 0.95,
                  ci_method: str = "mc") -> pd.DataFrame:
    """Symmetric and full Dirichlet MLE from per-group sums of log shares (G, K) and counts (G,).

    Columns: fit (symmetric | full), component (-1 for the symmetric alpha), alpha, se_fisher (iid
    draws), se_mc (sandwich I^-1 Cov(mean log p) I^-1 from the group spread: autocorrelation-aware),
    n_eff (draws an iid sample would need for se_mc), ci_low/ci_high (log-scale Wald interval from
    se_mc if ci_method == "mc" and it is finite, else se_fisher), distance to the theory's 1/2, z_theory.
    """
    if ci_method not in ("mc", "fisher"):
        raise ValueError(f"ci_method must be 'mc' or 'fisher', got {ci_method!r}")
    group_sums = np.asarray(group_sums, dtype=np.float64)
    group_counts = np.asarray(group_counts, dtype=np.float64)
    n = group_counts.sum()
    k = group_sums.shape[1]
    if n < 2 or k < 2:
        raise ValueError(f"a Dirichlet fit needs >= 2 observations of >= 2 shares, got {n:.0f} x {k}")
    mean_log_p = group_sums.sum(axis=0) / n
    cov_mean = mean_covariance(group_sums, group_counts)

    a = symmetric_dirichlet_mle(mean_log_p)
    info_sym = symmetric_information(a, k)
    se_fisher_sym = 1 / np.sqrt(n * info_sym)
    se_mc_sym = np.sqrt(np.sum(cov_mean)) / info_sym  # Var(sum_k mean log p_k) / I^2

    alpha = dirichlet_mle(mean_log_p)
    info = dirichlet_information(alpha)
    info_inv = np.linalg.inv(info)
    se_fisher = np.sqrt(np.diag(info_inv) / n)
    se_mc = np.sqrt(np.clip(np.diag(info_inv @ cov_mean @ info_inv), 0, None))

    rows = []
    for fit, comps, est, sf, sm in (("symmetric", [-1], [a], [se_fisher_sym], [se_mc_sym]),
                                    ("full", range(k), alpha, se_fisher, se_mc)):
        for comp, e, f, m in zip(comps, est, sf, sm):
            use_mc = ci_method == "mc" and np.isfinite(m) and m > 0
            se = m if use_mc else f
            low, high = _log_ci(e, se, confidence)
            rows.append({"fit": fit, "component": comp, "alpha": e, "se_fisher": f, "se_mc": m,
                         "n_eff": n * (f / m) ** 2 if np.isfinite(m) and m > 0 else np.nan,
                         "ci_low": low, "ci_high": high, "ci_se": "mc" if use_mc else "fisher",
                         "confidence": confidence, "alpha_theory": ALPHA_THEORY,
                         "distance_theory": e - ALPHA_THEORY, "z_theory": (e - ALPHA_THEORY) / se,
                         "n_draws": int(n), "n_shares": k, "n_groups": int((group_counts > 0).sum())})
    return pd.DataFrame(rows)


def fit_dirichlet_samples(shares: np.ndarray, groups: np.ndarray | None = None, **kwargs) -> pd.DataFrame:
    """fit_dirichlet for share vectors in memory (N, K); `groups` (N,) labels for the sandwich error
    (default: every row its own group, i.e. independent draws)."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 2:
        raise ValueError(f"shares must be (N, K), got shape {shares.shape}")
    if np.any(shares <= 0) or not np.allclose(shares.sum(axis=1), 1, atol=1e-6):
        raise ValueError("shares must be positive and sum to one along the last axis")
    labels = np.arange(len(shares)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    sums = np.zeros((labels.max() + 1, shares.shape[1]))
    np.add.at(sums, labels, np.log(shares))
    counts = np.bincount(labels).astype(np.float64)
    return fit_dirichlet(sums, counts, **kwargs)


def beta_ks(shares: np.ndarray, a: float, b: float) -> tuple[float, float]:
    """KS statistic and p-value of share samples against Beta(a, b) (p-value assumes independence)."""
    shares = np.asarray(shares, dtype=np.float64)
    # the asymptotic p-value is exact enough for the large samples here and ~100x faster
    result = stats.kstest(shares, stats.beta(a, b).cdf, method="asymp" if len(shares) > 1000 else "auto")
    return float(result.statistic), float(result.pvalue)


def goodness_of_fit(sample: np.ndarray, fits: pd.DataFrame) -> pd.DataFrame:
    """KS of each share's marginal against the fitted Beta marginals.

    Symmetric fit: every rho_j against Beta(a, (K-1) a); full fit: rho_j against Beta(a_j, a_0 - a_j).
    `sample` (n, K) is an (approximately independent) sub-sample of the pooled share vectors.
    """
    k = sample.shape[1]
    a = float(fits.loc[fits["fit"] == "symmetric", "alpha"].iloc[0])
    full = fits.loc[fits["fit"] == "full"].sort_values("component")["alpha"].to_numpy()
    rows = []
    for j in range(k):
        ks_sym, p_sym = beta_ks(sample[:, j], a, (k - 1) * a)
        ks_full, p_full = beta_ks(sample[:, j], full[j], full.sum() - full[j])
        rows.append({"component": j, "ks_symmetric": ks_sym, "ks_pvalue_symmetric": p_sym,
                     "ks_full": ks_full, "ks_pvalue_full": p_full, "ks_n": len(sample)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- identity nets (streamed)


def is_identity_net(layers, run: Mapping) -> bool:
    model = run.get("model", {})
    return (model.get("activation") == "identity" and len(layers) == 2 and layers[0].fan_in == 1
            and layers[1].fan_out == 1 and layers[0].bias is None and layers[1].bias is None)


def identity_share_fits(posterior_path, run: Mapping | None = None, *, max_sample: int = 50_000,
                        seed: int = 0, confidence: float = 0.95, min_chains: int = MIN_CHAINS_FOR_CHAIN_SE,
                        max_bytes: int = DEFAULT_BLOCK_BYTES // 4) -> pd.DataFrame:
    """Dirichlet fits of |rho|- and norm-shares of a 1-M-1 identity net, pooled over chains and draws.

    Streams chain blocks: per-group sums of log shares (for the MLE and its errors) and a seeded
    Bernoulli sub-sample of about `max_sample` share vectors (for the KS tests).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    if not is_identity_net(layers, run):
        raise ValueError(f"{posterior_path}: not a 1-M-1 identity net without bias "
                         f"(layers {[(la.fan_in, la.fan_out, la.bias) for la in layers]}, "
                         f"activation {run.get('model', {}).get('activation')!r})")
    n_chains, n_draws = posterior_counts(posterior_path)
    m = layers[0].fan_out
    groups = mc_groups(n_chains, n_draws, min_chains=min_chains, max_groups=1000)
    sums = {"rho_abs": GroupSums(groups, (m,)), "norm": GroupSums(groups, (m,))}
    consistent = GroupSums(groups, ())
    rng = np.random.default_rng(seed)
    keep_fraction = min(1.0, max_sample / (n_chains * n_draws))
    samples = {"rho_abs": [], "norm": []}
    for first, block in iter_chain_blocks(posterior_path, "posterior", ["kernel_0", "kernel_1"], max_bytes=max_bytes):
        rho, norm = identity_net_shares(block["kernel_0"], block["kernel_1"])
        shares = {"rho_abs": abs_shares(rho), "norm": norm}
        keep = bernoulli_keep(rng, rho.shape[:2], keep_fraction)
        for key, value in shares.items():
            sums[key].add(first, np.log(np.maximum(value, TINY)))
            samples[key].append(value[keep])
        consistent.add(first, np.all((rho > 0) & (rho < 1), axis=-1).astype(np.float64))

    frames = []
    for key, accumulated in sums.items():
        fits = fit_dirichlet(accumulated.sums, accumulated.counts, confidence=confidence)
        gof = goodness_of_fit(np.concatenate(samples[key]), fits)
        fits = fits.merge(gof, on="component", how="left")
        sym = fits["fit"] == "symmetric"
        # The symmetric row summarises the per-component KS of the symmetric fit.
        fits.loc[sym, "ks_symmetric"] = gof["ks_symmetric"].max()
        fits.loc[sym, "ks_pvalue_symmetric"] = gof["ks_pvalue_symmetric"].min()
        fits.loc[sym, "ks_n"] = gof["ks_n"].iloc[0]
        fits.insert(0, "share", key)
        frames.append(fits)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "run", run_name(run, posterior_path))
    table["method"] = "identity_net"
    table["cluster_size"] = m
    table["n_clusters"] = np.nan
    table["frac_sign_consistent"] = float(consistent.mean())
    table["se_method"] = groups.method
    return table


# ----------------------------------------------------------------------------- ReLU nets


def gauge_fix(kernel_in: np.ndarray, bias: np.ndarray | None, kernel_out: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scale each unit's (w_in, b) to unit norm and its outgoing weights by the inverse.

    kernel_in (fan_in, M), bias (M,) or None, kernel_out (M, fan_out) -> (w, b, v, norm) with the same
    network function (ReLU is positively homogeneous).
    """
    b = np.zeros(kernel_in.shape[-1]) if bias is None else bias
    norm = np.sqrt(np.sum(kernel_in**2, axis=-2) + b**2)
    safe = np.where(norm > 0, norm, 1.0)
    return kernel_in / safe, b / safe, kernel_out * safe[:, None], norm


def _activate(h: np.ndarray, activation: str) -> np.ndarray:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation](h)


def layer_inputs(params: Mapping[str, np.ndarray], x: np.ndarray, layer: int, activation: str) -> np.ndarray:
    """Inputs of hidden layer `layer` (i.e. of kernel_{layer}) for one parameter draw."""
    h = np.asarray(x, dtype=np.float64)
    for i in range(layer):
        h = h @ params[f"kernel_{i}"] + params.get(f"bias_{i}", 0.0)
        h = _activate(h, activation)
    return h


def centred_activation_cosines(h: np.ndarray, w: np.ndarray, b: np.ndarray, activation: str = "relu",
                               dead_tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity (M, M) of the units' centred activations on inputs h (N, fan_in), and which
    units are alive (activation not constant on the inputs; dead units get cosine 0)."""
    a = _activate(h @ w + b, activation)
    a = a - a.mean(axis=0)
    norms = np.sqrt(np.sum(a**2, axis=0))
    alive = norms > dead_tol * max(1.0, float(norms.max(initial=0.0)))
    unit = a / np.where(alive, norms, 1.0)
    cos = unit.T @ unit
    cos[~alive, :] = 0.0
    cos[:, ~alive] = 0.0
    return cos, alive


def null_cosine_threshold(x: np.ndarray, run: Mapping, layers, layer: int, *, n_pairs: int = 4000,
                          false_positive: float = 1e-3, seed: int = 0) -> tuple[float, np.ndarray]:
    """Calibrated redundancy threshold: the (1 - false_positive) quantile of the cosine similarity of
    centred activations of two *independent* prior units (earlier layers also drawn from the prior).

    Independent prior units exceed it with probability `false_positive`, so a pair above it is
    flagged as redundant at that false-positive rate. Returns (threshold, the null cosines).
    """
    rng = np.random.default_rng(seed)
    activation = run.get("model", {}).get("activation", "relu")
    null = np.empty(n_pairs)
    n_nets = max(1, n_pairs // 50)  # earlier layers: a fresh prior net every 50 pairs
    x = np.asarray(x, dtype=np.float64)
    for net in range(n_nets):
        params = {}
        for spec in layers[:layer]:
            params[spec.kernel] = spec.kernel_scale * rng.standard_normal((spec.fan_in, spec.fan_out))
            if spec.bias is not None:
                params[spec.bias] = (spec.bias_scale or spec.kernel_scale) * rng.standard_normal(spec.fan_out)
        h = layer_inputs(params, x, layer, activation)
        spec = layers[layer]
        start, stop = net * n_pairs // n_nets, (net + 1) * n_pairs // n_nets
        count = stop - start
        w = spec.kernel_scale * rng.standard_normal((spec.fan_in, 2 * count))
        b = (spec.bias_scale or spec.kernel_scale) * rng.standard_normal(2 * count) if spec.bias else np.zeros(2 * count)
        a = _activate(h @ w + b, activation)
        a = a - a.mean(axis=0)
        a = a / np.maximum(np.sqrt(np.sum(a**2, axis=0)), 1e-300)
        null[start:stop] = np.sum(a[:, :count] * a[:, count:], axis=0)
    return float(np.quantile(null, 1 - false_positive)), null


def redundant_clusters(cos: np.ndarray, alive: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Clusters (size >= 2) of alive units linked by cosine > threshold: single-linkage agglomerative
    clustering (scikit-learn) of the alive units at cosine distance 1 - threshold."""
    units = np.flatnonzero(alive)
    if units.size < 2:
        return []
    distance = np.clip(1.0 - cos[np.ix_(units, units)], 0.0, 2.0)  # rounding can put a cosine above 1
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="single",
                                     distance_threshold=1.0 - threshold).fit(distance).labels_
    clusters = [units[labels == label] for label in np.unique(labels)]
    return [members for members in clusters if members.size >= 2]


def cluster_shares(v: np.ndarray, kernel_in: np.ndarray, bias: np.ndarray | None, kernel_out: np.ndarray,
                   members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Function shares and norm shares inside one redundant cluster.

    v: gauge-fixed outgoing weights (M, fan_out). Function share rho_j = <v_j, V> / ||V||^2 with
    V = sum over the cluster (for one output: v_j / sum v_k), the analogue of w_j v_j / sum w_k v_k.
    Norm share: (||w_in,j||^2 + b_j^2 + ||w_out,j||^2) / cluster sum, on the raw parameters.
    """
    total = v[members].sum(axis=0)
    rho = v[members] @ total / max(float(total @ total), 1e-300)
    norms = np.sum(kernel_in[:, members] ** 2, axis=0) + np.sum(kernel_out[members] ** 2, axis=1)
    if bias is not None:
        norms = norms + bias[members] ** 2
    return rho, norms / norms.sum()


def relu_cluster_fits(posterior_path, x_train: np.ndarray, run: Mapping | None = None, *, layer: int = 0,
                      max_draws: int = 2000, max_inputs: int = 2000, false_positive: float = 1e-3, seed: int = 0,
                      confidence: float = 0.95, min_chains: int = MIN_CHAINS_FOR_CHAIN_SE
                      ) -> pd.DataFrame:
    """Shares within redundant clusters of hidden layer `layer` of a ReLU net, fitted per cluster size.

    Forward passes need one draw at a time, so about `max_draws` draws are analysed: evenly thinned
    draws of the first max(min_chains, max_draws / 20) chains (chains are iid, so these are a random
    set, and contiguous chains read the fewest chunks); at most `max_inputs` training inputs.
    Per cluster size K: symmetric Dirichlet fit of |rho|- and norm-shares (units in a cluster are
    exchangeable, so only the symmetric fit is meaningful; errors from chain groups), KS of the
    pooled components against Beta(a, (K-1) a) (components of one vector are dependent, so its
    p-value is indicative only), the number of clusters and the calibrated threshold.
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    if not 0 <= layer < len(layers) - 1:
        raise ValueError(f"layer {layer} is not a hidden layer (the net has {len(layers) - 1} hidden layers)")
    activation = run.get("model", {}).get("activation", "relu")
    x_train = np.asarray(x_train, dtype=np.float64)
    if x_train.ndim != 2 or x_train.shape[1] != layers[0].fan_in:
        raise ValueError(f"x_train must be (N, {layers[0].fan_in}), got shape {x_train.shape}")
    if len(x_train) > max_inputs:  # cosines of activation patterns need no more inputs than this
        x_train = x_train[np.random.default_rng(seed).choice(len(x_train), max_inputs, replace=False)]
    threshold, _ = null_cosine_threshold(x_train, run, layers, layer, false_positive=false_positive, seed=seed)
    n_chains, n_draws = posterior_counts(posterior_path)
    # Which draws: the first n_sel chains (chains are iid, so any set is a random one, and a contiguous
    # set reads the fewest chunks), ~max_draws / n_sel evenly thinned draws of each.
    n_sel = min(n_chains, max(min_chains, max_draws // 20))
    per_chain = min(n_draws, max(1, max_draws // n_sel))
    draw_index = np.unique(np.linspace(0, n_draws - 1, per_chain).round().astype(np.int64))
    names = [n for spec in layers[:layer + 2] for n in (spec.kernel, spec.bias) if n is not None]
    spec, nxt = layers[layer], layers[layer + 1]
    stored = group_variables(posterior_path, "posterior")
    per_chain_bytes = 8 * n_draws * sum(stored[n].n_params for n in names)
    read_chains = max(1, DEFAULT_BLOCK_BYTES // max(per_chain_bytes, 1))
    records: dict[int, dict[str, list]] = {}
    n_alive, n_units, n_seen = 0, 0, 0
    chain_groups = mc_groups(n_chains, n_draws, min_chains=min_chains, max_groups=1000).chain_group
    for start in range(0, n_sel, read_chains):
        subset = np.arange(start, min(start + read_chains, n_sel))
        data = {n: read_chain_subset(posterior_path, "posterior", n, subset)[:, draw_index] for n in names}
        for ci, chain in enumerate(subset):
            for di in range(len(draw_index)):
                params = {n: data[n][ci, di] for n in names}
                h = layer_inputs(params, x_train, layer, activation)
                bias = params.get(spec.bias) if spec.bias else None
                w, b, v, _ = gauge_fix(params[spec.kernel], bias, params[nxt.kernel])
                cos, alive = centred_activation_cosines(h, w, b, activation)
                n_alive += int(alive.sum())
                n_units += alive.size
                n_seen += 1
                for members in redundant_clusters(cos, alive, threshold):
                    rho, norm = cluster_shares(v, params[spec.kernel], bias, params[nxt.kernel], members)
                    rec = records.setdefault(members.size, {"rho": [], "norm": [], "group": []})
                    rec["rho"].append(rho)
                    rec["norm"].append(norm)
                    rec["group"].append(chain_groups[chain])
    rows = []
    for size in sorted(records):
        rec = records[size]
        rho = np.asarray(rec["rho"])
        for share, values in (("rho_abs", abs_shares(rho)), ("norm", np.asarray(rec["norm"]))):
            base = {"share": share, "cluster_size": size, "n_clusters": len(values),
                    "frac_sign_consistent": float(np.mean(np.all((rho > 0) & (rho < 1), axis=1)))}
            if len(values) < 3 or np.any(values <= 0):
                rows.append({**base, "fit": "symmetric", "component": -1, "alpha": np.nan})
                continue
            fits = fit_dirichlet_samples(values, np.asarray(rec["group"]), confidence=confidence)
            sym = fits[fits["fit"] == "symmetric"].iloc[0].to_dict()
            pooled = values.ravel()
            ks, p = beta_ks(pooled, sym["alpha"], (size - 1) * sym["alpha"])
            rows.append({**base, **sym, "ks_symmetric": ks, "ks_pvalue_symmetric": p, "ks_n": len(pooled)})
    table = pd.DataFrame(rows, columns=["share", "cluster_size", "n_clusters", "frac_sign_consistent", "fit",
                                        "component", "alpha"] if not rows else None)
    table.insert(0, "run", run_name(run, posterior_path))
    table["method"] = "relu_clusters"
    table["layer"] = layer
    table["threshold"] = threshold
    table["false_positive"] = false_positive
    table["n_draws_analysed"] = n_seen
    table["frac_units_alive"] = n_alive / max(n_units, 1)
    return table


# ----------------------------------------------------------------------------- entry points


def train_inputs(x_train, data_path, analysis: str) -> np.ndarray:
    """The training inputs an analysis needs: `x_train` as given, else the prepared split at `data_path`."""
    if x_train is not None:
        return x_train
    if data_path is None:
        raise ValueError(f"the {analysis} analysis needs x_train or data_path (prepared split)")
    return load_train_inputs(data_path)


def load_train_inputs(data_path) -> np.ndarray:
    """x of the train split of a prepared data file (DESIGN.md layout)."""
    import xarray as xr

    data_path = Path(data_path)
    if not data_path.is_file():
        raise FileNotFoundError(f"prepared data file {data_path} does not exist")
    with xr.open_dataset(data_path) as ds:
        split = ds["split"].values.astype(str)
        return np.asarray(ds["x"].values[split == "train"], dtype=np.float64)


def analyse_reallocation(posterior_path, out_path, run: Mapping | None = None, *, x_train=None,
                         data_path=None, **kwargs) -> pd.DataFrame:
    """Snakemake entry point: Dirichlet reallocation table of one run.

    1-M-1 identity nets without bias: pooled shares (streamed). Other nets: redundant ReLU clusters,
    which need the training inputs (`x_train`, or `data_path` of the prepared split).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    if is_identity_net(layers, run):
        table = identity_share_fits(posterior_path, run, **kwargs)
    else:
        table = relu_cluster_fits(posterior_path, train_inputs(x_train, data_path, "ReLU reallocation"), run,
                                  **kwargs)
    write_table(table, out_path)
    return table


def _scalar(value):
    if isinstance(value, (list, tuple)):
        return value[0] if len(set(value)) == 1 else str(list(value))
    return value


def run_descriptors(run: Mapping) -> dict:
    """Sweep coordinates of a run: tau, width (first hidden layer), depth, sampler, chains."""
    hidden = list(run.get("model", {}).get("hidden", []))
    return {"run": run.get("name"), "dataset": run.get("dataset"), "tau": _scalar(run.get("prior", {}).get("scale")),
            "width": hidden[0] if hidden else 0, "max_width": max(hidden) if hidden else 0, "depth": len(hidden),
            "activation": run.get("model", {}).get("activation"), "sampler": run.get("sampler", {}).get("kind"),
            "chains": run.get("sampler", {}).get("chains")}


def reallocation_sweep_table(entries: Sequence[tuple[Mapping, pd.DataFrame | str | Path]]) -> pd.DataFrame:
    """Symmetric alpha against tau and M (= width) across runs: one row per (run, share, cluster size).

    `entries`: (resolved run, its reallocation table or the table's CSV path).
    """
    frames = []
    for run, table in entries:
        table = pd.read_csv(table) if isinstance(table, (str, Path)) else table
        sym = table[table["fit"] == "symmetric"].copy()
        for key, value in run_descriptors(run).items():
            sym[key] = value
        frames.append(sym)
    if not frames:
        return pd.DataFrame()
    columns = ["run", "dataset", "tau", "width", "depth", "activation", "sampler", "chains", "method", "share",
               "cluster_size", "alpha", "se_mc", "se_fisher", "ci_low", "ci_high", "distance_theory", "z_theory",
               "ks_symmetric", "n_draws", "n_clusters"]
    out = pd.concat(frames, ignore_index=True)
    return out.reindex(columns=[c for c in columns if c in out.columns]).sort_values(
        ["share", "tau", "width", "run"]).reset_index(drop=True)
