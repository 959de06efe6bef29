"""MCMC kernels run for many chains at once (vectorised with vmap inside lax.scan).

- :func:`interplay.samplers.mclmc.run_mclmc`: MCLMC with MILE's tuning schedule.
- :func:`interplay.samplers.nuts.run_nuts`: NUTS with Stan's window adaptation (diagonal mass).

Both take ``(logdensity_fn, initial_positions, keys, cfg, *, progress=None)`` and return
``(draws, stats)``: draws with leaves (chain, draw, ...), stats a dict of (chain,) numpy arrays.
This module holds the small helpers they share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching
from jax.sharding import Mesh, PartitionSpec

from interplay.samplers.prng import unroll_threefry_on_cpu

# Every sampler program must be compiled with the same threefry lowering (it changes the float rounding of
# fused kernels, hence a chain's bits), so it is chosen once, before any sampler code runs: on import of the
# samplers, which only sampling code imports (interplay.samplers.prng; analysis, merge and figure jobs do not).
unroll_threefry_on_cpu()

# Progress callbacks per phase: about this many, whatever the number of steps.
PROGRESS_REPORTS_PER_PHASE = 100


# Chains per gradient group on a CPU device: small groups keep a group's activations in cache.
# For the airfoil net (benchmarks/bench_sampling.py) groups of 4 ran ~1.2x faster than one group of 32.
CPU_CHAIN_BATCH = 4
# Name of the mesh axis that splits a block's chains over the local devices.
CHAIN_AXIS = "chains"


def chain_group_width(requested: int | None, n_chains: int, platform: str) -> int:
    """Width of every vectorised chain group (gradient groups, warm-start groups) on one device.

    It is not capped at `n_chains`: on a CPU it is `requested` or `CPU_CHAIN_BATCH` whatever the block, so
    every group has the same shape in every job and a chain's arithmetic (XLA picks a matmul's blocking,
    hence its summation order, from its shape) does not depend on the block that ran it. On a GPU the
    default is all `n_chains` (one group).
    """
    if requested is None:
        requested = CPU_CHAIN_BATCH if platform == "cpu" else n_chains
    return max(1, int(requested))


def kernel_group_width(requested: int | None, platform: str) -> int | None:
    """Width of the fixed chain groups a device's sampler kernel runs in (`map_chains`), or None: all of
    the device's chains in one vectorised group.

    On a CPU it is `requested` (``sampler.<kind>.chain_batch``) or `CPU_CHAIN_BATCH`, whatever the block, so
    a chain's arithmetic is the same, bit for bit, in every block (DESIGN.md). On a GPU (`platform` "gpu")
    the default None keeps each device's chains in one group (fastest, the same law but not the same bits
    across block sizes); setting `requested` fixes the width there too.
    """
    if requested is None and platform != "cpu":
        return None
    return chain_group_width(requested, 0, platform)


def map_chains(fn: Callable, width: int | None, *args):
    """``jax.vmap(fn)(*args)`` over the leading chain axis of every argument: all chains at once (`width`
    None) or in groups of exactly `width` chains (`map_fixed_groups`), so that a chain's bits do not
    depend on how many chains run with it."""
    if width is None:
        return jax.vmap(fn)(*args)
    return map_fixed_groups(lambda group_args: fn(*group_args), width, args)


def map_fixed_groups(fn: Callable, group_size: int, tree):
    """``jax.vmap(fn)(tree)`` over the leading chain axis, computed `group_size` chains at a time (a loop
    over vectorised groups), so that a chain's result has the same bits whatever the number of chains.

    Every group has exactly `group_size` chains (padded with copies of chain 0, dropped again), and XLA
    compiles the loop body the same way whatever the number of groups: the chains are laid out with one
    spare group (never computed) and the loop's trip count is hidden from XLA. Otherwise one group would
    be special: XLA removes a loop of one iteration, or hoists a size-1 slice out of it, and fuses the group's
    arithmetic with the code around it, which changed BlackJAX's ESS by an ulp (tests/test_samplers_chain_batch.py).
    Not differentiable in reverse mode (`grouped_gradients` supplies its own gradient).
    """
    n_chains = jax.tree.leaves(tree)[0].shape[0]
    n_groups = -(-n_chains // group_size)
    padded = pad_chains(tree, (n_groups + 1) * group_size)
    grouped = jax.tree.map(lambda leaf: leaf.reshape(n_groups + 1, group_size, *leaf.shape[1:]), padded)
    group_fn = jax.vmap(fn)
    shapes = jax.eval_shape(group_fn, jax.tree.map(lambda leaf: leaf[0], grouped))
    out = jax.tree.map(lambda shape: jnp.zeros((n_groups + 1, *shape.shape), shape.dtype), shapes)

    def body(index, out):
        result = group_fn(jax.tree.map(lambda leaf: jax.lax.dynamic_index_in_dim(leaf, index, keepdims=False),
                                       grouped))
        return jax.tree.map(lambda leaf, value: jax.lax.dynamic_update_index_in_dim(leaf, value, index, 0),
                            out, result)

    out = jax.lax.fori_loop(0, jax.lax.optimization_barrier(jnp.int32(n_groups)), body, out)
    return jax.tree.map(lambda leaf: leaf.reshape((n_groups + 1) * group_size, *leaf.shape[2:])[:n_chains], out)


def grouped_gradients(logdensity_fn: Callable, group_size: int) -> Callable:
    """`logdensity_fn` whose value and gradient, when vmapped over chains, are computed in groups of
    exactly `group_size` chains (`map_fixed_groups`: padded, a loop over vectorised groups), so a
    chain's gradient has the same bits whatever the number of chains; unchanged for one chain.

    The samplers vmap BlackJAX's kernel over all chains of a device, so its many cheap vector updates
    run as a few large operations, while the costly part, the network's log density and gradient, runs
    in groups whose activations stay in cache (CPU) or bound the memory of huge blocks (GPU). A custom
    vmap rule does the grouping; a custom VJP hands the gradient computed with the value to ``jax.grad``, so only
    first-order reverse-mode derivatives are supported (all MCLMC needs).
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)

    @custom_batching.custom_vmap
    def grouped_value_and_grad(position):
        return value_and_grad(position)

    @grouped_value_and_grad.def_vmap
    def _vmap_rule(axis_size, in_batched, position):
        position = jax.tree.map(
            lambda leaf, batched: leaf if batched else jnp.broadcast_to(leaf, (axis_size, *leaf.shape)),
            position, in_batched[0])
        out = map_fixed_groups(value_and_grad, group_size, position)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_vjp
    def logdensity(position):
        return grouped_value_and_grad(position)[0]

    def forward(position):
        return grouped_value_and_grad(position)

    def backward(gradient, cotangent):
        return (jax.tree.map(lambda leaf: leaf * cotangent, gradient),)

    logdensity.defvjp(forward, backward)
    return logdensity


@lru_cache(maxsize=16)
def _cached_grouped_gradients(logdensity_fn: Callable, group_size: int) -> Callable:
    # Cached so that the same (log density, group size) is the same jit static argument: no recompiling.
    return grouped_gradients(logdensity_fn, group_size)


def spread_chains(logdensity_fn: Callable, initial_positions, keys, chain_batch: int | None, *,
                  group_gradients: bool = True):
    """A block's chains laid out for the local devices: ``(mesh, positions, keys, logdensity_fn)``.

    Chains are split over the local devices (several CPU cores, or the job's GPU); each device vmaps the
    kernel over its share. Devices need equal shares, so positions and keys are padded with copies of
    chain 0 (callers drop the chains past the block's own count afterwards). With `group_gradients` the
    log density's gradients are computed in groups of exactly `kernel_group_width` chains (padded; none
    where it is None), so a chain's gradient has the same bits in every block; samplers that run their
    whole kernel in such groups (`map_chains`) pass False and get `logdensity_fn` back unchanged.
    """
    n_chains = jax.tree.leaves(initial_positions)[0].shape[0]
    mesh = chain_mesh(n_chains)
    n_padded = -(-n_chains // mesh.size) * mesh.size
    if n_padded > n_chains:
        initial_positions, keys = pad_chains((initial_positions, keys), n_padded)
    width = kernel_group_width(chain_batch, mesh.devices.flat[0].platform)
    if group_gradients and width is not None:
        logdensity_fn = _cached_grouped_gradients(logdensity_fn, width)
    return mesh, initial_positions, keys, logdensity_fn


def chain_mesh(n_chains: int, devices=None) -> Mesh:
    """A one-axis mesh over the local devices (at most one per chain) that splits chains among them.

    On a GPU node this is the job's GPU. On a CPU, JAX shows one device unless more are requested
    (``interplay.samplers.use_cpu_cores``): each device then runs its share of the chains on its
    own core, which is faster than XLA's multithreading of the small per-chain matmuls.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.array(devices[:max(1, min(len(devices), n_chains))]), (CHAIN_AXIS,))


def on_chain_shards(fn: Callable, mesh: Mesh, per_chain: tuple, shared: tuple = ()):
    """``fn(*per_chain, *shared)`` with the per-chain arguments (and every output) split along their
    leading chain axis over `mesh`, the shared ones copied to every device. Chains never communicate,
    so each device simply runs `fn` on its own chains."""
    split, copied = PartitionSpec(CHAIN_AXIS), PartitionSpec()
    sharded = jax.shard_map(fn, mesh=mesh, in_specs=(split,) * len(per_chain) + (copied,) * len(shared),
                            out_specs=split, check_vma=False)
    return sharded(*per_chain, *shared)


def pad_chains(tree, n_padded: int):
    """Repeat chain 0 so every leaf has `n_padded` chains (devices need equal shares); callers
    drop the extra chains afterwards. Works for typed and raw PRNG keys alike."""
    n_chains = jax.tree.leaves(tree)[0].shape[0]
    index = jnp.concatenate([jnp.arange(n_chains), jnp.zeros(n_padded - n_chains, int)])
    return jax.tree.map(lambda leaf: leaf[index], tree)


def use_cpu_cores(n_cores: int) -> None:
    """Show `n_cores` CPU devices to JAX, so a block's chains spread over that many cores.

    Must run before JAX initialises its CPU backend (before the first computation); a no-op
    for n_cores <= 1.
    """
    if n_cores > 1:
        jax.config.update("jax_num_cpu_devices", int(n_cores))


def check_counts(resolved: dict, block: str, names) -> None:
    """Check and coerce, in place, the settings of ``sampler.<block>``: `names` are non-negative integers,
    ``steps`` a positive multiple of ``thin``, ``chain_batch`` a positive integer or None; errors name the key."""
    for name in names:
        value = resolved[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"sampler.{block}.{name} must be a non-negative integer, got {value!r}")
        resolved[name] = int(value)
    if resolved["thin"] < 1 or resolved["steps"] < resolved["thin"] or resolved["steps"] % resolved["thin"]:
        raise ValueError(f"sampler.{block}.steps ({resolved['steps']}) must be a positive multiple of "
                         f"thin ({resolved['thin']})")
    chain_batch = resolved["chain_batch"]
    if chain_batch is not None and (isinstance(chain_batch, bool) or not isinstance(chain_batch, (int, np.integer))
                                    or chain_batch < 1):
        raise ValueError(f"sampler.{block}.chain_batch must be a positive integer or null, got {chain_batch!r}")


def check_chain_inputs(initial_positions, keys) -> int:
    """Number of chains; errors when positions and keys disagree on it."""
    leaves = jax.tree.leaves(initial_positions)
    if not leaves:
        raise ValueError("initial_positions has no parameters")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every initial_positions leaf needs the same leading chain axis, got sizes {sizes}")
    n_chains = sizes.pop()
    keys = jnp.asarray(keys)
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    expected = (n_chains,) if typed else (n_chains, 2)
    if keys.shape != expected:
        raise ValueError(f"keys must have shape {expected} (one PRNG key per chain), got {keys.shape}")
    return n_chains


def per_chain_keys(keys, n: int) -> tuple[jax.Array, ...]:
    """Split each chain's key into n independent keys: a tuple of n arrays shaped like ``keys``."""
    split = jax.vmap(lambda key: jax.random.split(key, n))(jnp.asarray(keys))
    return tuple(split[:, i] for i in range(n))


def report_every(total_steps: int) -> int:
    """Steps between two progress reports."""
    return max(1, -(-total_steps // PROGRESS_REPORTS_PER_PHASE))


class _ByIdentity:
    """A hashable stand-in for an unhashable callback (jit static arguments must hash)."""

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, *args):
        return self.callback(*args)


def hashable_callback(progress):
    """``progress`` itself when hashable (so compiled phases are reused), else a wrapper."""
    if progress is None:
        return None
    try:
        hash(progress)
    except TypeError:
        return _ByIdentity(progress)
    return progress


def finish_phase(progress: Callable[[str, int, int], None] | None, phase: str, total: int, result,
                 start: float) -> float:
    """Wait for a phase's `result`, report it complete (``progress(phase, total, total)``) and return
    its wall-clock seconds since `start` (a ``time.perf_counter()`` reading)."""
    jax.block_until_ready(result)
    if progress is not None:
        progress(phase, total, total)
    return time.perf_counter() - start


def maybe_report(progress: Callable[[str, int, int], None] | None, phase: str, step, total: int,
                 every: int, when=True) -> None:
    """Inside a scan: call ``progress(phase, step, total)`` on the host every ``every`` steps
    (and only where `when` holds, e.g. on the first of several chain shards).

    Traces nothing at all when ``progress`` is None.
    """
    if progress is None:
        return

    def report(current):
        progress(phase, int(current), total)

    jax.lax.cond((step % every == 0) & when, lambda: jax.debug.callback(report, step), lambda: None)


def __getattr__(name: str):
    # Lazy re-exports: the submodules import the helpers above, so importing them eagerly here
    # would be circular.
    if name == "run_mclmc":
        from interplay.samplers.mclmc import run_mclmc

        return run_mclmc
    if name == "run_nuts":
        from interplay.samplers.nuts import run_nuts

        return run_nuts
    raise AttributeError(f"module 'interplay.samplers' has no attribute {name!r}")
