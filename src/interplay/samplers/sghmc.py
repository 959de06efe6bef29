"""Scale-adapted SGHMC (Springenberg et al. 2016; the authors' ``AdaSGHMC``) on minibatches, many chains at once.

The kernel, in BlackJAX's style (a NamedTuple state, small pure functions of one chain):

- ``grad`` is a minibatch estimate of the gradient of the log posterior, log prior + (n / B) * sum of the
  batch's log likelihoods (`blackjax.sgmcmc.gradients.grad_estimator`); non-finite entries are set to 0 and
  entries clipped to +-1e6, as the authors do.
- **Step** (`sghmc_step`): with probability ``resample_momentum`` the momentum is redrawn from its
  stationary law N(0, s) (``momentum_reset: draw``, a Gibbs step that keeps the target) or, as in the authors'
  code, set to zero (``momentum_reset: zero``, which cools the chain: tests/test_sghmc.py); then
  ``m <- (1 - mdecay) m + eps grad + sqrt(max(2 mdecay s - (eps s)^2, 1e-7)) z`` and
  ``theta <- theta + eps m / s``, z ~ N(0, I). This is SGHMC with the diagonal mass matrix ``s``, friction
  ``C = mdecay s / eps`` and the minibatch noise estimate ``B = eps s^2 / 2`` subtracted from the injected
  noise, so its stationary law is the posterior up to the discretisation (and the noise-estimate) error.
- **Scale adaptation** (`adapt_scale`, warmup steps only, before each step): the window
  ``tau <- tau (1 - g^2 / (s^2 + 1e-7)) + 1``, the smoothed gradient of the potential
  ``g <- g (1 - 1 / (tau + 1)) - grad / (tau + 1)`` and the scale ``s <- sqrt(s^2 (1 - 1 / (tau + 1)) +
  grad^2 / (tau + 1))`` (at least sqrt(1e-7)), with the previous step's ``grad``: pybnn's adaptive SGHMC
  as the authors implement it (s, tau and g start at 1, momentum and grad at 0). The sampling steps keep ``s``.

Minibatches: each chain shuffles the training set with its own key every epoch (`epoch_order`) and takes its
``n // batch_size`` batches in turn (the remainder of an epoch is dropped, a different one each epoch), so a
chain's draws depend on its own key only. Per device, chains run in groups of a fixed width
(`interplay.samplers.map_chains`, ``chain_batch``) and split over the devices as MILE's
(`on_chain_shards`), so chain c's bits do not depend on its block on a CPU.

`run_sghmc_block` is the `sample` job's entry: the deep-ensemble warm start (`interplay.samplers.warmstart`,
as for MILE; checkpointed as MILE's is), then `run_sghmc` from the members.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.sgmcmc.gradients import grad_estimator
from blackjax.util import generate_gaussian_noise

from interplay.models import log_prior, pointwise_log_likelihood
from interplay.samplers import (
    check_chain_inputs,
    kernel_group_width,
    map_chains,
    on_chain_shards,
    spread_chains,
)

SGHMC_KEYS = ("batch_size", "warmup_steps", "steps", "thin", "step_size", "mdecay", "resample_momentum")
MAX_GRAD = 1e6  # gradient and smoothed-gradient clipping (the authors')
MIN_VARIANCE = 1e-7


class AdaSGHMCState(NamedTuple):
    """One chain: position, momentum, per-parameter scale ``s`` (mass), the adaptation's window ``tau``
    and smoothed potential gradient ``g``, and the last minibatch gradient of the log posterior."""

    position: dict
    momentum: dict
    scale: dict
    window: dict
    smooth_grad: dict
    grad: dict


def init(position) -> AdaSGHMCState:
    zeros = jax.tree.map(jnp.zeros_like, position)
    ones = jax.tree.map(jnp.ones_like, position)
    return AdaSGHMCState(position, zeros, ones, ones, ones, zeros)


def sanitise(grad):
    """Non-finite gradient entries set to 0, the rest clipped to +-MAX_GRAD."""
    return jax.tree.map(lambda g: jnp.clip(jnp.where(jnp.isfinite(g), g, 0.0), -MAX_GRAD, MAX_GRAD), grad)


def adapt_scale(state: AdaSGHMCState) -> AdaSGHMCState:
    """One scale-adaptation update from the previous gradient (module docstring)."""
    window = jax.tree.map(lambda t, g, s: t * (1 - jnp.square(g) / (jnp.square(s) + MIN_VARIANCE)) + 1.0,
                          state.window, state.smooth_grad, state.scale)
    smooth_grad = jax.tree.map(lambda g, t, d: jnp.clip(g * (1 - 1 / (t + 1)) - d / (t + 1), -MAX_GRAD, MAX_GRAD),
                               state.smooth_grad, window, state.grad)
    scale = jax.tree.map(lambda s, d, t: jnp.sqrt(jnp.maximum(jnp.square(s) * (1 - 1 / (t + 1))
                                                              + jnp.square(d) / (t + 1), MIN_VARIANCE)),
                         state.scale, state.grad, window)
    return state._replace(window=window, smooth_grad=smooth_grad, scale=scale)


MOMENTUM_RESETS = ("draw", "zero")


def sghmc_step(key, state: AdaSGHMCState, grad, step_size: float, mdecay: float,
               resample_momentum: float, momentum_reset: str = "draw") -> AdaSGHMCState:
    """One SGHMC step at the fixed scale, given the minibatch gradient at ``state.position``."""
    key_reset, key_noise, key_momentum = jax.random.split(key, 3)
    reset = jax.random.bernoulli(key_reset, resample_momentum)
    if momentum_reset == "draw":
        fresh = jax.tree.map(lambda z, s: z * jnp.sqrt(s), generate_gaussian_noise(key_momentum, state.position),
                             state.scale)
    elif momentum_reset == "zero":
        fresh = jax.tree.map(jnp.zeros_like, state.momentum)
    else:
        raise ValueError(f"sampler.sghmc.momentum_reset must be one of {MOMENTUM_RESETS}, got {momentum_reset!r}")
    momentum = jax.tree.map(lambda m, f: jnp.where(reset, f, m), state.momentum, fresh)
    grad = sanitise(grad)
    noise = generate_gaussian_noise(key_noise, state.position)
    momentum = jax.tree.map(
        lambda m, d, s, z: (1 - mdecay) * m + step_size * d
        + z * jnp.sqrt(jnp.maximum(2 * mdecay * s - jnp.square(step_size * s), MIN_VARIANCE)),
        momentum, grad, state.scale, noise)
    position = jax.tree.map(lambda p, m, s: p + step_size * m / s, state.position, momentum, state.scale)
    return state._replace(position=position, momentum=momentum, grad=grad)


def epoch_order(key, epoch, n_train: int) -> jnp.ndarray:
    """A chain's order of the training points in `epoch`."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n_train).astype(jnp.int32)


def minibatch_gradient(model, prior, n_train: int) -> Callable:
    """grad(position, (x_batch, y_batch)) of log prior + n_train * mean batch log likelihood (BlackJAX's
    estimator on the network's per-point log likelihood)."""
    def loglikelihood(position, point):
        x, y = point
        return pointwise_log_likelihood(model, position, x[None], y[None])[0]

    return grad_estimator(lambda position: log_prior(prior, position), loglikelihood, n_train)


def _check_cfg(cfg: Mapping, n_train: int) -> dict:
    missing = [k for k in SGHMC_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"sghmc config lacks {missing} (needs {list(SGHMC_KEYS)})")
    resolved = dict(cfg)
    for key in ("batch_size", "steps", "thin"):
        if isinstance(cfg[key], bool) or int(cfg[key]) < 1:
            raise ValueError(f"sampler.sghmc.{key} must be a positive integer, got {cfg[key]!r}")
    if int(cfg["warmup_steps"]) < 0:
        raise ValueError(f"sampler.sghmc.warmup_steps must be >= 0, got {cfg['warmup_steps']!r}")
    if int(cfg["steps"]) % int(cfg["thin"]):
        raise ValueError(f"sampler.sghmc.steps ({cfg['steps']}) must be a multiple of thin ({cfg['thin']})")
    if not float(cfg["step_size"]) > 0 or not 0 < float(cfg["mdecay"]) <= 1:
        raise ValueError(f"sampler.sghmc needs step_size > 0 and 0 < mdecay <= 1, got {cfg['step_size']!r}, "
                         f"{cfg['mdecay']!r}")
    if cfg.get("momentum_reset", "draw") not in MOMENTUM_RESETS:
        raise ValueError(f"sampler.sghmc.momentum_reset must be one of {MOMENTUM_RESETS}, got "
                         f"{cfg['momentum_reset']!r}")
    if not 0 <= float(cfg["resample_momentum"]) <= 1:
        raise ValueError(f"sampler.sghmc.resample_momentum must lie in [0, 1], got {cfg['resample_momentum']!r}")
    resolved["batch_size"] = min(int(cfg["batch_size"]), n_train)
    return resolved


def run_sghmc(model, prior, x_train, y_train, initial_positions, keys, cfg: Mapping, *,
              progress: Callable[[str, int, int], None] | None = None):
    """Adaptive SGHMC for every chain: (draws {leaf: (chain, draw, ...)}, stats {name: (chain,)}).

    cfg: batch_size, warmup_steps (scale adaptation, not stored), steps, thin, step_size, mdecay,
    resample_momentum, optional momentum_reset ("draw", default, or "zero") and chain_batch. stats: step_size, mean_scale (the adapted s averaged over the
    parameters), n_grad_evals (minibatch gradients), warmup_seconds, sampling_seconds, diverged (non-finite
    final position). `progress` is told when each phase ends.
    """
    x_train, y_train = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train)
    n_train = int(x_train.shape[0])
    if n_train == 0:
        raise ValueError("sghmc needs at least one training point")
    cfg = _check_cfg(cfg, n_train)
    n_chains = check_chain_inputs(initial_positions, keys)
    batch_size, warmup, steps, thin = (int(cfg[k]) for k in ("batch_size", "warmup_steps", "steps", "thin"))
    n_batches = n_train // batch_size
    step_size, mdecay, reset = float(cfg["step_size"]), float(cfg["mdecay"]), float(cfg["resample_momentum"])
    momentum_reset = str(cfg.get("momentum_reset", "draw"))
    gradient = minibatch_gradient(model, prior, n_train)
    mesh, positions, keys, _ = spread_chains(None, initial_positions, jnp.asarray(keys), cfg.get("chain_batch"),
                                             group_gradients=False)
    width = kernel_group_width(cfg.get("chain_batch"), mesh.devices.flat[0].platform)

    def advance(carry, t, adapt: bool):
        """Step t (global: warmup steps first) of one chain."""
        state, order, key = carry
        batch_key, step_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        order = jax.lax.cond(t % n_batches == 0, lambda: epoch_order(batch_key, t // n_batches, n_train),
                             lambda: order)
        rows = jax.lax.dynamic_slice_in_dim(order, (t % n_batches) * batch_size, batch_size)
        if adapt:
            state = adapt_scale(state)
        grad = gradient(state.position, (x_train[rows], y_train[rows]))
        state = sghmc_step(jax.random.fold_in(step_key, t), state, grad, step_size, mdecay, reset, momentum_reset)
        return (state, order, key), None

    def warmup_chain(position, key):
        carry = (init(position), jnp.zeros(n_train, jnp.int32), key)
        carry, _ = jax.lax.scan(lambda c, t: advance(c, t, True), carry, jnp.arange(warmup))
        return carry

    def sample_chain(carry):
        def draw(carry, first):
            carry, _ = jax.lax.scan(lambda c, t: advance(c, t, False), carry, first + jnp.arange(thin))
            return carry, carry[0].position

        carry, draws = jax.lax.scan(draw, carry, warmup + thin * jnp.arange(steps // thin))
        return carry, draws

    @jax.jit
    def warmup_program(positions, keys):
        return on_chain_shards(lambda p, k: map_chains(warmup_chain, width, p, k), mesh, (positions, keys))

    @jax.jit
    def sampling_program(carry):
        return on_chain_shards(lambda c: map_chains(sample_chain, width, c), mesh, (carry,))

    start = time.perf_counter()
    carry = jax.block_until_ready(warmup_program(positions, keys))
    warmup_seconds = time.perf_counter() - start
    if progress is not None:
        progress("sghmc warmup", warmup, warmup)
    start = time.perf_counter()
    carry, draws = jax.block_until_ready(sampling_program(carry))
    sampling_seconds = time.perf_counter() - start
    if progress is not None:
        progress("sghmc sampling", steps, steps)

    state = jax.tree.map(lambda leaf: leaf[:n_chains], carry[0])
    draws = {name: np.asarray(leaf[:n_chains]) for name, leaf in draws.items()}
    scales = np.concatenate([np.asarray(s).reshape(n_chains, -1) for s in jax.tree.leaves(state.scale)], axis=1)
    finite = np.stack([np.isfinite(np.asarray(p).reshape(n_chains, -1)).all(axis=1)
                       for p in jax.tree.leaves(state.position)]).all(axis=0)
    stats = {
        "step_size": np.full(n_chains, step_size),
        "mean_scale": scales.astype(np.float64).mean(axis=1),
        "n_grad_evals": np.full(n_chains, warmup + steps, np.int64),
        "warmup_seconds": np.full(n_chains, warmup_seconds),
        "sampling_seconds": np.full(n_chains, sampling_seconds),
        "diverged": ~finite,
    }
    return draws, stats


def run_sghmc_block(model, prior, train, valid, warmstart_keys, sampler_keys, sampler: Mapping, *,
                    progress: Callable[[str, int, int], None] | None = None, checkpoint=None):
    """A `sample` job's sghmc chains: the warm start (``sampler.warmstart``), then `run_sghmc`
    (``sampler.sghmc``). Returns (draws, stats, causes of divergence {cause: (chain,) bools})."""
    from interplay.samplers.warmstart import train_ensemble_with_info, warmstart_grad_evals

    y_dtype = jnp.int32 if model.likelihood == "class" else jnp.float32
    (x_train, y_train), (x_valid, y_valid) = train, valid
    start = time.perf_counter()
    members, val_loss, epochs = train_ensemble_with_info(
        model, prior, x_train, y_train, np.asarray(x_valid), np.asarray(y_valid, y_dtype), warmstart_keys,
        sampler["warmstart"], progress=progress, checkpoint=checkpoint)
    val_loss = np.asarray(val_loss, np.float64)
    epochs = np.asarray(epochs, np.int64)
    n_chain = val_loss.shape[0]
    seconds = checkpoint.stage_seconds("warmstart") if checkpoint is not None else time.perf_counter() - start
    stats = {"warmstart_seconds": np.full(n_chain, seconds), "warmstart_epochs": epochs,
             "warmstart_grad_evals": np.asarray(warmstart_grad_evals(epochs, np.shape(x_train)[0],
                                                                     int(sampler["warmstart"]["batch_size"])), np.int64),
             "warmstart_val_loss": val_loss, "L": np.full(n_chain, np.nan), "energy_variance": np.full(n_chain, np.nan)}
    draws, sghmc_stats = run_sghmc(model, prior, x_train, jnp.asarray(y_train, y_dtype), members, sampler_keys,
                                   sampler["sghmc"], progress=progress)
    causes = {"non-finite warm-start validation loss": ~np.isfinite(val_loss),
              "non-finite SGHMC state": np.asarray(sghmc_stats.pop("diverged"), bool)}
    return draws, {**stats, **sghmc_stats}, causes
