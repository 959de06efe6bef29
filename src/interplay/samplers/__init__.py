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

# Progress callbacks per phase: about this many, whatever the number of steps.
PROGRESS_REPORTS_PER_PHASE = 100


# Chains per gradient group on a CPU device: small groups keep a group's activations in cache.
# For the airfoil net (benchmarks/bench_sampling.py) groups of 4 ran ~1.2x faster than one group of 32.
CPU_CHAIN_BATCH = 4
# Name of the mesh axis that splits a block's chains over the local devices.
CHAIN_AXIS = "chains"


def chain_batch_size(requested: int | None, n_chains: int, platform: str) -> int:
    """Chains whose log-density gradients are computed together (one vectorised group) on one device.

    `requested` (``sampler.mclmc.chain_batch``) caps it; by default a GPU (`platform` "gpu") takes
    all its chains at once and a CPU device (`platform` "cpu") groups of `CPU_CHAIN_BATCH`. Smaller
    groups also bound the memory of very large blocks (e.g. 10,000 chains on one GPU).
    """
    if requested is None:
        requested = CPU_CHAIN_BATCH if platform == "cpu" else n_chains
    return max(1, min(int(requested), n_chains))


def chain_group_width(requested: int | None, n_chains: int, platform: str) -> int:
    """Width of every vectorised chain group (gradient groups, warm-start groups) on one device.

    Unlike `chain_batch_size` it is not capped at `n_chains`: on a CPU it is `requested` or
    `CPU_CHAIN_BATCH` whatever the block, so every group has the same shape in every job and a chain's
    arithmetic (XLA picks a matmul's blocking, hence its summation order, from its shape) does not depend
    on the block that ran it. On a GPU the default is all `n_chains` (one group).
    """
    if requested is None:
        requested = CPU_CHAIN_BATCH if platform == "cpu" else n_chains
    return max(1, int(requested))


def map_fixed_groups(fn: Callable, group_size: int, tree):
    """``jax.vmap(fn)(tree)`` over the leading chain axis, computed `group_size` chains at a time
    (``lax.map`` over vectorised groups). The chains are padded (copies of chain 0, dropped again)
    to whole groups, so every group has exactly `group_size` chains, whatever their number: a chain's
    result does not depend on how many chains are computed with it."""
    n_chains = jax.tree.leaves(tree)[0].shape[0]
    n_groups = -(-n_chains // group_size)
    padded = pad_chains(tree, n_groups * group_size) if n_groups * group_size > n_chains else tree
    grouped = jax.tree.map(lambda leaf: leaf.reshape(n_groups, group_size, *leaf.shape[1:]), padded)
    # The barriers keep XLA from fusing a group's arithmetic with the block-shaped code around it (a loop of
    # one group is inlined), which could change its rounding (e.g. a multiply-add contracted or not).
    out = jax.lax.optimization_barrier(jax.lax.map(jax.vmap(fn), jax.lax.optimization_barrier(grouped)))
    return jax.tree.map(lambda leaf: leaf.reshape(n_groups * group_size, *leaf.shape[2:])[:n_chains], out)


def grouped_gradients(logdensity_fn: Callable, group_size: int) -> Callable:
    """`logdensity_fn` whose value and gradient, when vmapped over chains, are computed `group_size`
    chains at a time (``lax.map`` over vectorised groups); unchanged for one chain.

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
        out = jax.lax.map(value_and_grad, position, batch_size=min(group_size, axis_size))
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


def spread_chains(logdensity_fn: Callable, initial_positions, keys, chain_batch: int | None):
    """A block's chains laid out for the local devices: ``(mesh, positions, keys, logdensity_fn)``.

    Chains are split over the local devices (several CPU cores, or the job's GPU); each device vmaps the
    kernel over its share, with log-density gradients in groups of ``chain_batch_size`` chains. Devices
    need equal shares, so positions and keys are padded with copies of chain 0 (callers drop the chains
    past the block's own count afterwards).
    """
    n_chains = jax.tree.leaves(initial_positions)[0].shape[0]
    mesh = chain_mesh(n_chains)
    n_padded = -(-n_chains // mesh.size) * mesh.size
    if n_padded > n_chains:
        initial_positions, keys = pad_chains((initial_positions, keys), n_padded)
    n_local = n_padded // mesh.size
    batch = chain_batch_size(chain_batch, n_local, mesh.devices.flat[0].platform)
    if batch < n_local:
        logdensity_fn = _cached_grouped_gradients(logdensity_fn, batch)
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


def unroll_threefry_on_cpu() -> bool:
    """Lower JAX's threefry PRNG hash unrolled on the CPU, as on GPUs: the same bits, ~3x faster.

    JAX lowers it on the CPU as a 5-step loop to save compile time; the kernel draws fresh momentum
    noise for every chain at every step, and the loop made that ~4% of a CPU sampling step. Uses
    JAX internals: returns False (and changes nothing) where they are missing.
    """
    try:
        from jax._src.random import threefry2x32
        from jax.interpreters import mlir

        mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule,
                               platform="cpu")
    except (ImportError, AttributeError):
        return False
    return True


unroll_threefry_on_cpu()


def use_cpu_cores(n_cores: int) -> None:
    """Show `n_cores` CPU devices to JAX, so a block's chains spread over that many cores.

    Must run before JAX initialises its CPU backend (before the first computation); a no-op
    for n_cores <= 1.
    """
    if n_cores > 1:
        jax.config.update("jax_num_cpu_devices", int(n_cores))


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
