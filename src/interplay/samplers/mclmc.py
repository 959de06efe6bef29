"""MCLMC (unadjusted microcanonical Langevin) with MILE's tuning schedule, all chains vectorised.

Every chain has its own state, step size and L; all chains advance together (``vmap`` inside
``lax.scan``), split over the local devices (``shard_map``: one per CPU core in use, or the GPU),
each device's chains in vectorised groups of exactly ``chain_batch`` chains (padded; `map_chains`), so a
chain's draws have the same bits whatever block ran it (DESIGN.md). The
kernel is BlackJAX 1.7.1's ``blackjax.mcmc.mclmc.build_kernel`` with the isokinetic McLachlan
integrator and a unit (diagonal) inverse mass matrix.

Warmup of ``warmup_steps`` steps, split by ``phases`` (default 80% / 10% / 10%):

1. Step-size adaptation (BlackJAX's predictor: xi = dE^2 / (dim * desired energy variance),
   Gaussian weight exp(-(log xi / (6 trust))^2 / 2), exponentially decaying averages with rate
   (n_eff - 1) / (n_eff + 1), eps = (sum w xi / eps^6 / sum w)^(-1/6), capped below step sizes
   that produced non-finite values).
2. The same, while streaming averages of x and x^2 (weighted by the step size) give
   L = sqrt(sum of parameter variances).
3. eps and L fixed; L = 0.4 * eps * mean over parameters of (steps / ESS), the ESS of every
   parameter over the phase's steps estimated while the chains run (``autocorrelation``: Geyer's
   initial positive sequence on a ladder of block means, as ``blackjax.diagnostics.
   effective_sample_size`` on the stored trace, in memory per chain independent of the phase's length).

The desired energy variance per dimension decays linearly from ``energy_var_start`` to
``energy_var_end`` over phases 1 and 2 (MILE). BlackJAX's own ``mclmc_find_L_and_step_size``
keeps it constant and runs one chain at a time, so this module re-implements the schedule on
top of BlackJAX's kernel and its NaN handler instead of calling that function.

Tuning starts from eps = ``initial_step_size`` and L = max(sqrt(dim), 15) (MILE).
Then ``steps`` sampling steps keep every ``thin``-th position (the unthinned chain is never stored).

The reported ``energy_variance`` is the sampling phase's mean of dE^2 / dim, the quantity the
target refers to. The tuner down-weights outlying energy errors, so on heavy-tailed targets
(BNNs) this plain mean can exceed ``energy_var_end`` several-fold; BlackJAX's tuner does the same.

``logdensity_fn`` and ``progress`` are static jit arguments (hashed by identity): the compiled
phases are reused across calls with the same function and step counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mclmc_adaptation import handle_nans
from blackjax.diagnostics import effective_sample_size
from blackjax.mcmc import mclmc as bj_mclmc
from blackjax.mcmc.integrators import isokinetic_mclachlan
from blackjax.util import incremental_value_update
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

from interplay.samplers import (
    CHAIN_AXIS,
    autocorrelation,
    check_chain_inputs,
    check_counts,
    kernel_group_width,
    map_chains,
    on_chain_shards,
    per_chain_keys,
    spread_chains,
)
from interplay.samplers.checkpoint import Checkpoint, run_draws_stage, run_stage

# The McLachlan integrator evaluates the gradient twice per step (the last one is reused).
GRADS_PER_STEP = 2
# L = L_FACTOR * eps * (autocorrelation time in steps), as in BlackJAX and MILE.
L_FACTOR = 0.4
# A unit diagonal inverse mass matrix (no preconditioning, as in MILE).
INVERSE_MASS_MATRIX = 1.0

DEFAULTS = {
    "phases": (0.8, 0.1, 0.1),
    "energy_var_start": 0.5,
    "energy_var_end": 0.1,
    "n_eff": 100,
    "trust": 1.5,
    "initial_step_size": 0.01,
    # Chains per vectorised group on a device (None: 4 on a CPU, all on a GPU; a cap bounds the
    # memory of huge blocks): the kernel, its gradients and every per-chain tuning estimate.
    "chain_batch": None,
}
REQUIRED = ("warmup_steps", "steps", "thin")
# Settings that no longer exist, with why (an error names them rather than silently ignoring them).
RETIRED = {
    name: "was retired: phase-3 tuning no longer stores a trace (its ESS is streamed, in memory "
          "independent of the phase's length, over all parameters); remove the key"
    for name in ("ess_max_samples", "ess_max_params")
}


class TuningState(NamedTuple):
    """Per-chain state of the step-size/L adaptation."""

    step_size: jnp.ndarray
    L: jnp.ndarray
    weight_sum: jnp.ndarray  # decayed sum of weights ("time" in BlackJAX)
    weighted_inverse_eps6: jnp.ndarray  # decayed sum of w * xi / eps^6 ("x_average")
    step_size_max: jnp.ndarray  # below the step sizes that produced non-finite values


# ----------------------------------------------------------------------------- small pure parts


def resolve_config(cfg: Mapping) -> dict:
    """The MCLMC config with defaults filled in, checked; errors name the bad setting."""
    missing = [name for name in REQUIRED if name not in cfg]
    if missing:
        raise KeyError(f"sampler.mclmc lacks {missing}")
    resolved = {**DEFAULTS, **cfg}
    retired = [name for name in RETIRED if name in cfg]
    if retired:
        raise ValueError("; ".join(f"sampler.mclmc.{name} {RETIRED[name]}" for name in retired))
    check_counts(resolved, "mclmc", ("warmup_steps", "steps", "thin", "n_eff"))
    for name in ("energy_var_start", "energy_var_end", "n_eff", "trust", "initial_step_size"):
        value = resolved[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"sampler.mclmc.{name} must be a positive number, got {value!r}")
    phases = tuple(float(p) for p in resolved["phases"])
    if len(phases) != 3 or min(phases) < 0 or abs(sum(phases) - 1.0) > 1e-6:
        raise ValueError(f"sampler.mclmc.phases must be 3 non-negative fractions summing to 1, got {phases}")
    resolved["phases"] = phases
    return resolved


def phase_lengths(warmup_steps: int, phases: tuple[float, float, float]) -> tuple[int, int, int]:
    """Steps of the three tuning phases; the rounding remainder goes to phase 3."""
    n1 = round(warmup_steps * phases[0])
    n2 = min(round(warmup_steps * phases[1]), warmup_steps - n1)
    return n1, n2, warmup_steps - n1 - n2


def desired_energy_variance(step, decay_steps: int, start: float, end: float):
    """Linear decay from ``start`` (step 0) to ``end`` (step ``decay_steps``), constant after."""
    progress = jnp.minimum(step / max(decay_steps, 1), 1.0)
    return start + (end - start) * progress


def step_size_update(tuning: TuningState, energy_change, dim: int, desired_var, trust: float,
                     decay_rate: float) -> TuningState:
    """BlackJAX's step-size predictor (Var[dE] = O(eps^6)) for one chain and one step."""
    xi = jnp.square(energy_change) / (dim * desired_var) + 1e-8  # 1e-8: no log(0)
    # Down-weight steps whose energy error is far from the desired one.
    weight = jnp.exp(-0.5 * jnp.square(jnp.log(xi) / (6.0 * trust)))
    weighted = decay_rate * tuning.weighted_inverse_eps6 + weight * xi / jnp.power(tuning.step_size, 6.0)
    weight_sum = decay_rate * tuning.weight_sum + weight
    step_size = jnp.minimum(jnp.power(weighted / weight_sum, -1.0 / 6.0), tuning.step_size_max)
    return tuning._replace(step_size=step_size, weight_sum=weight_sum, weighted_inverse_eps6=weighted)


def l_from_ess(ess: jnp.ndarray, n_steps: int, step_size, fallback_L):
    """L = 0.4 eps mean(n_steps / ESS) over parameters with a finite, positive ESS."""
    tau = n_steps / ess
    finite = jnp.isfinite(tau) & (ess > 0)
    mean_tau = jnp.sum(jnp.where(finite, tau, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    return jnp.where(jnp.any(finite), L_FACTOR * step_size * mean_tau, fallback_L)


# ----------------------------------------------------------------------------- driver


def run_mclmc(logdensity_fn: Callable, initial_positions, keys, cfg: Mapping, *,
              progress: Callable[[str, int, int], None] | None = None,
              full_trace_ess: bool = False, checkpoint: Checkpoint | None = None,
              stage_prefix: str = "mclmc") -> tuple[dict, dict]:
    """Tune and run MCLMC for all chains at once.

    Args:
        logdensity_fn: unnormalised log density of ONE parameter pytree.
        initial_positions: parameter pytree, leaves with a leading chain axis.
        keys: (chains, 2) PRNG keys, one per chain (a chain's result depends on its key only).
        cfg: ``sampler.mclmc`` (DESIGN.md).
        full_trace_ess: phase 3 stores its trace (chains x steps x parameters floats) and takes the ESS
            from ``blackjax.diagnostics.effective_sample_size``: the reference the streamed estimate is
            checked against (tests, benchmarks/bench_tuning_memory.py), for small runs only (one chunk,
            not resumable).
        progress: optional host callback ``progress(phase, step, total)``, phase ``"warmup"``
            or ``"sampling"``, called after every chunk of steps.
        checkpoint: runs the stages (``<stage_prefix>/tune12``, ``/tune3``, ``/sample``) in its chunks of
            steps, saves and resumes them (`interplay.samplers.checkpoint`); default: chunks of
            ``DEFAULT_CHUNK_STEPS`` steps, nothing saved. The draws are the same bits either way.
        stage_prefix: names this run's stages in `checkpoint` (MAMS's burn-in is another MCLMC run).

    Returns:
        draws: pytree like ``initial_positions`` with leaves (chain, draw, ...), draw = steps // thin,
            numpy arrays on the host (they leave the device chunk by chunk).
        stats: (chain,) numpy arrays ``step_size``, ``L``, ``energy_variance`` (mean dE^2 / dim over
            the sampling steps), ``diverged`` (a non-finite step while sampling, or non-finite
            tuned values), ``n_grad_evals``, ``warmup_seconds``, ``sampling_seconds`` (wall time,
            compilation included, same for all chains of the call, summed over resumed attempts).

    Each stage compiles one chunk program, whatever the number and length of its chunks; calling again
    with the same log density and settings does not recompile.
    """
    cfg = resolve_config(cfg)
    checkpoint = checkpoint if checkpoint is not None else Checkpoint()
    n_chains = check_chain_inputs(initial_positions, keys)
    # The whole kernel (gradients and every per-chain reduction) runs in chain groups of a fixed width.
    mesh, initial_positions, keys, logdensity_fn = spread_chains(logdensity_fn, initial_positions, keys,
                                                                 cfg["chain_batch"], group_gradients=False)
    group = kernel_group_width(cfg["chain_batch"], mesh.devices.flat[0].platform)
    n_padded = jax.tree.leaves(initial_positions)[0].shape[0]
    init_keys, tune_keys, ess_keys, sample_keys = per_chain_keys(keys, 4)
    one_position = jax.tree.map(lambda leaf: leaf[0], initial_positions)
    dim = int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(one_position)))
    warmup_steps = cfg["warmup_steps"]
    n1, n2, n3 = phase_lengths(warmup_steps, cfg["phases"])
    n_draws = cfg["steps"] // cfg["thin"]
    # Float settings are traced (changing them does not recompile); step counts are static.
    targets = {
        "energy_var_start": jnp.asarray(cfg["energy_var_start"]),
        "energy_var_end": jnp.asarray(cfg["energy_var_end"]),
        "trust": jnp.asarray(cfg["trust"]),
        "decay_rate": jnp.asarray((cfg["n_eff"] - 1.0) / (cfg["n_eff"] + 1.0)),
    }
    stage = {name: f"{stage_prefix}/{name}" for name in ("tune12", "tune3", "sample")}
    place = partial(on_chain_axis, mesh)
    static = {"logdensity_fn": logdensity_fn, "mesh": mesh, "group": group}

    def report(phase, offset, total):
        return None if progress is None else (lambda step: progress(phase, offset + step, total))

    # Phases 1 and 2 (MILE starts from L = max(sqrt(dim), 15), eps from the config).
    tuned = checkpoint.output(stage["tune12"])
    if tuned is None:
        carry = None
        if checkpoint.resume(stage["tune12"]) is None:
            start = time.perf_counter()
            states = _init_states(initial_positions, init_keys, **static)
            dtype = jnp.result_type(*jax.tree.leaves(one_position))
            tuning = TuningState(
                step_size=jnp.full((n_padded,), cfg["initial_step_size"], dtype),
                L=jnp.full((n_padded,), max(math.sqrt(dim), 15.0), dtype),
                weight_sum=jnp.zeros((n_padded,), dtype),
                weighted_inverse_eps6=jnp.zeros((n_padded,), dtype),
                step_size_max=jnp.full((n_padded,), jnp.inf, dtype),
            )
            stream = (jnp.zeros((n_padded,), dtype), jnp.zeros((n_padded, 2, dim), dtype))
            carry = place((states, tuning, stream, jnp.zeros((n_padded, dim), dtype)))
            checkpoint.add_seconds(stage["tune12"], time.perf_counter() - start)
        carry = run_stage(
            checkpoint, stage["tune12"],
            lambda carry, first, count: _tune_step_size_and_L(carry, tune_keys, targets, first, count, n1=n1,
                                                              n2=n2, **static),
            carry, n1 + n2, place=place, progress=report("warmup", 0, warmup_steps))
        tuned = carry[:2]
        checkpoint.finish(stage["tune12"], tuned)
        checkpoint.between_stages()
    tuned = place(tuned)

    # Phase 3: L from the streamed ESS (or from the stored trace, the reference).
    result = checkpoint.output(stage["tune3"])
    if result is None:
        states, tuning = tuned
        if n3 >= 2 and full_trace_ess:
            start = time.perf_counter()
            states, tuning = jax.block_until_ready(_tune_L_by_full_trace(states, tuning, ess_keys, n3=n3, **static))
            checkpoint.add_seconds(stage["tune3"], time.perf_counter() - start)
        elif n3 >= 2:
            levels = autocorrelation.levels_for(n3)
            carry = None
            if checkpoint.resume(stage["tune3"]) is None:
                carry = (states, _init_estimates(states, levels=levels, mesh=mesh, group=group), tuning.L)
            states, _, L = run_stage(
                checkpoint, stage["tune3"],
                lambda carry, first, count: _tune_L_by_ess(carry, tuning, ess_keys, first, count, n3=n3, **static),
                carry, n3, place=place, progress=report("warmup", n1 + n2, warmup_steps))
            tuning = tuning._replace(L=L)
        elif n3 > 0:  # too short for an ESS: plain steps with the phase-2 L
            states = _plain_steps(states, tuning, ess_keys, n_steps=n3, **static)
        result = (states, tuning)
        checkpoint.finish(stage["tune3"], result)
        checkpoint.between_stages()
    states, tuning = place(result)
    warmup_seconds = checkpoint.stage_seconds(stage["tune12"], stage["tune3"])
    if progress is not None:
        progress("warmup", warmup_steps, warmup_steps)

    # Sampling: every thin-th position leaves the device chunk by chunk.
    chunk_draws = max(1, min(n_draws, checkpoint.chunk_steps // cfg["thin"]))
    (states, energy_sq_sum, any_nonfinite), draws = run_draws_stage(
        checkpoint, stage["sample"],
        lambda carry, first, count: _sample(carry, tuning, sample_keys, first, count, thin=cfg["thin"],
                                            chunk_draws=chunk_draws, **static),
        lambda: place((states, jnp.zeros((n_padded,)), jnp.zeros((n_padded,), bool))), n_draws,
        chunk_draws=chunk_draws,
        n_chains=n_chains, place=place,
        progress=None if progress is None else (lambda draw: progress("sampling", draw * cfg["thin"], cfg["steps"])))
    sampling_seconds = checkpoint.stage_seconds(stage["sample"])

    final_finite = np.asarray(jax.vmap(lambda pos: jnp.all(jnp.isfinite(ravel_pytree(pos)[0])))(states.position))
    tuned_finite = np.isfinite(np.asarray(tuning.step_size)) & np.isfinite(np.asarray(tuning.L))
    diverged = (np.asarray(any_nonfinite) | ~final_finite | ~tuned_finite)[:n_chains]
    stats = {
        "step_size": np.asarray(tuning.step_size)[:n_chains],
        "L": np.asarray(tuning.L)[:n_chains],
        # On the host: XLA's division by a constant rounds differently with the array's length.
        "energy_variance": np.asarray(energy_sq_sum)[:n_chains] / np.float32(cfg["steps"] * dim),
        "diverged": np.asarray(diverged, dtype=bool),
        "n_grad_evals": np.full(n_chains, 1 + GRADS_PER_STEP * (warmup_steps + cfg["steps"]), dtype=np.int64),
        "warmup_seconds": np.full(n_chains, warmup_seconds),
        "sampling_seconds": np.full(n_chains, sampling_seconds),
    }
    return draws, stats


_KERNEL = bj_mclmc.build_kernel(integrator=isokinetic_mclachlan)


def on_chain_axis(mesh, tree):
    """Every leaf (leading axis: the padded chains) split over `mesh` as the chunk programs lay it out; a
    resumed carry (numpy) goes to the devices exactly where an uninterrupted one was."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(CHAIN_AXIS)))


def traced_range(body: Callable, carry, first, count):
    """``body(carry, t)`` for t in ``[first, first + count)``: a loop whose trip count XLA cannot see, so
    chunks of any length run the same compiled loop (and a chain the same bits, wherever chunks end)."""
    return jax.lax.fori_loop(0, jax.lax.optimization_barrier(count), lambda i, carry: body(carry, first + i),
                             carry)


def _chains_step(logdensity_fn, states, tuning: TuningState, keys, t, group):
    """One MCLMC step of every chain (own key, L and step size), in chain groups of width `group`
    (`map_chains`); step index t seeds the keys."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)

    def one(key, state, L, step_size):
        return _KERNEL(key, state, logdensity_fn, INVERSE_MASS_MATRIX, L, step_size)

    return map_chains(one, group, step_keys, states, tuning.L, tuning.step_size)


@partial(jax.jit, static_argnames=("logdensity_fn", "mesh", "group"))
def _init_states(positions, keys, *, logdensity_fn, mesh, group):
    def init(positions, keys):
        return map_chains(lambda pos, key: bj_mclmc.init(pos, logdensity_fn, key), group, positions, keys)

    return on_chain_shards(init, mesh, (positions, keys))


@partial(jax.jit, static_argnames=("levels", "mesh", "group"))
def _init_estimates(states, *, levels, mesh, group):
    def init(states):  # per chain, in fixed-width groups (a chain's bits must not depend on the number of chains)
        return map_chains(lambda state: autocorrelation.init(ravel_pytree(state.position)[0], levels), group, states)

    return on_chain_shards(init, mesh, (states,))


@partial(jax.jit, static_argnames=("logdensity_fn", "n1", "n2", "mesh", "group"))
def _tune_step_size_and_L(carry, keys, targets, first, count, *, logdensity_fn, n1, n2, mesh, group):
    """Steps [first, first + count) of phases 1 and 2: step-size adaptation under the decaying
    energy-variance target, then (phase 2) streaming moments; after the last step, L from them."""
    dim = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], carry[0].position))[0].shape[0]

    def chain_step(state, tuning, stream, reference, key, desired_var, accumulate):
        kernel_key, nan_key = jax.random.split(key)
        next_state, info = _KERNEL(kernel_key, state, logdensity_fn, INVERSE_MASS_MATRIX, tuning.L,
                                   tuning.step_size)
        # BlackJAX's adaptation NaN handler: revert the step, shrink the largest allowed eps.
        success, state, step_size_max, energy_change = handle_nans(
            state, next_state, tuning.step_size, tuning.step_size_max,
            info.energy_change, info.nonans, nan_key)
        moved_with = tuning.step_size
        tuning = step_size_update(tuning._replace(step_size_max=step_size_max), energy_change, dim,
                                  desired_var, targets["trust"], targets["decay_rate"])
        # Moments of x - reference (the phase-2 start) avoid float32 cancellation in E[x^2] - E[x]^2.
        shifted = ravel_pytree(state.position)[0] - reference
        stream = incremental_value_update(
            expectation=jnp.stack([shifted, jnp.square(shifted)]),
            incremental_val=stream,
            weight=accumulate * success * moved_with,
        )
        return state, tuning, stream

    def local(states, tuning, stream, reference, keys, first, count):
        def body(carry, t):
            states, tuning, stream, reference = carry
            desired_var = desired_energy_variance(t, n1 + n2, targets["energy_var_start"],
                                                  targets["energy_var_end"])
            accumulate = (t >= n1).astype(tuning.step_size.dtype)
            # The phase-2 reference point: each chain's position when phase 2 starts.
            flat = jax.vmap(lambda pos: ravel_pytree(pos)[0])(states.position)
            reference = jnp.where(t == n1, flat, reference)
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            states, tuning, stream = map_chains(
                lambda *chain_args: chain_step(*chain_args, desired_var, accumulate), group,
                states, tuning, stream, reference, step_keys)
            return states, tuning, stream, reference

        states, tuning, stream, reference = traced_range(body, (states, tuning, stream, reference), first, count)
        if n2 > 1:
            def chain_L(moments):
                return jnp.sqrt(jnp.sum(jnp.maximum(moments[1] - jnp.square(moments[0]), 0.0)))

            last = first + count == n1 + n2
            tuning = tuning._replace(L=jax.lax.cond(last, lambda: map_chains(chain_L, group, stream[1]),
                                                    lambda: tuning.L))
        return states, tuning, stream, reference

    return on_chain_shards(local, mesh, (*carry, keys), (first, count))


@partial(jax.jit, static_argnames=("logdensity_fn", "n3", "mesh", "group"))
def _tune_L_by_ess(carry, tuning, keys, first, count, *, logdensity_fn, n3, mesh, group):
    """Steps [first, first + count) of phase 3: fixed eps and L, every parameter's ESS streamed while
    the chains run (`autocorrelation`: memory per chain independent of n3, no trace is stored); after
    the last step, the new L from it (the carry's third part)."""
    def local(states, estimates, L, tuning, keys, first, count):
        def advance(carry, t):
            states, estimates = carry
            states, _ = _chains_step(logdensity_fn, states, tuning, keys, t, group)
            estimates = map_chains(lambda est, state: autocorrelation.update(est, ravel_pytree(state.position)[0]),
                                   group, estimates, states)
            return states, estimates

        states, estimates = traced_range(advance, (states, estimates), first, count)

        def new_L():
            ess = map_chains(autocorrelation.effective_sample_size, group, estimates)
            return map_chains(lambda ess, step_size, L: l_from_ess(ess, n3, step_size, L), group,
                              ess, tuning.step_size, tuning.L)

        return states, estimates, jax.lax.cond(first + count == n3, new_L, lambda: L)

    return on_chain_shards(local, mesh, (*carry, tuning, keys), (first, count))


@partial(jax.jit, static_argnames=("logdensity_fn", "n3", "mesh", "group"))
def _tune_L_by_full_trace(states, tuning, keys, *, logdensity_fn, n3, mesh, group):
    """Phase 3 as MILE does it: the trace stored (chains x n3 x dim floats), its ESS by BlackJAX."""
    def local(states, tuning, keys):
        def advance(states, t):
            states, _ = _chains_step(logdensity_fn, states, tuning, keys, t, group)
            return states, jax.vmap(lambda state: ravel_pytree(state.position)[0])(states)

        states, trace = jax.lax.scan(advance, states, jnp.arange(n3))
        ess = jax.vmap(lambda chain_trace: effective_sample_size(chain_trace[None]))(jnp.swapaxes(trace, 0, 1))
        new_L = map_chains(lambda ess, step_size, L: l_from_ess(ess, n3, step_size, L), group,
                           ess, tuning.step_size, tuning.L)
        return states, tuning._replace(L=new_L)

    return on_chain_shards(local, mesh, (states, tuning, keys))


@partial(jax.jit, static_argnames=("logdensity_fn", "n_steps", "mesh", "group"))
def _plain_steps(states, tuning, keys, *, logdensity_fn, n_steps, mesh, group):
    def local(states, tuning, keys):
        return jax.lax.scan(lambda st, t: (_chains_step(logdensity_fn, st, tuning, keys, t, group)[0], None),
                            states, jnp.arange(n_steps))[0]

    return on_chain_shards(local, mesh, (states, tuning, keys))


@partial(jax.jit, static_argnames=("logdensity_fn", "thin", "chunk_draws", "mesh", "group"))
def _sample(carry, tuning, keys, first, count, *, logdensity_fn, thin, chunk_draws, mesh, group):
    """Draws [first, first + count) of the sampling phase (count <= chunk_draws), thin steps each:
    the new carry and the chunk's positions {leaf: (chain, chunk_draws, ...)} (the first `count` kept)."""
    def local(states, energy_sq_sum, any_nonfinite, tuning, keys, first, count):
        def chain_step(key, state, L, step_size, energy_sq_sum, any_nonfinite):
            state, info = _KERNEL(key, state, logdensity_fn, INVERSE_MASS_MATRIX, L, step_size)
            # Summed inside the chain's group too: fused with block-shaped code, the sum's rounding varied.
            return state, energy_sq_sum + jnp.square(info.energy_change), any_nonfinite | ~info.nonans

        def step(carry, t):
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
            return map_chains(chain_step, group, step_keys, carry[0], tuning.L, tuning.step_size, *carry[1:]), None

        return thinned_chunk(step, (states, energy_sq_sum, any_nonfinite), first, count, thin, chunk_draws)

    return on_chain_shards(local, mesh, (*carry, tuning, keys), (first, count))


def thinned_chunk(step: Callable, carry, first, count, thin: int, chunk_draws: int):
    """Draws [first, first + count) of a sampling stage: `thin` calls of ``step(carry, t)`` (t the global
    step) per draw, each draw's ``carry[0].position`` kept; returns (carry, {leaf: (chain, chunk_draws, ...)}),
    the buffer's first `count` draws filled."""
    def draw(both, d):
        carry, buffer = both
        carry, _ = jax.lax.scan(step, carry, d * thin + jnp.arange(thin))
        buffer = jax.tree.map(lambda slots, position: jax.lax.dynamic_update_index_in_dim(
            slots, position, d - first, axis=1), buffer, carry[0].position)
        return carry, buffer

    buffer = jax.tree.map(lambda leaf: jnp.zeros((leaf.shape[0], chunk_draws, *leaf.shape[1:]), leaf.dtype),
                          carry[0].position)
    return traced_range(draw, (carry, buffer), first, count)
