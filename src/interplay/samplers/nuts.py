"""NUTS with Stan's window adaptation (diagonal mass matrix), all chains vectorised.

BlackJAX 1.7.1's NUTS kernel (multinomial, iterative) with velocity Verlet. The warmup is
Stan's schedule (``blackjax.adaptation.window_adaptation.build_schedule``): fast windows adapt
the step size by dual averaging towards ``target_accept``; slow windows also estimate the
diagonal inverse mass matrix (Welford, Stan's regularisation), recomputed at each window end.
It is assembled here from BlackJAX's public pieces (``dual_averaging_adaptation``,
``mass_matrix_adaptation``) rather than ``blackjax.window_adaptation`` so that all chains step
together inside one ``lax.scan`` (progress reports, no per-step adaptation info kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule
from blackjax.mcmc import nuts as bj_nuts
from jax.flatten_util import ravel_pytree

from interplay.samplers import (
    check_chain_inputs,
    finish_phase,
    hashable_callback,
    maybe_report,
    per_chain_keys,
    report_every,
)

DEFAULTS = {"target_accept": 0.8, "initial_step_size": 1.0, "max_num_doublings": 10}
REQUIRED = ("warmup", "draws")


class WindowState(NamedTuple):
    """Per-chain state of the window adaptation."""

    dual_averaging: DualAveragingAdaptationState
    mass_matrix: MassMatrixAdaptationState
    step_size: jnp.ndarray
    inverse_mass_matrix: jnp.ndarray


def resolve_config(cfg: Mapping) -> dict:
    """The NUTS config with defaults filled in, checked; errors name the bad setting."""
    missing = [name for name in REQUIRED if name not in cfg]
    if missing:
        raise KeyError(f"sampler.nuts lacks {missing}")
    resolved = {**DEFAULTS, **cfg}
    for name in ("warmup", "draws", "max_num_doublings"):
        value = resolved[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"sampler.nuts.{name} must be a non-negative integer, got {value!r}")
        resolved[name] = int(value)
    if resolved["draws"] < 1:
        raise ValueError("sampler.nuts.draws must be at least 1")
    if not 0.0 < float(resolved["target_accept"]) < 1.0:
        raise ValueError(f"sampler.nuts.target_accept must lie in (0, 1), got {resolved['target_accept']!r}")
    if not float(resolved["initial_step_size"]) > 0:
        raise ValueError(f"sampler.nuts.initial_step_size must be positive, got {resolved['initial_step_size']!r}")
    return resolved


def window_adaptation_fns(target_accept: float):
    """(init, update, final) of Stan's window adaptation for one chain."""
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=True)

    def init(position, initial_step_size) -> WindowState:
        mass_matrix = mm_init(ravel_pytree(position)[0].shape[0])
        return WindowState(da_init(initial_step_size), mass_matrix, jnp.asarray(initial_step_size),
                           mass_matrix.inverse_mass_matrix)

    def update(state: WindowState, slow, window_end, position, acceptance_rate) -> WindowState:
        dual_averaging = da_update(state.dual_averaging, acceptance_rate)
        # Slow windows also feed the Welford estimator of the parameter variances.
        updated = mm_update(state.mass_matrix, position)
        mass_matrix = jax.tree.map(lambda new, old: jnp.where(slow, new, old), updated, state.mass_matrix)
        state = WindowState(dual_averaging, mass_matrix, jnp.exp(dual_averaging.log_step_size),
                            state.inverse_mass_matrix)

        def close_window(state: WindowState) -> WindowState:
            # New inverse mass matrix; restart dual averaging from the window's average step size.
            mass_matrix = mm_final(state.mass_matrix)
            dual_averaging = da_init(da_final(state.dual_averaging))
            return WindowState(dual_averaging, mass_matrix, jnp.exp(dual_averaging.log_step_size),
                               mass_matrix.inverse_mass_matrix)

        return jax.lax.cond(window_end, close_window, lambda s: s, state)

    def final(state: WindowState):
        return jnp.exp(state.dual_averaging.log_step_size_avg), state.inverse_mass_matrix

    return init, update, final


def run_nuts(logdensity_fn: Callable, initial_positions, keys, cfg: Mapping, *,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[dict, dict]:
    """Window-adapt and run NUTS for all chains at once.

    Args:
        logdensity_fn: unnormalised log density of ONE parameter pytree.
        initial_positions: parameter pytree, leaves with a leading chain axis.
        keys: (chains, 2) PRNG keys, one per chain.
        cfg: ``sampler.nuts``: warmup, draws, target_accept (0.8); optional initial_step_size
            (1.0) and max_num_doublings (10).
        progress: optional host callback ``progress(phase, step, total)`` ("warmup"/"sampling").

    Returns:
        draws: pytree with leaves (chain, draw, ...).
        stats: (chain,) numpy arrays ``step_size``, ``acceptance_rate`` (mean over draws),
            ``n_divergent`` (divergent transitions while sampling), ``diverged`` (non-finite draws,
            step size or mass matrix), ``n_grad_evals`` (warmup + sampling + 1 for the start),
            ``L`` and ``energy_variance`` (NaN, for a layout shared with MCLMC),
            ``warmup_seconds``, ``sampling_seconds``.
    """
    cfg = resolve_config(cfg)
    n_chains = check_chain_inputs(initial_positions, keys)
    progress = hashable_callback(progress)
    warmup_keys, sample_keys = per_chain_keys(keys, 2)
    n_warmup, n_draws = cfg["warmup"], cfg["draws"]
    static = {"logdensity_fn": logdensity_fn, "max_doublings": cfg["max_num_doublings"], "progress": progress}

    start = time.perf_counter()
    states, step_size, inverse_mass_matrix, grads = _warmup(
        initial_positions, warmup_keys, jnp.asarray(float(cfg["target_accept"])),
        jnp.asarray(float(cfg["initial_step_size"])), n_warmup=n_warmup, **static)
    if n_warmup == 0:  # no adaptation: dual averaging's (empty) average would say 1.0
        step_size = jnp.full_like(step_size, float(cfg["initial_step_size"]))
    warmup_seconds = finish_phase(progress, "warmup", n_warmup, states, start)

    start = time.perf_counter()
    draws, grads, n_divergent, acceptance_rate = _sample(
        states, step_size, inverse_mass_matrix, grads, sample_keys, n_draws=n_draws, **static)
    sampling_seconds = finish_phase(progress, "sampling", n_draws, draws, start)

    # A divergent NUTS transition is a rejected trajectory, not a broken chain: it is counted in
    # n_divergent. `diverged` means what it means for MCLMC: non-finite draws or tuning.
    finite = jax.vmap(lambda chain: jnp.all(jnp.isfinite(ravel_pytree(chain)[0])))(draws)
    finite = finite & jnp.isfinite(step_size) & jnp.all(jnp.isfinite(inverse_mass_matrix), axis=-1)
    nan = np.full(n_chains, np.nan)
    stats = {
        "step_size": np.asarray(step_size),
        "acceptance_rate": np.asarray(acceptance_rate),
        "n_divergent": np.asarray(n_divergent, dtype=np.int64),
        "diverged": np.asarray(~finite, dtype=bool),
        "n_grad_evals": np.asarray(grads, dtype=np.int64),
        "L": nan,
        "energy_variance": nan.copy(),
        "warmup_seconds": np.full(n_chains, warmup_seconds),
        "sampling_seconds": np.full(n_chains, sampling_seconds),
    }
    return draws, stats


_KERNEL = bj_nuts.build_kernel()


def _chains_step(logdensity_fn, max_doublings, states, step_size, inverse_mass_matrix, keys, t):
    """One NUTS transition of every chain (own key, step size and mass matrix)."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)

    def one(key, state, eps, inverse_mass):
        return _KERNEL(key, state, logdensity_fn, eps, inverse_mass, max_doublings)

    return jax.vmap(one)(step_keys, states, step_size, inverse_mass_matrix)


@partial(jax.jit, static_argnames=("logdensity_fn", "max_doublings", "progress", "n_warmup"))
def _warmup(positions, keys, target_accept, initial_step_size, *, logdensity_fn, max_doublings, progress,
            n_warmup):
    adapt_init, adapt_update, adapt_final = window_adaptation_fns(target_accept)
    n_chains = keys.shape[0]
    states = jax.vmap(bj_nuts.init, in_axes=(0, None))(positions, logdensity_fn)
    adaptation = jax.vmap(adapt_init, in_axes=(0, None))(positions, initial_step_size)
    schedule = build_schedule(n_warmup) if n_warmup else jnp.zeros((0, 2), jnp.int32)
    every = report_every(n_warmup)

    def body(carry, xs):
        states, adaptation, grads = carry
        t, (slow, window_end) = xs
        states, info = _chains_step(logdensity_fn, max_doublings, states, adaptation.step_size,
                                    adaptation.inverse_mass_matrix, keys, t)
        adaptation = jax.vmap(adapt_update, in_axes=(0, None, None, 0, 0))(
            adaptation, slow == 1, window_end == 1, states.position, info.acceptance_rate)
        maybe_report(progress, "warmup", t + 1, n_warmup, every)
        return (states, adaptation, grads + info.num_integration_steps), None

    grads = jnp.ones((n_chains,), jnp.int32)  # the start's gradient
    (states, adaptation, grads), _ = jax.lax.scan(body, (states, adaptation, grads),
                                                  (jnp.arange(n_warmup), schedule))
    step_size, inverse_mass_matrix = jax.vmap(adapt_final)(adaptation)
    return states, step_size, inverse_mass_matrix, grads


@partial(jax.jit, static_argnames=("logdensity_fn", "max_doublings", "progress", "n_draws"))
def _sample(states, step_size, inverse_mass_matrix, grads, keys, *, logdensity_fn, max_doublings, progress,
            n_draws):
    n_chains = keys.shape[0]
    every = report_every(n_draws)

    def body(carry, t):
        states, grads, n_divergent, acceptance_sum = carry
        states, info = _chains_step(logdensity_fn, max_doublings, states, step_size, inverse_mass_matrix, keys, t)
        maybe_report(progress, "sampling", t + 1, n_draws, every)
        carry = (states, grads + info.num_integration_steps, n_divergent + info.is_divergent,
                 acceptance_sum + info.acceptance_rate)
        return carry, states.position

    carry = (states, grads, jnp.zeros((n_chains,), jnp.int32), jnp.zeros((n_chains,)))
    (states, grads, n_divergent, acceptance_sum), draws = jax.lax.scan(body, carry, jnp.arange(n_draws))
    draws = jax.tree.map(lambda leaf: jnp.swapaxes(leaf, 0, 1), draws)  # (chain, draw, ...)
    return draws, grads, n_divergent, acceptance_sum / n_draws
