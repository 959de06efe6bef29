"""Laplace approximations: the paper's UCI baseline, last-layer Laplace (Daxberger et al., 2021, "Laplace
Redux"), and a diagonal-GGN variant over the last layer or the whole network.

Which parameters get a Gaussian (``subset``) and its precision's structure (``hessian``):

- ``subset: last_layer, hessian: full`` (the paper's, the default): steps 1-3 below.
- ``hessian: diagonal`` (``subset: all`` or ``last_layer``), after step 1's MAP training: the diagonal
  generalised Gauss-Newton (`diagonal_ggn`) of the chosen leaves, sum_i diag(J_i^T H_i J_i) with J_i the Jacobian of the network's
  output at training point i and H_i the Hessian of the negative log likelihood in that output (1 /
  ggn_noise_var for the Gaussian likelihood; `softmax_output_hessian` diag(p) - p p^T for a softmax), plus the
  prior precisions 1 / tau_l^2 of each leaf (the sampler itself, like the paper's variant, is regression-only:
  `check_model`). The per-point Jacobians come from one vjp per output unit, vmapped
  over a chunk of points (`jacobian_chunk`: at most `JACOBIAN_BUDGET` floats at once) and scanned over the
  chunks, so memory stays O(chunk * P). Draws: theta_MAP + sqrt(var) * z on those leaves, every other leaf
  at its MAP value. Predictive (`diagonal_linearised_predictive`): the closed-form predictive of the model
  linearised at the MAP, N(f_MAP(x), sum_j J_j(x)^2 var_j + sigma^2), in chunks of test points likewise.
  The network is not linear in its hidden layers, so the posterior group's Monte Carlo ``pred_draws`` (the
  net at the draws) differ from this (linearised, GLM) predictive, which is the one that is scored.
  The whole network's full GGN (P x P) is not offered: ``subset: all`` needs ``hessian: diagonal``.

The paper's variant, one fit per chain key (the paper: one per seed, ``chains: 1``):

1. MAP training (`train_map`): full-batch AdamW for `epochs` steps from `init_params`, keeping the
   parameters of the lowest training objective. ``objective: likelihood`` (the authors') minimises the
   mean negative log likelihood, AdamW's decoupled weight decay being the only regulariser;
   ``objective: posterior`` minimises the negative log posterior per training point (the true MAP).
2. The Gaussian over the last layer's weights and bias (`last_layer_posterior`): mean = their MAP values,
   precision = Phi^T Phi / ggn_noise_var + diag(prior precisions), Phi the (n, H [+ 1]) last hidden
   activations (and a column of ones for the bias). For a Gaussian likelihood the net is linear in these
   parameters, so this GGN is their exact Hessian (the "full" Hessian of the authors' config).
3. Draws (`draw_last_layer`): `draws` samples of the last layer from that Gaussian, every other leaf at
   its MAP value; the closed-form (linearised) predictive (`linearised_predictive`):
   N(f_MAP(x), phi(x)^T Sigma phi(x) + sigma^2), sigma the model's fixed noise (the aleatoric variance).
   Being linear in the last layer, the net's predictive under the draws converges to it exactly.

With no hidden layer, ``objective: posterior`` and ``ggn_noise_var: null`` (= sigma^2) the Gaussian is the
exact conjugate posterior of Bayesian linear regression and the predictive its exact predictive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.stats import norm

from interplay.models import (
    JAX_ACTIVATIONS,
    ModelSpec,
    PriorSpec,
    forward,
    init_params,
    log_prior,
    param_shapes,
    pointwise_log_likelihood,
)

LAPLACE_KEYS = ("lr", "weight_decay", "epochs", "draws", "objective", "ggn_noise_var", "subset", "hessian")
OBJECTIVES = ("likelihood", "posterior")
SUBSETS = ("last_layer", "all")
HESSIANS = ("full", "diagonal")
# Floats of per-point Jacobians held at once per chain (64 MiB in float32): `jacobian_chunk`.
JACOBIAN_BUDGET = 2**24


def check_model(model: ModelSpec) -> None:
    """Last-layer Laplace needs one Gaussian output with a fixed noise scale (``mean_regr`` + ``sigma``)."""
    if model.likelihood != "mean_regr" or model.sigma is None:
        raise ValueError(
            f"sampler.kind laplace needs model.likelihood 'mean_regr' with a fixed model.sigma (its aleatoric "
            f"variance; sampler.laplace.aleatoric_var sets it), got likelihood {model.likelihood!r}, "
            f"sigma {model.sigma!r}")


def check_cfg(cfg: Mapping) -> None:
    missing = [k for k in LAPLACE_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"laplace config lacks {missing} (needs {list(LAPLACE_KEYS)})")
    for key in ("epochs", "draws"):
        if int(cfg[key]) < 1:
            raise ValueError(f"laplace {key} must be a positive integer, got {cfg[key]!r}")
    if not float(cfg["lr"]) > 0:
        raise ValueError(f"laplace lr must be positive, got {cfg['lr']!r}")
    if not float(cfg["weight_decay"]) >= 0:
        raise ValueError(f"laplace weight_decay must be >= 0, got {cfg['weight_decay']!r}")
    if cfg["objective"] not in OBJECTIVES:
        raise ValueError(f"laplace objective must be one of {OBJECTIVES}, got {cfg['objective']!r}")
    if cfg["ggn_noise_var"] is not None and not float(cfg["ggn_noise_var"]) > 0:
        raise ValueError(f"laplace ggn_noise_var must be positive or null, got {cfg['ggn_noise_var']!r}")
    if cfg["subset"] not in SUBSETS:
        raise ValueError(f"laplace subset must be one of {SUBSETS}, got {cfg['subset']!r}")
    if cfg["hessian"] not in HESSIANS:
        raise ValueError(f"laplace hessian must be one of {HESSIANS}, got {cfg['hessian']!r}")
    if cfg["subset"] == "all" and cfg["hessian"] == "full":
        raise ValueError("laplace hessian 'full' needs subset 'last_layer' (the whole network's full GGN is "
                         "P x P); use hessian 'diagonal' with subset 'all'")


# ----------------------------------------------------------------------------- the last layer


def last_layer_features(model: ModelSpec, params: Mapping, x) -> jnp.ndarray:
    """Phi: the last hidden layer's activations (n, H) (the inputs for a linear model), and a column of
    ones when the model has biases: the output is Phi @ `last_layer_vector`."""
    activation = JAX_ACTIVATIONS[model.activation]
    hidden = jnp.asarray(x)
    for layer in range(model.n_layers - 1):
        hidden = hidden @ params[f"kernel_{layer}"]
        if model.bias:
            hidden = hidden + params[f"bias_{layer}"]
        hidden = activation(hidden)
    if model.bias:
        hidden = jnp.concatenate([hidden, jnp.ones((hidden.shape[0], 1), hidden.dtype)], axis=1)
    return hidden


def last_layer_vector(model: ModelSpec, params: Mapping) -> jnp.ndarray:
    """The last layer's kernel column and bias as one vector (H [+ 1],) (one output unit)."""
    last = model.n_layers - 1
    parts = [params[f"kernel_{last}"][:, 0]]
    if model.bias:
        parts.append(params[f"bias_{last}"])
    return jnp.concatenate(parts)


def with_last_layer(model: ModelSpec, params: Mapping, vector) -> dict:
    """`params` with the last layer set from `vector` (..., H [+ 1]); leading axes broadcast the rest."""
    last = model.n_layers - 1
    width = model.units[last]
    lead = vector.shape[:-1]
    out = {name: jnp.broadcast_to(value, lead + value.shape) for name, value in params.items()}
    out[f"kernel_{last}"] = vector[..., :width, None]
    if model.bias:
        out[f"bias_{last}"] = vector[..., width:]
    return out


def last_layer_prior_precision(model: ModelSpec, prior: PriorSpec) -> jnp.ndarray:
    """1 / tau^2 of each last-layer parameter (0 for a flat bias prior)."""
    last = model.n_layers - 1
    scales = [prior.scale(f"kernel_{last}")] * model.units[last]
    if model.bias:
        scales.append(prior.scale(f"bias_{last}"))
    return jnp.asarray([0.0 if s is None else 1.0 / s**2 for s in scales], jnp.float32)


def last_layer_posterior(features, mean, prior_precision, noise_var):
    """(mean, lower Cholesky factor of the precision Phi^T Phi / noise_var + diag(prior_precision))."""
    precision = features.T @ features / noise_var + jnp.diag(prior_precision)
    return mean, jnp.linalg.cholesky(precision)


def covariance(chol) -> jnp.ndarray:
    """Sigma = (L L^T)^-1 from the precision's lower Cholesky factor L."""
    inverse = jax.scipy.linalg.solve_triangular(chol, jnp.eye(chol.shape[0], dtype=chol.dtype), lower=True)
    return inverse.T @ inverse


def draw_last_layer(key, mean, chol, n_draws: int) -> jnp.ndarray:
    """(n_draws, dim) draws of N(mean, (L L^T)^-1): mean + L^-T z."""
    z = jax.random.normal(key, (n_draws, mean.shape[0]), mean.dtype)
    return mean + jax.scipy.linalg.solve_triangular(chol.T, z.T, lower=False).T


def linearised_predictive(features, mean, chol, aleatoric_var):
    """Closed-form predictive mean and variance at test features (n, dim): Phi mu, ||L^-1 phi||^2 + var."""
    v = jax.scipy.linalg.solve_triangular(chol, features.T, lower=True)
    return features @ mean, jnp.sum(v**2, axis=0) + aleatoric_var


# ----------------------------------------------------------------------------- the diagonal GGN


def subset_leaves(model: ModelSpec, subset: str) -> tuple[str, ...]:
    """The leaves a Laplace ``subset`` covers: the output layer's kernel and bias, or every leaf."""
    if subset == "last_layer":
        last = model.n_layers - 1
        return (f"kernel_{last}", f"bias_{last}") if model.bias else (f"kernel_{last}",)
    if subset == "all":
        return tuple(sorted(param_shapes(model)))
    raise ValueError(f"laplace subset must be one of {SUBSETS}, got {subset!r}")


def prior_precision_tree(prior: PriorSpec, leaves: Mapping) -> dict:
    """1 / tau^2 of every entry of each leaf in `leaves` ({name: array}; 0 for a flat prior)."""
    out = {}
    for name, value in leaves.items():
        scale = prior.scale(name)
        out[name] = jnp.full(jnp.shape(value), 0.0 if scale is None else 1.0 / scale**2, jnp.result_type(value))
    return out


def jacobian_chunk(n_params: int, n_points: int, budget: int = JACOBIAN_BUDGET) -> int:
    """Points per chunk of per-point Jacobians: at most `budget` floats (at least one point), at most n."""
    return int(max(1, min(n_points, budget // max(1, n_params))))


def point_jacobian(apply_fn: Callable, params, x_point):
    """(J, f): the Jacobian of the (out,) output `apply_fn(params, x_point)` w.r.t. `params` (a pytree like
    it, each leaf with a leading (out,) axis; one vjp per output unit) and the output itself."""
    out, vjp = jax.vjp(lambda p: apply_fn(p, x_point), params)
    return jax.vmap(lambda v: vjp(v)[0])(jnp.eye(out.shape[0], dtype=out.dtype)), out


def _chunked(x, chunk: int):
    """`x` (n, ...) zero-padded to whole chunks, (n_chunks, chunk, ...), and the mask of real points."""
    n = x.shape[0]
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    padded = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    mask = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
    return padded.reshape(n_chunks, chunk, *x.shape[1:]), mask


def gaussian_output_hessian(noise_var) -> Callable:
    """H(f) of a Gaussian likelihood with fixed noise variance: I / noise_var."""
    return lambda out: jnp.eye(out.shape[0], dtype=out.dtype) / noise_var


def softmax_output_hessian(logits) -> jnp.ndarray:
    """H(f) of the softmax (categorical) likelihood in its logits: diag(p) - p p^T."""
    p = jax.nn.softmax(logits)
    return jnp.diag(p) - jnp.outer(p, p)


def diagonal_ggn(apply_fn: Callable, params, x, output_hessian: Callable, chunk: int):
    """diag(sum_i J_i^T H(f_i) J_i) over the points of `x`, a pytree like `params`: J_i the Jacobian of
    `apply_fn(params, x_i)` (out,), `output_hessian(f_i)` (out, out). Chunks of `chunk` points are vmapped
    and scanned over, so the Jacobians held at once are (chunk, out, P)."""

    def point(x_point):
        jac, out = point_jacobian(apply_fn, params, x_point)
        h = output_hessian(out)
        return jax.tree.map(lambda j: jnp.einsum("a...,ab,b...->...", j, h, j), jac)

    def body(total, batch):
        points, mask = batch
        terms = jax.vmap(point)(points)
        return jax.tree.map(lambda t, c: t + jnp.tensordot(mask.astype(c.dtype), c, axes=1), total, terms), None

    total, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), _chunked(jnp.asarray(x), chunk))
    return total


def diagonal_posterior(ggn, prior_precision) -> dict:
    """The diagonal Gaussian's variances: 1 / (GGN diagonal + prior precision), leaf by leaf."""
    return jax.tree.map(lambda g, p: 1.0 / (g + p), ggn, prior_precision)


def draw_diagonal(key, mean: Mapping, var: Mapping, n_draws: int) -> dict:
    """{leaf: (n_draws, ...)} draws of N(mean, diag(var)): mean + sqrt(var) z, leaf by leaf."""
    names = sorted(mean)
    keys = jax.random.split(key, len(names))
    return {name: mean[name] + jnp.sqrt(var[name]) * jax.random.normal(k, (n_draws, *jnp.shape(mean[name])),
                                                                       jnp.result_type(mean[name]))
            for name, k in zip(names, keys)}


def diagonal_linearised_predictive(apply_fn: Callable, params, var, x, aleatoric_var, chunk: int):
    """Predictive mean and variance (n,) of the model linearised at `params` with one output:
    f(x) and sum_j J_j(x)^2 var_j + aleatoric_var, J the Jacobian w.r.t. `params` (the leaves of `var`),
    in chunks of `chunk` test points."""

    def point(x_point):
        jac, out = point_jacobian(apply_fn, params, x_point)
        epistemic = sum(jnp.sum(jac[name][0] ** 2 * var[name]) for name in var)
        return out[0], epistemic

    points, _ = _chunked(jnp.asarray(x), chunk)
    mean, epistemic = jax.lax.map(jax.vmap(point), points)
    n = x.shape[0]
    return mean.reshape(-1)[:n], epistemic.reshape(-1)[:n] + aleatoric_var


def _subset_apply(model: ModelSpec, params: Mapping) -> Callable:
    """f(subset leaves, x_point) -> (out_dim,): the net at `params` with the subset's leaves replaced."""
    return lambda subset, x_point: forward(model, {**params, **subset}, x_point[None])[0]


# ----------------------------------------------------------------------------- MAP training


def map_objective(model: ModelSpec, prior: PriorSpec, objective: str, x, y) -> Callable:
    """The training objective of one parameter set: mean NLL, or negative log posterior / n."""
    n = x.shape[0]

    def loss(params):
        log_lik = pointwise_log_likelihood(model, params, x, y)
        if objective == "posterior":
            return -(jnp.sum(log_lik) + log_prior(prior, params)) / n
        return -jnp.mean(log_lik)

    return loss


def train_map(model: ModelSpec, prior: PriorSpec, x, y, key, cfg: Mapping):
    """Full-batch AdamW from `init_params(model, key)`: (best params, their objective)."""
    loss = map_objective(model, prior, cfg["objective"], x, y)
    optimiser = optax.adamw(float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    params = init_params(model, key)

    def step(carry, _):
        params, opt_state, best, best_loss = carry
        value, grads = jax.value_and_grad(loss)(params)
        better = value < best_loss  # `value` is the loss of `params`, before this step's update
        best = jax.tree.map(lambda p, b: jnp.where(better, p, b), params, best)
        best_loss = jnp.where(better, value, best_loss)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, best, best_loss), None

    init = (params, optimiser.init(params), params, jnp.asarray(jnp.inf, jnp.float32))
    (params, _, best, best_loss), _ = jax.lax.scan(step, init, None, length=int(cfg["epochs"]))
    final = loss(params)
    better = final < best_loss
    best = jax.tree.map(lambda p, b: jnp.where(better, p, b), params, best)
    return best, jnp.where(better, final, best_loss)


# ----------------------------------------------------------------------------- the sampler


def fit_laplace(model: ModelSpec, prior: PriorSpec, x, y, key, cfg: Mapping) -> dict:
    """One chain's fit: {map (params), map_loss} and its Gaussian: {mean, chol} (the last layer's, full
    precision) or {var} ({leaf: variances} of the subset's leaves, diagonal; the mean is the MAP)."""
    params, map_loss = train_map(model, prior, x, y, jax.random.fold_in(key, 0), cfg)
    noise_var = model.sigma**2 if cfg["ggn_noise_var"] is None else float(cfg["ggn_noise_var"])
    if cfg["hessian"] == "diagonal":
        subset = {name: params[name] for name in subset_leaves(model, cfg["subset"])}
        n_sub = sum(int(np.prod(jnp.shape(v))) for v in subset.values())
        ggn = diagonal_ggn(_subset_apply(model, params), subset, x, gaussian_output_hessian(noise_var),
                           jacobian_chunk(n_sub, x.shape[0]))
        return {"map": params, "map_loss": map_loss,
                "var": diagonal_posterior(ggn, prior_precision_tree(prior, subset))}
    mean, chol = last_layer_posterior(last_layer_features(model, params, x), last_layer_vector(model, params),
                                      last_layer_prior_precision(model, prior), noise_var)
    return {"map": params, "map_loss": map_loss, "mean": mean, "chol": chol}


def run_laplace(model: ModelSpec, prior: PriorSpec, x, y, keys, cfg: Mapping, *,
                progress: Callable[[str, int, int], None] | None = None):
    """One Laplace fit per chain key: (draws {leaf: (chain, draw, ...)}, stats {name: (chain,)}, fits).

    `fits` (`fit_laplace`'s, with a leading chain axis) feed `laplace_predictive`. stats: `map_loss`,
    `diverged` (non-finite MAP loss, covariance factor or variances), `n_grad_evals` (= epochs),
    `warmup_seconds` (MAP training and the Laplace fit), `sampling_seconds` (the draws).
    """
    check_model(model)
    check_cfg(cfg)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    keys = jnp.asarray(keys)
    n_chain, n_draws, epochs = keys.shape[0], int(cfg["draws"]), int(cfg["epochs"])
    start = time.perf_counter()
    fits = jax.block_until_ready(
        jax.jit(jax.vmap(lambda key: fit_laplace(model, prior, x, y, key, cfg)))(keys))
    fitted = time.perf_counter()
    if progress is not None:
        progress("laplace", epochs, epochs)

    @jax.jit
    @jax.vmap
    def draw(fit, key):
        if "var" in fit:
            subset = draw_diagonal(jax.random.fold_in(key, 1), {name: fit["map"][name] for name in fit["var"]},
                                   fit["var"], n_draws)
            rest = {name: jnp.broadcast_to(value, (n_draws, *value.shape))
                    for name, value in fit["map"].items() if name not in subset}
            return {**rest, **subset}
        vectors = draw_last_layer(jax.random.fold_in(key, 1), fit["mean"], fit["chol"], n_draws)
        return with_last_layer(model, fit["map"], vectors)

    draws = jax.block_until_ready(draw(fits, keys))
    map_loss = np.asarray(fits["map_loss"], np.float64)
    gaussian = fits["var"] if "var" in fits else {"chol": fits["chol"]}
    finite = np.all([np.asarray(jnp.isfinite(leaf).reshape(n_chain, -1).all(axis=1))
                     for leaf in jax.tree.leaves(gaussian)], axis=0)
    stats = {
        "map_loss": map_loss,
        "diverged": ~np.isfinite(map_loss) | ~finite,
        "n_grad_evals": np.full(n_chain, epochs, np.int64),
        "warmup_seconds": np.full(n_chain, fitted - start),
        "sampling_seconds": np.full(n_chain, time.perf_counter() - fitted),
    }
    return draws, stats, fits


def laplace_predictive(model: ModelSpec, fits: Mapping, x_test, y_test) -> dict[str, np.ndarray]:
    """The closed-form (linearised) predictive of each chain's fit over the test split, in DESIGN.md's
    `predictive` layout: log_pred_density, pred_mean and pit, each (chain, test_point), float64. A diagonal
    fit ({var}) uses `diagonal_linearised_predictive`, a last-layer full one `linearised_predictive`."""
    check_model(model)
    x_test, y_test = jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.float32)

    @jax.jit
    @jax.vmap
    def per_chain(fit):
        if "var" in fit:
            subset = {name: fit["map"][name] for name in fit["var"]}
            n_sub = sum(int(np.prod(jnp.shape(v))) for v in subset.values())
            mean, var = diagonal_linearised_predictive(_subset_apply(model, fit["map"]), subset, fit["var"], x_test,
                                                       model.sigma**2, jacobian_chunk(n_sub, x_test.shape[0]))
        else:
            mean, var = linearised_predictive(last_layer_features(model, fit["map"], x_test), fit["mean"],
                                              fit["chol"], model.sigma**2)
        sd = jnp.sqrt(var)
        return norm.logpdf(y_test, mean, sd), mean, norm.cdf(y_test, mean, sd)

    log_density, mean, pit = (np.asarray(a, np.float64) for a in per_chain(dict(fits)))
    return {"log_pred_density": log_density, "pred_mean": mean, "pit": pit}
