"""JAX's persistent compilation cache for the pipeline's JAX jobs (the `sample` rule), and their compile times.

Every sampling job compiles the same programs for the same shapes (warm start, sampler phases, predictive);
with the cache on, the second and later jobs load them from disk instead. The cache is JAX's own
(``jax_compilation_cache_dir``), in a folder per kind of host machine under the config's
``compilation_cache.dir`` (default ``results/.jax-cache``), so Slurm nodes of one kind share it and nodes of
another kind never load an executable compiled for a different CPU. What it can and cannot do:

- A cached executable is the one XLA compiled from the same program (JAX's key hashes the lowered program,
  compile options, XLA flags, backend version and devices), so it computes the same bits as a fresh
  compilation (tests/test_compilation_cache.py: a block sampled with a cold and with a warm cache).
- Concurrent jobs: JAX (0.10) writes an entry in place (``Path.write_bytes`` after an existence check) and
  takes no lock unless ``jax_compilation_cache_max_size`` is set, so a job may read an entry another job is
  still writing, or one a killed job left short. Entries are zlib-compressed (with its checksum), so such an
  entry fails to decompress; JAX then logs "Error reading persistent compilation cache entry" and compiles
  afresh: it costs time, never changes results. Deleting the folder is always safe.
- JAX never writes programs that contain host callbacks (``jax.debug.callback``, which in-program progress
  reports use), hence the ``sample_progress: phases`` default.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import jax

DEFAULT_DIR = "results/.jax-cache"
# jax.monitoring events: XLA compilation (or loading from the persistent cache) of one program, its
# lowering to MLIR, and the tracing of a Python function to a jaxpr (neither of which the cache saves).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
TRACING_EVENT = "/jax/core/compile/jaxpr_trace_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def host_tag(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """``<machine>-<hash of the CPU's feature flags>``: the kind of host an executable was compiled for.

    XLA compiles CPU code for the host's instruction set, and JAX's cache key does not name it; ``cpuinfo``
    is the text of /proc/cpuinfo (read when None; without it, ``platform.processor()`` stands in).
    """
    machine = machine or platform.machine() or "unknown"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = next((line.split(":", 1)[1] for line in cpuinfo.splitlines()
                  if line.split(":", 1)[0].strip() in ("flags", "Features") and ":" in line), None)
    features = " ".join(sorted(flags.split())) if flags is not None else platform.processor()
    return f"{machine}-{hashlib.sha256(features.encode()).hexdigest()[:12]}"


def cache_folder(settings: Mapping, root: Path | str = ".", tag: str | None = None) -> Path | None:
    """The folder this host's jobs use for the config's ``compilation_cache`` settings (None: disabled).

    A relative ``dir`` is taken from ``root`` (the project root, where Snakemake runs every job).
    """
    unknown = set(settings) - {"enabled", "dir"}
    if unknown:
        raise ValueError(f"compilation_cache: unknown key(s) {sorted(unknown)}; allowed: dir, enabled")
    if not settings.get("enabled", True):
        return None
    base = settings.get("dir", DEFAULT_DIR)
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"compilation_cache.dir must be a non-empty path, got {base!r}")
    return (Path(root) / base).resolve() / (tag or host_tag())


def enable_compilation_cache(settings: Mapping, root: Path | str = ".") -> Path | None:
    """Turn JAX's persistent compilation cache on (in `cache_folder`) or off, as ``settings`` say.

    Call it before the job's first compilation: programs compiled earlier are neither looked up nor
    written. Every program is cached, however fast it compiled and however small (the defaults skip those
    under 1 s, i.e. nearly all of a small CPU job's programs). Returns the folder, or None when disabled.
    """
    folder = cache_folder(settings, root)
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size threshold, none overridden
    return folder


class CompileTimes:
    """Compile seconds of a job, from jax.monitoring's duration events, while used as a context manager.

    ``compile_seconds``: XLA compilation, or loading from the persistent cache, of ``programs`` programs
    (``cache_hits`` of them loaded); ``lowering_seconds`` and ``tracing_seconds`` are spent whatever the cache.
    """

    def __init__(self):
        self.compile_seconds = self.lowering_seconds = self.tracing_seconds = 0.0
        self.programs = self.cache_hits = 0

    def _on_duration(self, event: str, seconds: float, **_) -> None:
        if event == COMPILE_EVENT:
            self.compile_seconds += seconds
            self.programs += 1
        elif event == LOWERING_EVENT:
            self.lowering_seconds += seconds
        elif event == TRACING_EVENT:
            self.tracing_seconds += seconds

    def _on_event(self, event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def __enter__(self) -> Self:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def summary(self) -> str:
        """One log line; benchmarks/bench_compile_cache.py reads it back with `parse_summary`."""
        return (f"compile: {self.compile_seconds:.2f} s for {self.programs} programs "
                f"({self.cache_hits} from the persistent cache), lowering {self.lowering_seconds:.2f} s, "
                f"tracing {self.tracing_seconds:.2f} s")


def parse_summary(line: str) -> dict[str, float] | None:
    """The figures of a `CompileTimes.summary` line found in ``line`` (None if it holds none)."""
    import re

    found = re.search(r"compile: ([\d.]+) s for (\d+) programs \((\d+) from the persistent cache\), "
                      r"lowering ([\d.]+) s, tracing ([\d.]+) s", line)
    if found is None:
        return None
    keys = ("compile_seconds", "programs", "cache_hits", "lowering_seconds", "tracing_seconds")
    return {key: float(value) for key, value in zip(keys, found.groups())}
