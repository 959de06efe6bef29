"""Where results came from: the code version (git) and the software and hardware environment.

Recorded in every bundle (``bundle/bundle.json``, ``bundle/environment.json``, the RO-Crate) and in
every posterior (``interplay.sampling``).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

NO_GIT = "nogit"
RECORDED_ENV_VARS = ("JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES")


def run_git(root: Path | str, *args: str) -> str | None:
    """``git ARGS`` in ``root``: its stdout, or None when git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(root: Path | str = ".", with_diff: bool = True) -> dict:
    """Commit, short hash, dirty flag, ``git diff HEAD`` and status of the work tree at ``root``
    (``with_diff=False``: commit and short hash only, one cheap git call).

    Outside a git repository (or before the first commit) the short hash is ``nogit``.
    """
    root = Path(root)
    commit = (run_git(root, "rev-parse", "--verify", "--quiet", "HEAD") or "").strip() or None
    short = (run_git(root, "rev-parse", "--short=8", "HEAD") or "").strip() if commit else ""
    if not with_diff:
        return {"commit": commit, "short": short or NO_GIT}
    inside = (run_git(root, "rev-parse", "--is-inside-work-tree") or "").strip() == "true"
    status = run_git(root, "status", "--porcelain", "--untracked-files=all") if inside else None
    dirty = bool(status and status.strip())
    diff = run_git(root, "diff", "HEAD", "--binary") if commit and dirty else None
    return {
        "commit": commit,
        "short": short or NO_GIT,
        "dirty": dirty,
        "status": status if dirty else None,
        "diff": diff or None,
    }


def host_info() -> dict:
    """The machine's capacity (cores and memory), against which the bundled benchmark files
    (runtimes, max_rss) can be read: logical and physical cores, total memory in bytes."""
    import psutil

    return {
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_bytes": psutil.virtual_memory().total,
    }


def environment_info() -> dict:
    """Python version, exact versions of every installed distribution, the host's cores and memory,
    JAX backend and devices."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(name.lower().replace("_", "-"), dist.version)
    info = {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": host_info(),
        "packages": dict(sorted(packages.items())),
        "env": {k: os.environ[k] for k in RECORDED_ENV_VARS if k in os.environ},
    }
    try:
        import jax

        devices = jax.devices()
        info["jax"] = {
            "version": jax.__version__,
            "backend": jax.default_backend(),
            "device_kinds": sorted({d.device_kind for d in devices}),
            "device_count": len(devices),
        }
    except (ImportError, RuntimeError) as error:  # a broken accelerator must not stop archiving
        info["jax"] = {"error": f"{type(error).__name__}: {error}"}
    return info
