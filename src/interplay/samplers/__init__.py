"""MCMC kernels run for many chains at once (vectorised with vmap inside lax.scan).

- :func:`interplay.samplers.mclmc.run_mclmc`: MCLMC with MILE's tuning schedule.
- :func:`interplay.samplers.nuts.run_nuts`: NUTS with Stan's window adaptation (diagonal mass).

Both take ``(logdensity_fn, initial_positions, keys, cfg, *, progress=None)`` and return
``(draws, stats)``: draws with leaves (chain, draw, ...), stats a dict of (chain,) numpy arrays.
This module holds the small helpers they share.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Progress callbacks per phase: about this many, whatever the number of steps.
PROGRESS_REPORTS_PER_PHASE = 100


def chain_batch_size(requested: int | None, n_chains: int) -> int:
    """Chains advanced together in one vectorised group: all of them unless `requested` caps it.

    Smaller groups bound the memory of very large blocks (e.g. 10,000 chains on one GPU). On the CPU
    they were no faster for the airfoil net (benchmarks/bench_sampling.py --chain-batch 64 8 2).
    """
    return n_chains if requested is None else max(1, min(int(requested), n_chains))


def map_chains(fn: Callable, args: tuple, batch_size: int):
    """`vmap(fn)(*args)` over the leading chain axis, in vectorised groups of `batch_size` chains
    (`lax.map` with a batch size: a loop over groups, each group vectorised)."""
    n_chains = jax.tree.leaves(args)[0].shape[0]
    if batch_size >= n_chains:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda chain_args: fn(*chain_args), args, batch_size=batch_size)


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


def maybe_report(progress: Callable[[str, int, int], None] | None, phase: str, step, total: int,
                 every: int) -> None:
    """Inside a scan: call ``progress(phase, step, total)`` on the host every ``every`` steps.

    Traces nothing at all when ``progress`` is None.
    """
    if progress is None:
        return

    def report(current):
        progress(phase, int(current), total)

    jax.lax.cond(step % every == 0, lambda: jax.debug.callback(report, step), lambda: None)


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
