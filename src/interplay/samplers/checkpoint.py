"""Preemption-safe sampling: stages run in chunks of steps, their state saved atomically, resumed bit for bit.

A sampling job is a sequence of named **stages** (``warmstart``, ``mclmc/tune12``, ``mclmc/tune3``,
``mclmc/sample``, ...). Each stage advances a **carry** (a pytree of per-chain arrays: positions,
momenta, tuning state, streamed estimates, ...) over its steps in chunks of at most ``chunk_steps``
steps, one call of the stage's compiled program per chunk (`run_stage`). A chunk program takes the
first step and the number of steps as *traced* values and loops over them with a loop XLA cannot see
the trip count of, so every chunk of a stage runs the same compiled program and a chain's arithmetic
does not depend on where the chunks begin or end: a run cut into chunks, or stopped and resumed at any
chunk boundary, gives the same bits as one in a single chunk (tests/test_checkpoint.py).

At a chunk boundary the `Checkpoint` saves the job's state when ``every_seconds`` have passed since the
last save, or at once when the process got SIGTERM or SIGUSR1 (what Slurm sends before a time limit
or a preemption): the stage, its step, its carry, the outputs of the stages already finished and the
seconds spent, in one ``state.npz`` written under a temporary name and renamed. A signal that arrives
while a chunk is computing saves the boundary before it (the chunk's input, still at hand), so the job
stops within seconds, not a chunk, and then raises `Interrupted`. Draws leave the device chunk by
chunk (the sampling programs hold one chunk of draws, not all); with a checkpoint directory each
chunk's draws are written once to their own file (``draws-<stage>-<first draw>.npz``) before the state
that counts them.

A restarted job with the same fingerprint (the run's sampling settings, the block, the data's hash,
package versions and the JAX platform: everything a chain's bits depend on) resumes from the saved
stage and step; a checkpoint with another fingerprint is refused, naming the keys that differ. A
finished block removes its checkpoint (`Checkpoint.remove`).

File format: ``state.npz`` holds the carry's and outputs' leaves (``leaf_<i>``), their pytree structure
(``treedef``, pickled: the containers are JAX's and BlackJAX's named tuples) and a JSON ``meta`` record
(fingerprint, stage, step, draws saved, seconds). A checkpoint is a transient file of one job on the
same installation, not an archive format.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import jax
import numpy as np

from interplay.config import DEFAULT_CHUNK_STEPS  # large enough that a chunk's host round trip is negligible

STATE_FILE = "state.npz"
# Signals that make a job save its state and stop (Slurm: SIGTERM before a time limit or preemption,
# or the signal the profile asks for with --signal).
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# How often a waiting job looks for a signal while a chunk computes: first after POLL_FIRST_SECONDS, the
# interval doubling up to POLL_SECONDS (short chunks, e.g. one MAMS transition, then cost no idle time).
POLL_FIRST_SECONDS = 1e-4
POLL_SECONDS = 0.05


class Interrupted(RuntimeError):
    """The job got a stop signal and saved its state: rerun it to resume."""


class CheckpointMismatch(ValueError):
    """A checkpoint from other settings (or data, or versions) than the job's."""


def fingerprint_differences(saved: Mapping, current: Mapping) -> list[str]:
    """Keys whose values differ between two fingerprints (sorted)."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


def _to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through a temporary file in its directory and rename it (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _save_tree(path: Path, tree, meta: Mapping) -> None:
    leaves, treedef = jax.tree.flatten(tree)
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["treedef"] = np.frombuffer(pickle.dumps(treedef), np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), np.uint8)
    _atomic_write(path, lambda stream: np.savez(stream, **arrays))


def _load_tree(path: Path):
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(stored["meta"].tobytes().decode())
        treedef = pickle.loads(stored["treedef"].tobytes())
        leaves = [stored[f"leaf_{i}"] for i in range(treedef.num_leaves)]
    return jax.tree.unflatten(treedef, leaves), meta


def _draws_name(stage: str, first: int) -> str:
    return f"draws-{re.sub(r'[^A-Za-z0-9_-]', '_', stage)}-{first:09d}.npz"


class Checkpoint:
    """The saved state of one sampling job (module docstring); without a directory, chunking alone.

    Args:
        directory: where ``state.npz`` and the draws' files go (None: nothing is written, the stages
            still run in chunks and draws still leave the device chunk by chunk).
        fingerprint: JSON-able record of everything the job's bits depend on.
        every_seconds: save at a chunk boundary when this long has passed since the last save
            (None: only on a signal).
        chunk_steps: steps per chunk (`run_stage`).
    """

    def __init__(self, directory=None, fingerprint: Mapping | None = None, *, every_seconds: float | None = None,
                 chunk_steps: int = DEFAULT_CHUNK_STEPS, clock: Callable[[], float] = time.monotonic, log=None):
        if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
            raise ValueError(f"checkpoint chunk_steps must be a positive integer, got {chunk_steps!r}")
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"checkpoint every_seconds must be positive or null, got {every_seconds!r}")
        self.directory = None if directory is None else Path(directory)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True, default=str))
        self.every_seconds, self.chunk_steps, self.clock, self.log = every_seconds, int(chunk_steps), clock, log
        self.outputs: dict = {}                  # finished stage -> its output pytree
        self.position: tuple | None = None       # (stage, step, carry) to resume from
        self.seconds: dict[str, float] = {}      # seconds spent per stage, over all attempts
        self.draws: dict[str, list] = {}         # stage -> [(first draw, tree of (chain, draw, ...))]
        self._buffers: dict = {}                 # stage -> {leaf: (chain, all draws, ...)} on the host
        self.files: set[tuple[str, int]] = set()  # (stage, first draw) of the draws' files this state counts
        self.signal: int | None = None
        self.in_stage = False                    # a chunked stage runs: a signal is handled at its boundaries
        self.last_save = clock()
        self.saves = 0
        self.resumed_from: tuple[str, int] | None = None

    # ------------------------------------------------------------------ files

    @property
    def state_path(self) -> Path | None:
        return None if self.directory is None else self.directory / STATE_FILE

    def load(self) -> bool:
        """Read a saved state if there is one (True); refuse one with another fingerprint."""
        path = self.state_path
        if path is None or not path.exists():
            return False
        tree, meta = _load_tree(path)
        differences = fingerprint_differences(meta["fingerprint"], self.fingerprint)
        if differences:
            shown = "; ".join(f"{key}: saved {meta['fingerprint'].get(key)!r}, now {self.fingerprint.get(key)!r}"
                              for key in differences[:5])
            raise CheckpointMismatch(
                f"checkpoint {path} was saved by a job with other settings ({shown}); it cannot be resumed. "
                f"Delete {self.directory} to start this block afresh (its saved work is then lost)")
        self.outputs = dict(tree["outputs"])
        self.seconds = {k: float(v) for k, v in meta["seconds"].items()}
        self.draws = {stage: [self._read_draws(stage, first) for first in firsts]
                      for stage, firsts in meta["draw_files"].items()}
        self.files = {(stage, first) for stage, firsts in meta["draw_files"].items() for first in firsts}
        if meta["stage"] is not None:  # saved inside a stage (else between two)
            self.position = (meta["stage"], int(meta["step"]), tree["carry"])
            self.resumed_from = (meta["stage"], int(meta["step"]))
        return True

    def _read_draws(self, stage: str, first: int):
        tree, _ = _load_tree(self.directory / _draws_name(stage, first))
        return first, tree

    def save(self, stage: str | None, step: int, carry) -> None:
        """Write the state at (`stage`, `step`) with its `carry` (no-op without a directory)."""
        self.last_save = self.clock()
        if self.directory is None:
            return
        draw_files = {}
        for name, chunks in self.draws.items():  # draws first: the state never counts a draw not on disk
            for first, tree in chunks:  # a file left by a later, unfinished save is overwritten
                if (name, first) not in self.files:
                    _save_tree(self.directory / _draws_name(name, first), tree, {"stage": name, "first": first})
                    self.files.add((name, first))
            draw_files[name] = [first for first, _ in chunks]
        meta = {"fingerprint": self.fingerprint, "stage": stage, "step": int(step), "seconds": self.seconds,
                "draws": {name: sum(_n_draws(tree) for _, tree in chunks) for name, chunks in self.draws.items()},
                "draw_files": draw_files}
        _save_tree(self.state_path, {"outputs": _to_numpy(self.outputs), "carry": _to_numpy(carry)}, meta)
        self.saves += 1
        self._say(f"checkpoint saved: {stage or 'between stages'} step {step} ({self.state_path})")

    def remove(self) -> None:
        """Delete the checkpoint (the block file is written)."""
        if self.directory is not None and self.directory.exists():
            shutil.rmtree(self.directory)

    def _say(self, message: str) -> None:
        from interplay.workflow_logging import log_line

        log_line(self.log, message)

    # ------------------------------------------------------------------ stages

    def output(self, stage: str):
        """The output of `stage` if it finished in an earlier attempt, else None."""
        return self.outputs.get(stage)

    def finish(self, stage: str, output) -> None:
        """Record `stage` as finished with its `output` (saved with the next state)."""
        self.outputs[stage] = output
        if self.position is not None and self.position[0] == stage:
            self.position = None

    def resume(self, stage: str):
        """(step, carry) saved inside `stage`, or None."""
        if self.position is not None and self.position[0] == stage:
            return self.position[1], self.position[2]
        return None

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + float(seconds)

    def stage_seconds(self, *stages: str) -> float:
        """Wall seconds spent in `stages`, over every attempt (compilation included)."""
        return sum(self.seconds.get(stage, 0.0) for stage in stages)

    def add_draws(self, stage: str, first: int, tree, total: int) -> None:
        """Keep a chunk's draws {leaf: (chain, draw, ...)}, the stage's draws ``[first, first + draw)`` of
        `total`, in the stage's host buffer (one array per leaf, filled chunk by chunk: no copy at the end)."""
        buffer = self._buffer(stage, tree, total)
        view = jax.tree.map(lambda slots, leaf: _fill(slots, np.asarray(leaf), first), buffer, tree)
        self.draws.setdefault(stage, []).append((first, view))

    def stage_draws(self, stage: str, total: int):
        """The `total` draws of `stage`, {leaf: (chain, draw, ...)} numpy arrays."""
        chunks = self.draws.get(stage, [])
        if not chunks:
            raise ValueError(f"stage {stage!r} has no draws")
        return self._buffer(stage, chunks[0][1], total)

    def _buffer(self, stage: str, like, total: int):
        if stage not in self._buffers:
            self._buffers[stage] = jax.tree.map(
                lambda leaf: np.empty((leaf.shape[0], total, *leaf.shape[2:]), leaf.dtype), like)
            # chunks read from files move into the buffer (their entries become views of it)
            self.draws[stage] = [(first, jax.tree.map(partial(_fill, first=first),
                                                      self._buffers[stage], tree))
                                 for first, tree in self.draws.get(stage, [])]
        return self._buffers[stage]

    def due(self) -> bool:
        return self.signal is not None or (
            self.every_seconds is not None and self.clock() - self.last_save >= self.every_seconds)

    def at_boundary(self, stage: str, step: int, carry) -> None:
        """A chunk boundary: save if due; after a signal, save and raise `Interrupted`."""
        if self.directory is not None and self.due():
            self.save(stage, step, carry)
        self.stop_if_signalled(stage, step)

    def between_stages(self) -> None:
        """A boundary between two stages (the finished ones' outputs are the whole state)."""
        self.at_boundary(None, 0, None)

    def stop_if_signalled(self, stage: str, step: int) -> None:
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            at = f"{stage} step {step}" if stage is not None else "a boundary between stages"
            where = f"state saved at {at}; rerun the job to resume" if self.directory else \
                "no checkpoint directory, nothing saved"
            raise Interrupted(f"stopped by {name}: {where}")

    def wait(self, result, stage: str, step: int, carry) -> None:
        """Wait for a chunk's `result`; if a signal arrives meanwhile, save the boundary before the
        chunk (`step`, `carry`) and raise `Interrupted`."""
        leaves = [leaf for leaf in jax.tree.leaves(result) if hasattr(leaf, "is_ready")]
        interval = POLL_FIRST_SECONDS
        while not all(leaf.is_ready() for leaf in leaves):
            if self.signal is not None:
                if self.directory is not None:
                    self.save(stage, step, carry)
                self.stop_if_signalled(stage, step)
            time.sleep(interval)
            interval = min(2 * interval, POLL_SECONDS)

    @contextlib.contextmanager
    def signals(self):
        """Catch SIGTERM and SIGUSR1 while the job runs (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            self.signal = signum
            if not self.in_stage:  # no chunked stage runs (NUTS, the predictive, writing): stop now
                raise Interrupted(f"stopped by {signal.Signals(signum).name} outside a chunked stage; the last "
                                  "saved state (if any) stands: rerun the job to resume from it")
            self._say(f"got {signal.Signals(signum).name}: saving the state at the next moment it is consistent")

        previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _fill(slots: np.ndarray, leaf: np.ndarray, first: int) -> np.ndarray:
    """Copy `leaf` (chain, draw, ...) into `slots` at draw `first`; the filled view."""
    view = slots[:, first:first + leaf.shape[1]]
    view[...] = leaf
    return view


def _n_draws(tree) -> int:
    return int(jax.tree.leaves(tree)[0].shape[1])


def run_stage(checkpoint: Checkpoint, stage: str, program: Callable, carry, total: int, *,
              chunk: int | None = None, place: Callable | None = None, on_chunk: Callable | None = None,
              progress: Callable[[int], None] | None = None, finished: Callable | None = None):
    """Advance `carry` over steps ``[0, total)`` of `stage` in chunks; the carry after the last step.

    ``program(carry, first, count)`` runs steps ``[first, first + count)`` and returns the new carry, or
    ``(carry, out)`` when `on_chunk` is given (called as ``on_chunk(first, count, out)`` once the chunk is
    done, e.g. to keep its draws). A saved position inside `stage` is resumed (its carry put where the
    programs want it by `place`); `progress(step)` is called before the first chunk and after each one. `chunk` defaults to the
    checkpoint's ``chunk_steps``. `finished(carry)` (optional) ends the stage early when true after a chunk
    (the later chunks would not change the carry: e.g. every warm-start member has stopped).
    """
    chunk = int(chunk or checkpoint.chunk_steps)
    step = 0
    resumed = checkpoint.resume(stage)
    if resumed is not None:
        step, carry = resumed
        if place is not None:
            carry = place(carry)
    checkpoint.in_stage = True
    try:
        return _chunks(checkpoint, stage, program, carry, step, total, chunk, on_chunk, progress, finished)
    finally:
        checkpoint.in_stage = False


def _chunks(checkpoint, stage, program, carry, step, total, chunk, on_chunk, progress, finished):
    if progress is not None and step < total:
        progress(step)  # where the stage starts: the first chunk's report then has a rate
    while step < total:
        count = min(chunk, total - step)
        start = time.perf_counter()
        result = program(carry, step, count)
        checkpoint.wait(result, stage, step, carry)
        checkpoint.add_seconds(stage, time.perf_counter() - start)
        if on_chunk is not None:
            result, out = result
            on_chunk(step, count, out)
        carry, step = result, step + count
        if progress is not None:
            progress(step)
        if finished is not None and finished(carry):
            break
        if step < total:
            checkpoint.at_boundary(stage, step, carry)
    return carry


def run_draws_stage(checkpoint: Checkpoint, stage: str, program: Callable, initial: Callable, n_draws: int, *,
                    chunk_draws: int, n_chains: int, place: Callable | None = None,
                    progress: Callable[[int], None] | None = None):
    """A sampling stage: `run_stage` over draws ``[0, n_draws)``, `chunk_draws` a chunk, unless it finished in
    an earlier attempt; ``program(carry, first, count)`` returns ``(carry, {leaf: (chain, chunk_draws, ...)})``
    and each chunk's first `count` draws of the first `n_chains` chains go to the host buffer. `initial()`
    gives the first carry (called only when there is nothing to resume). Returns the final carry and the
    draws {leaf: (chain, draw, ...)} (numpy)."""
    finished = checkpoint.output(stage)
    if finished is None:
        carry = initial() if checkpoint.resume(stage) is None else None
        finished = run_stage(
            checkpoint, stage, program, carry, n_draws, chunk=chunk_draws, place=place, progress=progress,
            on_chunk=lambda first, count, draws: checkpoint.add_draws(
                stage, first, jax.tree.map(lambda leaf: np.asarray(leaf)[:n_chains, :count], draws), n_draws))
        checkpoint.finish(stage, finished)
    return finished, checkpoint.stage_draws(stage, n_draws)
