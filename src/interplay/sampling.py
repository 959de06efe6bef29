"""One sampling job: a block of chains of one run, from prepared data to a block posterior file.

Block ``b`` holds global chains ``[b * block_size, min((b + 1) * block_size, chains))``; chain ``c``
uses only ``fold_in(PRNGKey(seed), c)`` (and keys derived from it), so its draws do not depend on
the block it ran in. Sampler kinds:

- ``mile``: deep-ensemble warm start (AdamW, vectorised) -> MCLMC tuning and sampling per chain.
- ``mams``: the same warm start -> Metropolis-adjusted MCLMC (MAMS), tuned per chain; unbiased.
- ``nuts``: NUTS (window adaptation) from the warm-start members.
- ``de``: the warm-start members alone, one draw per chain.
- ``mfvi``: mean-field VI (NumPyro AutoNormal), draws from each chain's fitted guide.
- ``laplace``: MAP training, then a last-layer Laplace approximation per chain; draws from its Gaussian and
  its closed-form (linearised) predictive in ``predictive`` (`interplay.samplers.laplace`).

Predictive quantities over the test split (DESIGN.md group ``predictive``) are computed per
chain with a scan over draws, in chain chunks, so memory stays bounded for large blocks.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import interplay.samplers  # noqa: F401  (chooses the samplers' threefry lowering before anything compiles)
from interplay.config import n_blocks
from interplay.models import (
    ModelSpec,
    PriorSpec,
    make_logdensity,
    pointwise_log_likelihood,
    predictive_cdf,
    predictive_mean,
)
from interplay.posterior_io import REQUIRED_STATS, write_block
from interplay.samplers.checkpoint import DEFAULT_CHUNK_STEPS, Checkpoint
from interplay.workflow_logging import log_line

SAMPLER_KINDS = ("mile", "mams", "nuts", "de", "mfvi", "laplace", "sghmc")
# The sampler block of `sampler` that each MCMC kind reads.
MCMC_SETTINGS = {"mile": "mclmc", "mams": "mams", "nuts": "nuts"}
# Kinds whose sampler runs in checkpointed chunks (all kinds with a warm start checkpoint it).
CHUNKED_KINDS = ("mile", "mams")
# Sub-keys of each chain key: one independent stream per stage of the job.
WARMSTART_STREAM, SAMPLER_STREAM = 0, 1
# Predictive chunking: at most this many (chain x test point x unit) floats of activations at once.
PREDICTIVE_MAX_ELEMENTS = 2**24
PROGRESS_MIN_SECONDS = 5.0

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- blocks and keys


def block_chains(run: Mapping, block: int) -> range:
    """Global chain indices of `block`."""
    total = n_blocks(run)
    chains, block_size = int(run["sampler"]["chains"]), int(run["sampler"]["block_size"])
    if not isinstance(block, (int, np.integer)) or not 0 <= block < total:
        raise ValueError(f"run {run.get('name')!r} has blocks 0..{total - 1} ({chains} chains, block_size "
                         f"{block_size}); got block {block!r}")
    return range(block * block_size, min((block + 1) * block_size, chains))


def chain_keys(seed: int, chains) -> jax.Array:
    """(len(chains), 2) keys, chain c's = fold_in(PRNGKey(seed), c): independent of the job."""
    indices = jnp.asarray(list(chains), dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(seed), indices)


def _stream(keys: jax.Array, stream: int) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, stream)


# ----------------------------------------------------------------------------- progress logging


class ProgressLog:
    """Rate-limited progress lines (phase, step, steps/s, ETA) to a path, a logger or this module's logger."""

    def __init__(self, log=None, prefix: str = "", min_seconds: float = PROGRESS_MIN_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.prefix, self.min_seconds, self.clock = log, prefix, min_seconds, clock
        self.phase, self.last_step = None, None
        self.phase_start = self.phase_first_step = self.last_report = 0.0

    def info(self, message: str) -> None:
        log_line(self.log, f"{self.prefix}{message}", default=logger)

    def __call__(self, phase: str, step, total) -> None:
        step, total = int(np.asarray(step).ravel()[0]), int(total)
        now = self.clock()
        if phase != self.phase:
            self.phase, self.phase_start, self.phase_first_step = phase, now, step
            self.last_report = -math.inf
        finished = step >= total
        if (step, total) == self.last_step or (not finished and now - self.last_report < self.min_seconds):
            return
        self.last_report, self.last_step = now, (step, total)
        elapsed = now - self.phase_start
        rate = (step - self.phase_first_step) / elapsed if elapsed > 0 else 0.0
        speed = f"{rate:.1f} steps/s, ETA {(total - step) / rate:.0f} s" if rate > 0 else "starting"
        self.info(f"{phase}: step {step}/{total}, {speed}")


# ----------------------------------------------------------------------------- predictive


def predictive_chunk_size(n_chain: int, n_test: int, width: int,
                          max_elements: int = PREDICTIVE_MAX_ELEMENTS) -> int:
    """Chains per predictive chunk: at most `max_elements` (chain x test point x unit) activations."""
    return int(max(1, min(n_chain, max_elements // max(1, n_test * width))))


def predictive_program(model: ModelSpec, x_test, y_test, n_diag: int) -> Callable:
    """The compiled program of one predictive chunk: draws {leaf: (chunk, draw, ...)} -> the per-chain
    (log_pred_density, pred_mean, pit, pred_draws) of `predictive_quantities` (pit is 0 for `class`).

    Per chain, a scan over draws accumulates logsumexp of the pointwise log likelihood, the mean
    prediction and (regression) the mean predictive CDF.
    """
    x_test = jnp.asarray(x_test, jnp.float32)
    y_test = jnp.asarray(y_test)
    n_test = x_test.shape[0]
    n_diag = min(int(n_diag), n_test)
    classification = model.likelihood == "class"

    def per_chain(params_by_draw):
        n_draw = jax.tree.leaves(params_by_draw)[0].shape[0]

        def step(carry, params):
            log_density_sum, mean_sum, cdf_sum = carry
            log_lik = pointwise_log_likelihood(model, params, x_test, y_test)
            mean = predictive_mean(model, params, x_test)
            if classification:
                cdf = cdf_sum
                observed = y_test[:n_diag, None].astype(jnp.int32)
                diag = jnp.take_along_axis(mean[:n_diag], observed, axis=1)[:, 0]
            else:
                cdf = cdf_sum + predictive_cdf(model, params, x_test, y_test)
                diag = mean[:n_diag]
            return (jnp.logaddexp(log_density_sum, log_lik), mean_sum + mean, cdf), diag

        mean_shape = (n_test, model.out_dim) if classification else (n_test,)
        init = (jnp.full(n_test, -jnp.inf), jnp.zeros(mean_shape), jnp.zeros(n_test))
        (log_density_sum, mean_sum, cdf_sum), diag = jax.lax.scan(step, init, params_by_draw)
        return log_density_sum - jnp.log(n_draw), mean_sum / n_draw, cdf_sum / n_draw, diag

    return jax.jit(jax.vmap(per_chain))


def predictive_quantities(model: ModelSpec, draws: Mapping, x_test, y_test, n_diag: int,
                          max_elements: int = PREDICTIVE_MAX_ELEMENTS) -> dict[str, np.ndarray]:
    """DESIGN.md's predictive group from draws {leaf: (chain, draw, ...)} over (x_test, y_test).

    Chains go through `predictive_program` in chunks of equal size (`predictive_chunk_size`), so the
    memory is bounded by ``max_elements`` activations. ``pred_draws`` holds per-draw predicted means
    at the first `n_diag` test points (classification: the probability of the observed class).
    """
    y_test = jnp.asarray(y_test)
    n_test = np.shape(x_test)[0]
    if n_test == 0:
        raise ValueError("the test split is empty: no predictive quantities")
    leaves = dict(draws)  # on the host (numpy) or the device; each chunk goes to the device on its own
    n_chain = np.shape(next(iter(leaves.values())))[0]
    chunk = predictive_chunk_size(n_chain, n_test, max(model.units), max_elements)
    compute = predictive_program(model, x_test, y_test, n_diag)
    outputs = []
    for start in range(0, n_chain, chunk):
        piece = {k: jnp.asarray(v[start:start + chunk]) for k, v in leaves.items()}
        size = next(iter(piece.values())).shape[0]
        if size < chunk:  # pad to the common chunk size: one compilation for all chunks
            piece = {k: jnp.concatenate([v, jnp.repeat(v[-1:], chunk - size, axis=0)])
                     for k, v in piece.items()}
        outputs.append([np.asarray(o[:size]) for o in compute(piece)])
    log_pred_density, pred_mean, pit, pred_draws = (np.concatenate(parts) for parts in zip(*outputs))
    result = {"log_pred_density": log_pred_density, "pred_mean": pred_mean,
              "pred_draws": pred_draws, "y_test": np.asarray(y_test)}
    if model.likelihood != "class":
        result["pit"] = pit
    return result


# ----------------------------------------------------------------------------- provenance


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "blackjax", "numpyro", "optax", "interplay"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found


def git_commit() -> str:
    """The source checkout's commit, or "unknown" outside git."""
    from interplay.provenance import git_info

    return git_info(Path(__file__).resolve().parent, with_diff=False)["commit"] or "unknown"


def device_description() -> str:
    device = jax.devices()[0]
    return f"{jax.default_backend()}: {device.device_kind} (x{jax.device_count()})"


def warn_if_gpu_unused(log) -> None:
    """A job that was given a GPU (CUDA_VISIBLE_DEVICES) but runs on the CPU still works: say so loudly."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible and jax.default_backend() == "cpu":
        message = (f"CUDA_VISIBLE_DEVICES={visible} but JAX runs on the CPU (no CUDA jaxlib?): falling back to "
                   "CPU; install envs/cuda.yaml for GPU sampling")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        if isinstance(log, logging.Logger):
            log.warning(message)


# ----------------------------------------------------------------------------- the job


def _load_data(run: Mapping, data_path):
    from interplay.data import load_split

    splits = {name: load_split(data_path, name) for name in ("train", "valid", "test")}
    max_train = run.get("data", {}).get("max_train_points")
    if max_train is not None:  # rows are shuffled: the first n are a random subset
        x, y = splits["train"]
        splits["train"] = (x[: int(max_train)], y[: int(max_train)])
    return splits


def _n_classes(run: Mapping, splits) -> int | None:
    if run["model"]["likelihood"] != "class":
        return None
    labels = np.concatenate([np.asarray(y) for _, y in splits.values()])
    return int(labels.max()) + 1


def _nonfinite_per_chain(tree) -> np.ndarray:
    """Chains (leading axis) with any non-finite value in any leaf."""
    flags = [~np.isfinite(np.reshape(leaf, (np.shape(leaf)[0], -1))).all(axis=1) for leaf in jax.tree.leaves(tree)]
    return np.stack(flags).any(axis=0)


def diverged_causes_of(chains, causes: Mapping[str, np.ndarray]) -> dict[str, str]:
    """{global chain id: its causes, comma-separated} for the diverged chains (root attr ``diverged_causes``)."""
    found = {}
    for index, chain in enumerate(chains):
        named = [cause for cause, flags in causes.items() if flags[index]]
        if named:
            found[str(int(chain))] = ", ".join(named)
    return found


def block_fingerprint(run: Mapping, block: int, data_path) -> dict:
    """What a block's bits depend on, for its checkpoint (`interplay.samplers.checkpoint`): the run's
    sampling settings, the block's chains, the prepared data's hashes, package versions and the platform."""
    from interplay.data.prepare import prepared_provenance

    chains = block_chains(run, block)
    return {"settings": json.dumps(dict(run), sort_keys=True, default=str), "block": int(block),
            "chains": [chains.start, chains.stop], "data": prepared_provenance(data_path), "versions": versions(),
            "platform": jax.default_backend()}


def block_checkpoint(run: Mapping, block: int, data_path, settings: Mapping | None, *, log=None) -> Checkpoint:
    """The checkpoint of one `sample` job from the study's ``checkpoint`` settings (config schema):
    ``<dir>/<run>/block-<block>/``, saved every ``every_minutes`` and on SIGTERM/SIGUSR1, chunks of
    ``chunk_steps`` steps; with ``enabled: false`` (or `settings` None) nothing is saved, the chunks stay."""
    settings = dict(settings or {})
    chunk_steps = int(settings.get("chunk_steps", DEFAULT_CHUNK_STEPS))
    if not settings.get("enabled", False):
        return Checkpoint(chunk_steps=chunk_steps, log=log)
    directory = Path(settings["dir"]) / str(run.get("name", "unknown")) / f"block-{int(block)}"
    every = settings.get("every_minutes")
    checkpoint = Checkpoint(directory, block_fingerprint(run, block, data_path), chunk_steps=chunk_steps,
                            every_seconds=None if every is None else 60.0 * float(every), log=log)
    if checkpoint.load():
        stage, step = checkpoint.resumed_from or ("a boundary between stages", 0)
        log_line(log, f"resuming from checkpoint {checkpoint.state_path}: {stage} step {step}", default=logger)
    return checkpoint


def sample_block(run: Mapping, block: int, data_path, out_path, *, log=None,
                 step_progress: bool = True, checkpoint: Checkpoint | None = None) -> None:
    """Sample the chains of `block` of `run` on the prepared data at `data_path`; write `out_path`.

    The warm start, MILE and MAMS log progress (step, rate, ETA; at most every few seconds) from the host
    after every chunk of steps. ``step_progress`` also logs NUTS's from inside its programs, by a host
    callback; JAX never writes such programs to its persistent compilation cache, so the pipeline's default
    (config ``sample_progress: phases``) passes False and logs a line per finished NUTS stage instead. The
    arrays do not depend on it.

    ``checkpoint`` (`block_checkpoint`) runs the warm start and MCLMC in its chunks of steps, saves the job's
    state at its interval and on SIGTERM/SIGUSR1 (then raises `Interrupted`), resumes a saved state, and is
    removed once the block file is written; the arrays are the same bits with or without it.

    Diverged chains (non-finite warm-start loss, energies, ELBO or positions) are written with their
    ``diverged`` flag and their causes (root attr ``diverged_causes``), even when all chains of the block
    diverged; their predictive quantities are computed all the same (NaN where the draws are).
    """
    job_start = time.perf_counter()
    checkpoint = checkpoint if checkpoint is not None else Checkpoint()
    name = run.get("name", "unknown")
    chains = block_chains(run, block)
    sampler = run["sampler"]
    kind = sampler.get("kind")
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"run {name!r}: sampler.kind must be one of {SAMPLER_KINDS}, got {kind!r}")
    progress = ProgressLog(log, prefix=f"[{name} block {block}] ")
    in_program = progress if step_progress else None  # progress callbacks traced into compiled programs
    warn_if_gpu_unused(log)
    progress.info(f"{kind}: chains {chains.start}..{chains.stop - 1} on {device_description()}")

    splits = _load_data(run, data_path)
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (splits[s] for s in ("train", "valid", "test"))
    model = ModelSpec.from_run(run, in_dim=int(np.shape(x_train)[1]), n_classes=_n_classes(run, splits))
    prior = PriorSpec.from_run(run, model)
    y_dtype = jnp.int32 if model.likelihood == "class" else jnp.float32
    x_train, y_train = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, y_dtype)
    keys = chain_keys(int(sampler["seed"]), chains)
    n_chain = len(chains)
    nan = np.full(n_chain, np.nan)
    stats: dict[str, np.ndarray] = {}
    causes: dict[str, np.ndarray] = {}

    members = None
    if kind in ("mile", "mams", "nuts", "de"):
        from interplay.samplers.warmstart import train_ensemble_with_info, warmstart_grad_evals

        members, val_loss, epochs = train_ensemble_with_info(
            model, prior, x_train, y_train, np.asarray(x_valid), np.asarray(y_valid, y_dtype),
            _stream(keys, WARMSTART_STREAM), sampler["warmstart"], progress=progress, checkpoint=checkpoint)
        val_loss = np.asarray(val_loss, np.float64)
        stats["warmstart_seconds"] = np.full(n_chain, checkpoint.stage_seconds("warmstart"))
        stats["warmstart_epochs"] = np.asarray(epochs, np.int64)
        stats["warmstart_grad_evals"] = np.asarray(
            warmstart_grad_evals(np.asarray(epochs, np.int64), x_train.shape[0],
                                 int(sampler["warmstart"]["batch_size"])), np.int64)
        stats["warmstart_val_loss"] = val_loss
        causes["non-finite warm-start validation loss"] = ~np.isfinite(val_loss)
        finite_loss = val_loss[np.isfinite(val_loss)]
        median = f"{np.median(finite_loss):.4g}" if finite_loss.size else "none finite"
        seconds = stats["warmstart_seconds"][0]
        progress.info(f"warm start done in {seconds:.1f} s, median validation NLL {median}")
    else:
        stats["warmstart_val_loss"] = nan

    sampler_keys = _stream(keys, SAMPLER_STREAM)
    if kind in MCMC_SETTINGS:
        logdensity = make_logdensity(model, prior, x_train, y_train)
        run_fn = _sampler_fn(kind)
        cfg = sampler[MCMC_SETTINGS[kind]]
        # chunked samplers report progress from the host after every chunk; NUTS only from inside its programs
        chunked = {"checkpoint": checkpoint, "progress": progress} if kind in CHUNKED_KINDS else \
            {"progress": in_program}
        draws, sampler_stats = run_fn(logdensity, members, sampler_keys, cfg, **chunked)
        sampler_stats = dict(sampler_stats)
        if kind not in CHUNKED_KINDS and not step_progress:
            progress.info(f"{kind} done: warmup {np.max(sampler_stats['warmup_seconds']):.1f} s, "
                          f"sampling {np.max(sampler_stats['sampling_seconds']):.1f} s")
        sampler_flag = np.asarray(sampler_stats.pop("diverged"), bool)
        # Both samplers flag non-finite states; for NUTS the non-finite draws are caught below, and its
        # ordinary divergent transitions stay in `n_divergent` without dropping the chain.
        if kind == "mile":
            energy_variance = np.asarray(sampler_stats["energy_variance"])
            causes["non-finite energies"] = sampler_flag | ~np.isfinite(energy_variance)
        if kind == "mams":  # a chain stuck at its start is as useless as a diverged one
            causes["rejected every proposal"] = np.asarray(sampler_stats.pop("rejected_all"), bool)
        stats.update(sampler_stats)
    elif kind == "de":
        draws = jax.tree.map(lambda leaf: leaf[:, None], members)
        stats.update(step_size=nan, L=nan, energy_variance=nan, warmup_seconds=np.zeros(n_chain),
                     sampling_seconds=np.zeros(n_chain), n_grad_evals=np.zeros(n_chain, np.int64))
    elif kind == "laplace":
        from interplay.samplers.laplace import run_laplace

        draws, laplace_stats, laplace_fits = run_laplace(model, prior, x_train, y_train, sampler_keys,
                                                         sampler["laplace"], progress=progress)
        causes["non-finite MAP loss or Laplace covariance"] = laplace_stats.pop("diverged")
        stats.update(step_size=nan, L=nan, energy_variance=nan, **laplace_stats)
    elif kind == "sghmc":  # its own warm start, then adaptive SGHMC on minibatches (interplay.samplers.sghmc)
        from interplay.samplers.sghmc import run_sghmc_block

        draws, sghmc_stats, sghmc_causes = run_sghmc_block(
            model, prior, (x_train, y_train), (x_valid, y_valid), _stream(keys, WARMSTART_STREAM), sampler_keys,
            sampler, progress=in_program, checkpoint=checkpoint)
        stats.update(sghmc_stats)
        causes.update(sghmc_causes)
    else:
        from interplay.samplers.mfvi import run_mfvi

        draws, mfvi_stats = run_mfvi(model, prior, x_train, y_train, sampler_keys, sampler["mfvi"],
                                     progress=progress)
        mfvi_stats = {k: np.asarray(v) for k, v in mfvi_stats.items()}
        causes["non-finite ELBO"] = mfvi_stats.pop("diverged").astype(bool)
        stats.update(step_size=nan, L=nan, energy_variance=nan, **mfvi_stats)

    draws = {leaf: np.asarray(value, np.float32) for leaf, value in draws.items()}  # on the host
    causes["non-finite positions"] = _nonfinite_per_chain(draws)
    diverged = np.any(list(causes.values()), axis=0)
    stats["diverged"] = diverged.astype(np.int8)
    diverged_causes = diverged_causes_of(chains, causes)
    if diverged.any():
        # Written all the same (even when every chain diverged): merge leaves them out and fails only when
        # no chain of the whole run is left, naming blocks and causes.
        counts = ", ".join(f"{cause}: {int(flags.sum())}" for cause, flags in causes.items() if flags.any())
        progress.info(f"{int(diverged.sum())} of {n_chain} chains diverged ({counts}): "
                      f"{[c for c, d in zip(chains, diverged) if d][:20]}")

    start = time.perf_counter()
    n_diag = int(run.get("diagnostics", {}).get("pred_draw_points", 16))
    predictive = predictive_quantities(model, draws, np.asarray(x_test), np.asarray(y_test, y_dtype), n_diag)
    if kind == "laplace":  # the closed-form predictive replaces the Monte Carlo one (pred_draws stay)
        from interplay.samplers.laplace import laplace_predictive

        predictive.update(laplace_predictive(model, laplace_fits, np.asarray(x_test), np.asarray(y_test)))
    stats["predictive_seconds"] = np.full(n_chain, time.perf_counter() - start)
    for stat in REQUIRED_STATS:
        stats.setdefault(stat, nan)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    stats["n_grad_evals"] = stats["n_grad_evals"].astype(np.int64)

    from interplay.data.prepare import prepared_provenance

    attrs = {"block": int(block), "diverged_causes": diverged_causes, "versions": versions(),
             "data": prepared_provenance(data_path),
             "git_commit": git_commit(), "device": device_description(), "sampler_kind": kind,
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    write_block(out_path, draws, stats, predictive, model=model, run=run, chains=chains, attrs=attrs)
    checkpoint.remove()  # the block is complete: its saved state is not needed again
    progress.info(f"wrote {out_path} in {time.perf_counter() - job_start:.1f} s total")


def _sampler_fn(kind: str):
    if kind == "mile":
        from interplay.samplers.mclmc import run_mclmc

        return run_mclmc
    if kind == "mams":
        from interplay.samplers.mams import run_mams

        return run_mams
    from interplay.samplers.nuts import run_nuts

    return run_nuts

