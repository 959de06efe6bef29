"""MAMS: Metropolis-adjusted microcanonical HMC (Robnik, Cohn-Gordon & Seljak 2025), all chains vectorised.

The unbiased counterpart of MILE's MCLMC: the same isokinetic McLachlan integrator, but each
transition refreshes the momentum, integrates a trajectory of about L / eps steps and accepts or
rejects it with a Metropolis-Hastings test, so the chain targets the posterior exactly whatever the
step size (unadjusted MCLMC carries an O(eps^2) bias that the balancedness identity detects). The
kernel is BlackJAX 1.7.1's ``blackjax.mcmc.adjusted_mclmc_dynamic.build_kernel`` with full momentum
refresh (``L_proposal_factor = inf``), a diagonal inverse mass matrix and divergence threshold 1000.

Trajectory lengths are jittered, as MAMS requires against resonances, by BlackJAX's quasi-random
``adjusted_mclmc_dynamic.trajectory_length`` (a Halton sequence over the transition index, mean
L / eps). Indexing by the transition gives every chain the same jitter at the same transition:
under ``vmap`` a transition costs the longest trajectory of the chains, so independent uniform
draws per chain would waste about half the gradients; the sequence is still independent of the
chain's state, so each transition is a reversible MH kernel and the chain stays exact.

Burn-in (``burn_in_steps`` > 0, the default): unadjusted MCLMC with MILE's tuner
(``interplay.samplers.mclmc.run_mclmc``, energy-variance target ``burn_in_energy_var``) carries each
chain from its warm start into the typical set, and its last fifth's draws (at most 100) give the chain's
parameter variances. This is LAPS's design (BlackJAX ``adaptation.laps``: an unadjusted burn-in, then adjusted
sampling) done per chain. It matters for BNNs: a warm start lies far from balance along the ReLU
rescaling orbits, directions the likelihood does not constrain; MCLMC's long momentum memory crosses
them in thousands of cheap steps, while MH-adjusted transitions started there with short trajectories
crawl along them (their short-run variances then miss those directions, so L stays short). The
unadjusted bias does not survive: every draw kept comes from the adjusted chain after its own tuning.

Tuning, ``warmup_steps`` transitions split by ``phases`` (default 40% / 40% / 20%), per chain:

1. Step size by dual averaging (BlackJAX's ``dual_averaging_adaptation``) towards
   ``target_accept``, trajectories of ``initial_integration_steps`` steps (L tracks eps, as in
   BlackJAX's avg-preserving tuner), from the burn-in's step size.
2. The same. Without a burn-in, streaming means of x and x^2 over this phase give the variances.
3. L = sqrt(sum of parameter variances) (the MAMS paper's, and MILE's phase-2, trajectory length),
   the variances (normalised to mean 1) a diagonal preconditioner (``diagonal_preconditioning``);
   step size by dual averaging again at that fixed L; the final eps is the averaged iterate.

BlackJAX's ``adjusted_mclmc_find_L_and_step_size`` tunes one chain in Python-level phases; this
module runs the same ingredients (dual averaging, variances, the dynamic kernel) inside one
``lax.scan`` for all chains at once, with progress reports, chain sharding and gradient groups
shared with MILE (DESIGN.md). BlackJAX's LAPS (``adaptation.laps``) adapts an *ensemble*: its step
size and preconditioner are functions of all chains, so chain c would change with the block it ran
in, which this pipeline rules out (a chain depends on its own key only); only its burn-in idea is used.

Then ``steps`` transitions keep every ``thin``-th position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from blackjax.mcmc import adjusted_mclmc_dynamic as bj_mams
from blackjax.mcmc.integrators import isokinetic_mclachlan
from blackjax.util import incremental_value_update
from jax.flatten_util import ravel_pytree

from interplay.config import MAMS_BURN_IN_PHASES, MAMS_MIN_BURN_IN_STEPS, mams_burn_in_plan
from interplay.samplers import (
    check_chain_inputs,
    check_counts,
    kernel_group_width,
    map_chains,
    mclmc,
    on_chain_shards,
    pad_chains,
    per_chain_keys,
    spread_chains,
)
from interplay.samplers.checkpoint import Checkpoint, run_draws_stage, run_stage

# The McLachlan integrator evaluates the gradient twice per integration step (the last is reused).
GRADS_PER_STEP = 2
# The smallest step size dual averaging may set.
MIN_STEP_SIZE = 1e-6
# The burn-in's keys: each chain's key folded with this (the adjusted phases split the key itself).
BURN_IN_STREAM = 3

DEFAULTS = {
    # MAMS paper (and BlackJAX's LAPS for d > 200): an acceptance rate of about 0.9 is efficient in
    # high dimension; the BNNs here have hundreds to thousands of parameters.
    "target_accept": 0.9,
    "phases": (0.4, 0.4, 0.2),
    "initial_step_size": 0.01,
    # Trajectory length (in steps) while eps is tuned before L is known (BlackJAX's avg-preserving
    # tuner uses 2; a few more decorrelate faster at little cost).
    "initial_integration_steps": 4,
    # A cap on the mean trajectory length L / eps: bounds the cost of one transition (it never
    # biases the chain, only shortens trajectories of very wide posteriors). 1,024 is NUTS's
    # default longest trajectory (tree depth 10); airfoil 16-16 needs ~500-1,000 (L ~ 3-7, eps ~ 0.006).
    "max_integration_steps": 1024,
    # Unadjusted MCLMC steps before the adjusted tuning (0: none) and their energy-variance target
    # (start, end): a 10x smaller one than MILE's default, so the burn-in ends close to the posterior.
    "burn_in_steps": 10000,
    "burn_in_energy_var": (0.05, 0.01),
    # A fixed mean trajectory length in steps for phase 3 and sampling instead of L from the variances
    # (null): L then tracks eps. Posteriors whose slow directions the short phase-2 variances miss (BNN
    # rescaling orbits) need long trajectories; NUTS's trees show how long (~1,000 steps on airfoil 16-16).
    "integration_steps": None,
    # Phase 3 and sampling precondition with the phase-2 variances (diagonal inverse mass matrix,
    # normalised to mean 1), as BlackJAX's adjusted-MCLMC tuner and Stan's NUTS do.
    "diagonal_preconditioning": True,
    "chain_batch": None,
}
REQUIRED = ("warmup_steps", "steps", "thin")


class Tuning(NamedTuple):
    """Per-chain tuning state."""

    dual_averaging: DualAveragingAdaptationState
    step_size: jnp.ndarray
    L: jnp.ndarray
    inverse_mass_matrix: jnp.ndarray  # (dim,) per chain: diagonal preconditioner, mean 1


# ----------------------------------------------------------------------------- small pure parts


def resolve_config(cfg: Mapping) -> dict:
    """The MAMS config with defaults filled in, checked; errors name the bad setting."""
    missing = [name for name in REQUIRED if name not in cfg]
    if missing:
        raise KeyError(f"sampler.mams lacks {missing}")
    resolved = {**DEFAULTS, **cfg}
    check_counts(resolved, "mams", ("warmup_steps", "steps", "thin", "initial_integration_steps",
                                    "max_integration_steps", "burn_in_steps"))
    if min(resolved["initial_integration_steps"], resolved["max_integration_steps"]) < 1:
        raise ValueError("sampler.mams.initial_integration_steps and max_integration_steps must be >= 1")
    if not 0.0 < float(resolved["target_accept"]) < 1.0:
        raise ValueError(f"sampler.mams.target_accept must lie in (0, 1), got {resolved['target_accept']!r}")
    steps = resolved["integration_steps"]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"sampler.mams.integration_steps must be a positive integer or null, got {steps!r}")
    if not isinstance(resolved["diagonal_preconditioning"], bool):
        raise TypeError("sampler.mams.diagonal_preconditioning must be true or false")
    if not (math.isfinite(resolved["initial_step_size"]) and resolved["initial_step_size"] > 0):
        raise ValueError(f"sampler.mams.initial_step_size must be positive, got {resolved['initial_step_size']!r}")
    phases = tuple(float(p) for p in resolved["phases"])
    if len(phases) != 3 or min(phases) < 0 or abs(sum(phases) - 1.0) > 1e-6:
        raise ValueError(f"sampler.mams.phases must be 3 non-negative fractions summing to 1, got {phases}")
    resolved["phases"] = phases
    energy_var = tuple(resolved["burn_in_energy_var"])
    if len(energy_var) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                       for v in energy_var):
        raise ValueError("sampler.mams.burn_in_energy_var must be two positive numbers (start, end), "
                         f"got {resolved['burn_in_energy_var']!r}")
    resolved["burn_in_energy_var"] = tuple(float(v) for v in energy_var)
    if 0 < resolved["burn_in_steps"] < MAMS_MIN_BURN_IN_STEPS:
        raise ValueError(f"sampler.mams.burn_in_steps must be 0 or at least {MAMS_MIN_BURN_IN_STEPS}, "
                         f"got {resolved['burn_in_steps']}")
    return resolved


def burn_in_config(cfg: Mapping) -> dict:
    """The ``sampler.mclmc`` settings of the burn-in: MILE's tuner over the first steps, then MCLMC
    sampling over the last fifth, thinned to at most 100 draws (``interplay.config.mams_burn_in_plan``)."""
    warmup_steps, steps, thin = mams_burn_in_plan(cfg["burn_in_steps"])
    start, end = cfg["burn_in_energy_var"]
    return {"warmup_steps": warmup_steps, "steps": steps, "thin": thin, "phases": MAMS_BURN_IN_PHASES,
            "energy_var_start": start, "energy_var_end": end, "chain_batch": cfg["chain_batch"]}


def preconditioner(variances):
    """A diagonal inverse mass matrix from one chain's variances (dim,): normalised to mean 1 over the
    usable (finite, positive) entries, 1 elsewhere."""
    usable = jnp.isfinite(variances) & (variances > 0)
    mean = jnp.sum(jnp.where(usable, variances, 0.0), -1, keepdims=True) / jnp.maximum(
        jnp.sum(usable, -1, keepdims=True), 1)
    return jnp.where(usable & (mean > 0), variances / mean, 1.0)


def flat_variances(draws, group: int | None):
    """Per-chain variances of every parameter over the draws: (chain, dim), in ``ravel_pytree`` order,
    computed in chain groups of width `group` (`map_chains`)."""
    def one(chain_draws):
        return jnp.var(jax.vmap(lambda position: ravel_pytree(position)[0])(chain_draws), axis=0)
    return jax.jit(map_chains, static_argnums=(0, 1))(one, group, draws)


def phase_lengths(warmup_steps: int, phases) -> tuple[int, int, int]:
    """Transitions of the three tuning phases (the third takes the rounding remainder)."""
    n1 = int(warmup_steps * phases[0])
    n2 = int(warmup_steps * phases[1])
    return n1, n2, warmup_steps - n1 - n2


def integration_steps(t, mean_steps):
    """Integration steps of transition `t`: BlackJAX's Halton trajectory length with mean `mean_steps`
    (>= 1), at least one step."""
    return jnp.maximum(bj_mams.trajectory_length(t, mean_steps), 1).astype(jnp.int32)


def mean_integration_steps(tuning: Tuning, max_steps: int):
    """L / eps, clipped to [1, max_steps]."""
    return jnp.clip(tuning.L / tuning.step_size, 1.0, max_steps)


# ----------------------------------------------------------------------------- driver


_KERNEL = bj_mams.build_kernel(integration_steps_fn=integration_steps, integrator=isokinetic_mclachlan,
                               next_random_arg_fn=lambda t: t + 1)


def run_mams(logdensity_fn: Callable, initial_positions, keys, cfg: Mapping, *,
             progress: Callable[[str, int, int], None] | None = None,
             checkpoint: Checkpoint | None = None) -> tuple[dict, dict]:
    """Tune and run MAMS for all chains at once.

    Args:
        logdensity_fn: unnormalised log density of ONE parameter pytree.
        initial_positions: parameter pytree, leaves with a leading chain axis.
        keys: (chains, 2) PRNG keys, one per chain (a chain's result depends on its key only).
        cfg: ``sampler.mams`` (DESIGN.md).
        progress: optional host callback ``progress(phase, step, total)`` ("burn-in warmup",
            "burn-in sampling", "warmup", "sampling"), called after every chunk.
        checkpoint: runs the stages (the burn-in's ``mams/burn-in/...``, then ``mams/tune12``, ``mams/tune3``,
            ``mams/sample``) in chunks, saves and resumes them (`interplay.samplers.checkpoint`); a chunk of
            the adjusted stages is ``chunk_steps // max_integration_steps`` transitions (at least one).

    Returns:
        draws: pytree like ``initial_positions`` with leaves (chain, draw, ...), draw = steps // thin (numpy).
        stats: (chain,) numpy arrays ``step_size``, ``L``, ``acceptance_rate`` and
            ``n_integration_steps`` (means over the sampling transitions), ``n_divergent`` (transitions
            whose energy error passed 1000), ``rejected_all`` (no proposal accepted while sampling),
            ``diverged`` (non-finite positions or tuning), ``n_grad_evals`` (the chain's own
            trajectories: burn-in, warmup and sampling), ``energy_variance`` (NaN), ``warmup_seconds``
            (burn-in included), ``sampling_seconds``.
    """
    cfg = resolve_config(cfg)
    checkpoint = checkpoint if checkpoint is not None else Checkpoint()
    n_chains = check_chain_inputs(initial_positions, keys)
    # The whole transition runs in chain groups of a fixed width (bit-identical chains in every block).
    group = kernel_group_width(cfg["chain_batch"], jax.local_devices()[0].platform)
    burn_grads, variances, step_size, burn_seconds = 0, None, None, 0.0
    if cfg["burn_in_steps"]:
        burn_keys = jax.vmap(lambda key: jax.random.fold_in(key, BURN_IN_STREAM))(jnp.asarray(keys))
        burn_draws, burn_stats = mclmc.run_mclmc(logdensity_fn, initial_positions, burn_keys, burn_in_config(cfg),
                                                 progress=_renamed(progress, "burn-in"), checkpoint=checkpoint,
                                                 stage_prefix="mams/burn-in")
        initial_positions = jax.tree.map(lambda leaf: leaf[:, -1], burn_draws)
        variances = flat_variances(burn_draws, group)
        step_size = np.where(np.isfinite(burn_stats["step_size"]), burn_stats["step_size"],
                             cfg["initial_step_size"])
        burn_grads = np.asarray(burn_stats["n_grad_evals"], np.int64)
        burn_seconds = float(burn_stats["warmup_seconds"][0] + burn_stats["sampling_seconds"][0])
    mesh, initial_positions, keys, logdensity_fn = spread_chains(logdensity_fn, initial_positions, keys,
                                                                 cfg["chain_batch"], group_gradients=False)
    n_padded = jax.tree.leaves(initial_positions)[0].shape[0]
    tune_keys, sample_keys = per_chain_keys(keys, 2)
    warmup_steps = cfg["warmup_steps"]
    n1, n2, n3 = phase_lengths(warmup_steps, cfg["phases"])
    n_draws = cfg["steps"] // cfg["thin"]
    static = {"logdensity_fn": logdensity_fn, "max_steps": cfg["max_integration_steps"], "mesh": mesh,
              "group": group}
    tune_static = {**static, "n1": n1, "n2": n2, "fixed_steps": cfg["integration_steps"] or 0}
    target_accept = jnp.asarray(float(cfg["target_accept"]), jnp.float32)
    transitions = max(1, checkpoint.chunk_steps // cfg["max_integration_steps"])
    place = partial(mclmc.on_chain_axis, mesh)
    stage = {name: f"mams/{name}" for name in ("tune12", "tune3", "sample")}

    def report(phase, offset, total, scale=1):
        return None if progress is None else (lambda step: progress(phase, offset + step * scale, total))

    def tune_chunk(carry, first, count):
        return _tune(carry, tune_keys, target_accept, first, count, **tune_static)

    dtype = jnp.result_type(*jax.tree.leaves(initial_positions))
    dim = int(sum(np.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(initial_positions)))
    given = variances is not None
    # Phases 1 and 2, then L and the preconditioner from the variances (the burn-in's or phase 2's).
    tuned = checkpoint.output(stage["tune12"])
    if tuned is None:
        carry = None
        if checkpoint.resume(stage["tune12"]) is None:
            states = _init_states(initial_positions, logdensity_fn=logdensity_fn, mesh=mesh, group=group)
            if given:  # the burn-in's, padded like the chains (with chain 0's)
                step_size, variances = pad_chains((jnp.asarray(step_size, dtype), jnp.asarray(variances, dtype)),
                                                  n_padded)
            else:
                step_size = jnp.full((n_padded,), cfg["initial_step_size"], dtype)
                variances = jnp.ones((n_padded, dim), dtype)
            inverse_mass_matrix = jnp.ones((n_padded, dim), dtype)
            if given and cfg["diagonal_preconditioning"]:
                inverse_mass_matrix = jax.jit(map_chains, static_argnums=(0, 1))(preconditioner, group, variances)
            tuning = _init_tuning(step_size, inverse_mass_matrix, initial_steps=cfg["initial_integration_steps"],
                                  group=group)
            stream = (jnp.zeros((n_padded,), dtype), jnp.zeros((n_padded, 2, dim), dtype))
            carry = place(((states, tuning, stream, jnp.zeros((n_padded, dim), dtype),
                            jnp.zeros((n_padded,), jnp.int32)), variances))
        carry = run_stage(checkpoint, stage["tune12"],
                          lambda carry, first, count: (tune_chunk(carry[0], first, count), carry[1]),
                          carry, n1 + n2, chunk=transitions, place=place, progress=report("warmup", 0, warmup_steps))
        (states, tuning, stream, reference, steps_taken), variances = carry
        if n2 > 1 or given:
            tuning = _end_phase2(tuning, stream, variances, precondition=bool(cfg["diagonal_preconditioning"]),
                                 given_variances=given, fixed_steps=cfg["integration_steps"] or 0, mesh=mesh,
                                 group=group)
        tuned = (states, tuning, stream, reference, steps_taken)
        checkpoint.finish(stage["tune12"], tuned)
        checkpoint.between_stages()

    # Phase 3: eps by dual averaging at the fixed L; then the averaged iterate.
    result = checkpoint.output(stage["tune3"])
    if result is None:
        carry = run_stage(checkpoint, stage["tune3"],
                          lambda carry, first, count: tune_chunk(carry, n1 + n2 + first, count),
                          place(tuned), n3, chunk=transitions, place=place,
                          progress=report("warmup", n1 + n2, warmup_steps))
        states, tuning, _, _, steps_taken = carry
        result = (states, _final_tuning(tuning, total=warmup_steps, fixed_steps=cfg["integration_steps"] or 0,
                                        mesh=mesh, group=group), steps_taken)
        checkpoint.finish(stage["tune3"], result)
        checkpoint.between_stages()
    states, tuning, warmup_steps_taken = place(result)
    warmup_seconds = burn_seconds + checkpoint.stage_seconds(stage["tune12"], stage["tune3"])
    if progress is not None:
        progress("warmup", warmup_steps, warmup_steps)

    # Sampling: every thin-th position leaves the device chunk by chunk.
    chunk_draws = max(1, min(n_draws, transitions // cfg["thin"]))
    zeros = jnp.zeros((n_padded,), jnp.int32)
    (_, accepted, n_divergent, sampling_steps_taken), draws = run_draws_stage(
        checkpoint, stage["sample"],
        lambda carry, first, count: _sample(carry, tuning, sample_keys, first, count, thin=cfg["thin"],
                                            chunk_draws=chunk_draws, **static),
        lambda: place((states, zeros, zeros, zeros)), n_draws,
        chunk_draws=chunk_draws, n_chains=n_chains,
        place=place, progress=report("sampling", 0, cfg["steps"], cfg["thin"]))
    accepted, n_divergent, sampling_steps_taken = (np.asarray(leaf)[:n_chains]
                                                   for leaf in (accepted, n_divergent, sampling_steps_taken))
    sampling_seconds = checkpoint.stage_seconds(stage["sample"])

    flat = np.concatenate([np.reshape(leaf, (n_chains, -1)) for leaf in jax.tree.leaves(draws)], axis=1)
    step_size, L = np.asarray(tuning.step_size)[:n_chains], np.asarray(tuning.L)[:n_chains]
    finite = np.isfinite(flat).all(axis=1) & np.isfinite(step_size) & np.isfinite(L)
    n_steps = cfg["steps"]
    nan = np.full(n_chains, np.nan)
    stats = {
        "step_size": step_size,
        "L": L,
        "acceptance_rate": accepted / n_steps,
        "n_integration_steps": np.asarray(sampling_steps_taken, np.float64) / n_steps,
        "n_divergent": np.asarray(n_divergent, np.int64),
        "rejected_all": accepted == 0,
        "diverged": ~finite,
        "n_grad_evals": burn_grads + 1 + GRADS_PER_STEP * (np.asarray(warmup_steps_taken, np.int64)[:n_chains]
                                                           + np.asarray(sampling_steps_taken, np.int64)),
        "energy_variance": nan,
        "warmup_seconds": np.full(n_chains, warmup_seconds),
        "sampling_seconds": np.full(n_chains, sampling_seconds),
    }
    return draws, stats


def _renamed(progress, prefix: str):
    """`progress` with its phase names prefixed (None stays None)."""
    if progress is None:
        return None
    return lambda phase, step, total: progress(f"{prefix} {phase}", step, total)


_da_init, _da_update, _da_final = dual_averaging_adaptation(target=0.0)  # init/final ignore the target


def _transition(logdensity_fn, key, state, tuning: Tuning, t, max_steps):
    """One MAMS transition of one chain (own key, eps and L); transition index t seeds the key."""
    mean_steps = mean_integration_steps(tuning, max_steps)
    return _KERNEL(jax.random.fold_in(key, t), state, logdensity_fn, tuning.step_size, jnp.inf,
                   tuning.inverse_mass_matrix, (mean_steps,))


def _chains_transition(logdensity_fn, states, tuning: Tuning, keys, t, max_steps, group):
    """One MAMS transition of every chain, in chain groups of width `group` (`map_chains`: every
    per-chain operation, elementwise ones included, has the same bits in every block)."""
    return map_chains(lambda key, state, chain_tuning: _transition(logdensity_fn, key, state, chain_tuning, t,
                                                                   max_steps), group, keys, states, tuning)


@partial(jax.jit, static_argnames=("initial_steps", "group"))
def _init_tuning(step_size, inverse_mass_matrix, *, initial_steps, group):
    """Every chain's tuning state at its initial step size (trajectories of `initial_steps` steps)."""
    def one(eps, imm):
        return Tuning(_da_init(eps), eps, eps * initial_steps, imm)
    return map_chains(one, group, step_size, inverse_mass_matrix)


@partial(jax.jit, static_argnames=("logdensity_fn", "mesh", "group"))
def _init_states(positions, *, logdensity_fn, mesh, group):
    # random_generator_arg is the transition index (Halton trajectory lengths), 0 for every chain.
    def init(positions):
        return map_chains(lambda pos: bj_mams.init(pos, logdensity_fn, jnp.zeros((), jnp.int32)), group, positions)
    return on_chain_shards(init, mesh, (positions,))


@partial(jax.jit, static_argnames=("logdensity_fn", "n1", "n2", "fixed_steps", "max_steps", "mesh", "group"))
def _tune(carry, keys, target_accept, first, count, *, logdensity_fn, n1, n2, fixed_steps, max_steps, mesh, group):
    """Tuning transitions [first, first + count) (module docstring): dual averaging of eps (L tracks eps in
    phases 1-2), the phase-2 moments; carry (states, tuning, stream, reference, integration steps taken)."""
    da_update = dual_averaging_adaptation(target=target_accept)[1]

    def adapt(tuning: Tuning, acceptance, track_L):
        dual_averaging = da_update(tuning.dual_averaging, jnp.nan_to_num(acceptance))
        step_size = jnp.maximum(jnp.exp(dual_averaging.log_step_size), MIN_STEP_SIZE)
        # Phases 1-2: L tracks eps (fixed trajectory length in steps); phase 3: L fixed.
        L = jnp.where(track_L, tuning.L * step_size / tuning.step_size, tuning.L)
        return Tuning(dual_averaging, step_size, L, tuning.inverse_mass_matrix)

    def body_one(key, state, tuning, stream, reference, steps_taken, t):
        # One chain's transition, step-size update and phase-2 moments.
        state, info = _transition(logdensity_fn, key, state, tuning, t, max_steps)
        tuning = adapt(tuning, info.acceptance_rate, (t < n1 + n2) | (fixed_steps > 0))
        flat = ravel_pytree(state.position)[0]
        reference = jnp.where(t == n1, flat, reference)
        # Moments of x - reference (the phase-2 start) avoid float32 cancellation in E[x^2] - E[x]^2.
        shifted = flat - reference
        in_phase2 = ((t >= n1) & (t < n1 + n2)).astype(flat.dtype)
        stream = incremental_value_update(jnp.stack([shifted, jnp.square(shifted)]), stream, weight=in_phase2)
        return state, tuning, stream, reference, steps_taken + info.num_integration_steps

    def local(states, tuning, stream, reference, steps_taken, keys, first, count):
        def body(carry, t):
            return map_chains(lambda *chain: body_one(*chain, t), group, keys, *carry)

        return mclmc.traced_range(body, (states, tuning, stream, reference, steps_taken), first, count)

    return on_chain_shards(local, mesh, (*carry, keys), (first, count))


@partial(jax.jit, static_argnames=("precondition", "given_variances", "fixed_steps", "mesh", "group"))
def _end_phase2(tuning, stream, given, *, precondition, given_variances, fixed_steps, mesh, group):
    """After phase 2, per chain: L = sqrt(sum of variances) (the burn-in's, or phase 2's), the preconditioner
    from them; eps restarts from the averaged phase-1-2 iterate."""
    def one(tuning: Tuning, moments, given):
        variances = given if given_variances else jnp.maximum(moments[1] - jnp.square(moments[0]), 0.0)
        L = jnp.sqrt(jnp.sum(variances))
        step_size = jnp.exp(tuning.dual_averaging.log_step_size_avg)
        L = jnp.where(jnp.isfinite(L) & (L > 0), L, tuning.L * step_size / tuning.step_size)
        if fixed_steps:
            L = fixed_steps * step_size
        inverse_mass_matrix = preconditioner(variances) if precondition else tuning.inverse_mass_matrix
        return Tuning(_da_init(step_size), step_size, L, inverse_mass_matrix)

    def local(tuning, stream, given):  # per-chain reductions in fixed groups: a chain's bits never change
        return map_chains(one, group, tuning, stream[1], given)

    return on_chain_shards(local, mesh, (tuning, stream, given))


@partial(jax.jit, static_argnames=("total", "fixed_steps", "mesh", "group"))
def _final_tuning(tuning, *, total, fixed_steps, mesh, group):
    """The averaged iterate of eps (and a fixed trajectory at it)."""
    def one(tuning: Tuning):
        if total > 0:
            tuning = tuning._replace(step_size=jnp.exp(tuning.dual_averaging.log_step_size_avg))
        if fixed_steps:  # L tracked the last iterate; keep the fixed trajectory at the averaged one
            tuning = tuning._replace(L=fixed_steps * tuning.step_size)
        return tuning

    return on_chain_shards(lambda tuning: map_chains(one, group, tuning), mesh, (tuning,))


@partial(jax.jit, static_argnames=("logdensity_fn", "thin", "chunk_draws", "max_steps", "mesh", "group"))
def _sample(carry, tuning, keys, first, count, *, logdensity_fn, thin, chunk_draws, max_steps, mesh, group):
    """Draws [first, first + count) of the sampling phase (count <= chunk_draws), thin transitions each:
    the new carry (states, accepted, divergent, integration steps) and the chunk's positions
    {leaf: (chain, chunk_draws, ...)} (the first `count` kept)."""
    def local(states, accepted, divergent, steps_taken, tuning, keys, first, count):
        def step(carry, t):
            states, accepted, divergent, steps_taken = carry
            states, info = _chains_transition(logdensity_fn, states, tuning, keys, t, max_steps, group)
            return (states, accepted + info.is_accepted, divergent + info.is_divergent,
                    steps_taken + info.num_integration_steps), None

        return mclmc.thinned_chunk(step, (states, accepted, divergent, steps_taken), first, count, thin, chunk_draws)

    return on_chain_shards(local, mesh, (*carry, tuning, keys), (first, count))
