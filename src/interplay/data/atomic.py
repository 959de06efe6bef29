"""Atomic writes: a temporary name beside the target, renamed into place when complete.

Every writer of the pipeline (tables, prepared data, chain blocks, merged posteriors, download staging
directories) names its temporary file or directory ``.<target name>.tmp-<pid>@<host>.<random>``, created
with the mode any other output gets (0666 / 0777 less the umask; not mkstemp's 0600). A writer killed
before its rename leaves that name behind; the next write of the same target removes it when it is
*stale*: its writer's pid is not alive on this host, or it is older than `STALE_AFTER_S`
(writers on other hosts of a shared file system cannot be asked). Older names without pid and host
(``.<name>.tmp-<pid>``, ``.<name>.<random>.part``) are removed only by age. `is_temp_name` tells
listings of results/ to leave these files out.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# A merge of a very large run can write for hours; no writer runs for days.
STALE_AFTER_S = 2 * 86_400

_CURRENT = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)@(?P<host>[^@/]+)\.(?P<token>[0-9a-z_]+)$")
_LEGACY_PID = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)$")
_LEGACY_PART = re.compile(r"^\.(?P<target>.+)\.(?P<token>[A-Za-z0-9_]+)\.part$")


def _host() -> str:
    return socket.gethostname().replace("/", "_").replace("@", "_") or "localhost"


def _parse(name: str) -> tuple[str, int | None, str | None] | None:
    """(target name, pid, host) of a temporary name; pid/host None where the name does not record them."""
    match = _CURRENT.match(name)
    if match:
        return match["target"], int(match["pid"]), match["host"]
    match = _LEGACY_PID.match(name) or _LEGACY_PART.match(name)
    if match:
        return match["target"], None, None
    return None


def is_temp_name(name: str) -> bool:
    """Whether a file name is a writer's temporary name (for listings of results/ to skip)."""
    return _parse(name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def clean_stale_temps(target: str | Path, *, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale temporary files (and directories) of `target`; return what was removed."""
    target = Path(target)
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return []
    host, now, removed = _host(), time.time(), []
    for entry in entries:
        parsed = _parse(entry.name)
        if parsed is None or parsed[0] != target.name:
            continue
        _, pid, writer_host = parsed
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = pid is not None and writer_host == host and pid != os.getpid() and not _pid_alive(pid)
        if not (dead or age > max_age_s):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # e.g. another user's file: not ours to clean, and not fatal
            log.warning("could not remove stale temporary file %s: %s", entry, exc)
            continue
        log.info("removed the stale temporary file %s (%s)", entry,
                 f"writer pid {pid} is gone" if dead else f"{age / 3600:.0f} h old")
        removed.append(entry)
    return removed


def temp_path(target: str | Path) -> Path:
    """A fresh temporary name beside `target` (not created); stale temporaries of `target` are removed."""
    target = Path(target)
    clean_stale_temps(target)
    while True:
        candidate = target.with_name(f".{target.name}.tmp-{os.getpid()}@{_host()}.{secrets.token_hex(4)}")
        if not os.path.lexists(candidate):
            return candidate


def make_temp_dir(target: str | Path) -> Path:
    """A new temporary directory beside `target` (mode 0777 less the umask)."""
    while True:
        candidate = temp_path(target)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` for the caller to write; rename it onto `target` when the
    block completes, remove it when the block raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def write_bytes_atomic(data: bytes, target: str | Path) -> Path:
    """Write `data` to `target` atomically (fsync, then rename), with the umask's mode."""
    target = Path(target)
    with atomic_path(target) as temp:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return target
