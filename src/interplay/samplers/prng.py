"""A faster CPU lowering of JAX's threefry PRNG hash for sampling jobs (opt-in, version-guarded).

JAX lowers ``threefry2x32`` on the CPU as a 5-step loop (to save compile time), on GPUs unrolled. The
samplers draw fresh momentum noise for every chain at every step; with JAX 0.10.2 the unrolled form
draws it 1.6-3x faster, and a CPU MCLMC sampling phase of the airfoil net (16 chains) ran 1.03-1.2x
faster in three runs on a shared 2-core machine (benchmarks/bench_threefry.py prints both). The random bits and normals are the same either way
(Random123's known answer: tests/test_samplers_chain_batch.py), but XLA fuses the two forms differently
with the kernel's arithmetic, so a chain's float bits differ between them: every sampler program of a
process must be compiled under one lowering. `interplay.samplers` therefore chooses it once, on import,
before any sampler code runs; only sampling code imports the samplers (the config, data, merge,
analysis and figure code do not import JAX at all).

Registering another lowering uses JAX internals (``jax._src``), so it is done only with a JAX whose
internals it was checked against (`CHECKED_JAX`) and unless ``INTERPLAY_THREEFRY=jax`` asks for JAX's
own lowering; otherwise JAX's lowering stays and the log says why: sampling is then just as correct,
only the noise draw is slower.
"""

from __future__ import annotations

import logging
import os

import jax

logger = logging.getLogger(__name__)

# JAX versions (major, minor) whose threefry internals the unrolled CPU lowering was checked against.
CHECKED_JAX = ((0, 10),)
# Environment variable that keeps JAX's own lowering when set to "jax" (benchmarks/bench_threefry.py).
LOWERING_ENV = "INTERPLAY_THREEFRY"


def _jax_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def unroll_threefry_on_cpu(version: str | None = None) -> bool:
    """Lower threefry unrolled on the CPU, as on GPUs: the same bits, a faster noise draw.

    Returns whether the lowering is registered: False, with JAX's default lowering kept and an info
    message logged, for a JAX `version` (default: the installed one) outside `CHECKED_JAX` or whose
    internals have moved, or when ``$INTERPLAY_THREEFRY`` is ``jax``.
    """
    version = jax.__version__ if version is None else version
    if os.environ.get(LOWERING_ENV, "").strip().lower() == "jax":
        logger.info("threefry keeps JAX's own CPU lowering (%s=jax)", LOWERING_ENV)
        return False
    if _jax_minor(version) not in CHECKED_JAX:
        logger.info("JAX %s: threefry keeps JAX's own CPU lowering (the unrolled one is checked for JAX %s; "
                    "see benchmarks/bench_threefry.py)", version,
                    ", ".join(f"{major}.{minor}" for major, minor in CHECKED_JAX))
        return False
    try:
        from jax._src.random import threefry2x32
        from jax.interpreters import mlir

        mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule,
                               platform="cpu")
    except (ImportError, AttributeError) as error:
        logger.info("JAX %s: threefry keeps JAX's own CPU lowering (its internals have moved: %s)", version, error)
        return False
    return True
