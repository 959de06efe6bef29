"""Fetch a dataset's original file from the UCI archive or a mirror into a download directory.

Without a mirror the canonical UCI zip is streamed (timeout, retries with exponential backoff) and its
member extracted. A mirror (local directory, ``file://`` URL or ``http(s)://`` base URL) replaces
``https://archive.ics.uci.edu/static/public``; the first of these that exists is taken:
the same relative zip path, ``raw/<member>``, ``<member>``, the table ``<dataset>.data``.
The download directory ends up holding exactly one file; everything is staged in a temporary
directory beside it and moved into place only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from interplay.data.atomic import make_temp_dir
from interplay.data.convert import generate_synthetic_regression_1x
from interplay.data.errors import DataError, MalformedFile, SourceMissing, SourceUnreachable
from interplay.data.numbers import format_rows
from interplay.data.sources import MIRROR_CONFIG_KEY, MIRROR_ENV, UCI_BASE_URL, DatasetSource, get_source

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_MISSING_STATUS = {404, 410}
MIRROR_HINT = (
    f"To use a mirror of the UCI files instead, set the config key `{MIRROR_CONFIG_KEY}` or the environment "
    f"variable {MIRROR_ENV} to a directory, file:// URL or http(s) URL that replaces {UCI_BASE_URL}"
)


def resolve_mirror(configured: str | None) -> str | None:
    """The mirror to use: the configured value, else $INTERPLAY_DATA_MIRROR, else None (the UCI archive)."""
    if configured is not None and str(configured).strip():
        return str(configured).strip()
    from_env = os.environ.get(MIRROR_ENV, "").strip()
    return from_env or None


def _is_http(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


def _local_path(location: str) -> Path:
    """A local mirror: a plain path or a file:// URL."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"mirror {location!r}: file:// URLs must name a local path (file:///path)")
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise DataError(
            f"mirror {location!r}: unsupported scheme {parsed.scheme!r}; use a path, file:// or http(s)://"
        )
    return Path(location).expanduser()


def _join_url(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative.lstrip('/')}"


def _http_fetch(
    dataset: str, url: str, dest: Path, *, timeout: float, retries: int, backoff: float, hint: str
) -> bool:
    """Stream `url` to `dest`; False when the server says the file does not exist (404/410).

    Network errors, timeouts, truncated bodies and 5xx/429 answers are retried `retries` times in all,
    waiting backoff * 2**k seconds between attempts.
    """
    import requests

    last_error = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            with requests.get(url, stream=True, timeout=timeout) as response:
                if response.status_code in _MISSING_STATUS:
                    return False
                if response.status_code >= 400:
                    last_error = f"HTTP {response.status_code} {response.reason}"
                    if response.status_code not in _RETRY_STATUS:
                        break
                else:
                    written = 0
                    with open(dest, "wb") as handle:
                        for chunk in response.iter_content(_CHUNK):
                            handle.write(chunk)
                            written += len(chunk)
                    expected = response.headers.get("Content-Length")
                    if expected is None or "Content-Encoding" in response.headers or int(expected) == written:
                        return True
                    last_error = f"truncated body: {written} of {expected} bytes"
        except requests.RequestException as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        log.warning("%s: attempt %d/%d for %s failed: %s", dataset, attempt, retries, url, last_error)
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    dest.unlink(missing_ok=True)
    raise SourceUnreachable(
        f"{dataset}: could not download {url} after {attempt} attempt(s) ({last_error}). {hint}"
    )


def _extract_member(dataset: str, archive: Path, member: str, dest_dir: Path, origin: str) -> Path:
    """Copy the zip member named `member` (at any depth in the archive) to dest_dir/member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if Path(n).name == member and not n.startswith("__MACOSX/")]
            if not names:
                raise MalformedFile(
                    f"{dataset}: archive {origin} has no member {member!r}; it holds {zf.namelist()}"
                )
            target = dest_dir / member
            with zf.open(names[0]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise MalformedFile(
            f"{dataset}: {origin} is not a valid zip archive (corrupted or truncated download): {exc}"
        ) from exc
    return target


def _candidates(source: DatasetSource) -> list[tuple[str, str]]:
    """(kind, relative path) in the order a mirror is searched."""
    found = []
    if source.relative_url:
        found.append(("zip", source.relative_url))
    if source.member:
        found += [("file", f"raw/{source.member}"), ("file", source.member)]
    found.append(("table", source.table_name))
    return found


def _fetch_from_mirror(
    source: DatasetSource, mirror: str, staging: Path, *, timeout: float, retries: int, backoff: float
) -> Path:
    hint = (
        f"Check the mirror {mirror!r} (config key `{MIRROR_CONFIG_KEY}` / environment variable {MIRROR_ENV})"
    )
    http = _is_http(mirror)
    root = None if http else _local_path(mirror)
    if root is not None and not root.is_dir():
        raise DataError(f"{source.name}: mirror directory {root} does not exist. {hint}")
    tried = []
    for kind, relative in _candidates(source):
        name = Path(relative).name
        fetched = staging / (".archive.zip" if kind == "zip" else name)
        if http:
            location = _join_url(mirror, relative)
            ok = _http_fetch(
                source.name, location, fetched, timeout=timeout, retries=retries, backoff=backoff, hint=hint
            )
        else:
            location = str(root / relative)
            ok = (root / relative).is_file()
            if ok:
                shutil.copyfile(root / relative, fetched)
        tried.append(location)
        if not ok:
            log.info("%s: not in mirror: %s", source.name, location)
            continue
        log.info("%s: taking %s", source.name, location)
        if kind == "zip":
            member = _extract_member(source.name, fetched, source.member, staging, location)
            fetched.unlink()
            return member
        return fetched
    raise SourceMissing(f"{source.name}: the mirror holds none of {tried}. {hint}")


def _fetch_canonical(
    source: DatasetSource, staging: Path, *, timeout: float, retries: int, backoff: float
) -> Path:
    if source.url is None:
        # Generated data: the generator reproduces the authors' table exactly (its hash is checked later).
        target = staging / source.table_name
        target.write_text(
            format_rows(generate_synthetic_regression_1x(), source.number_format), encoding="ascii"
        )
        log.info("%s: no archive to download; generated %s", source.name, source.table_name)
        return target
    archive = staging / ".archive.zip"
    found = _http_fetch(
        source.name, source.url, archive, timeout=timeout, retries=retries, backoff=backoff, hint=MIRROR_HINT
    )
    if not found:
        raise SourceMissing(f"{source.name}: {source.url} does not exist (HTTP 404). {MIRROR_HINT}")
    return _extract_member(source.name, archive, source.member, staging, source.url)


def _install(staged: Path, out_dir: Path) -> Path:
    """Make `staged` the only file of `out_dir` (rename within one filesystem)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in out_dir.iterdir():
        if entry.name != staged.name:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    final = out_dir / staged.name
    os.replace(staged, final)
    return final


def download(
    dataset: str,
    out_dir: str | Path,
    mirror: str | None = None,
    *,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Fetch `dataset` into `out_dir` (which then holds exactly one file) and return that file's path.

    `retries` is the number of attempts per URL (>= 1), `timeout` the seconds per attempt, `backoff`
    the first wait between attempts (doubling after each). `mirror`: see the module docstring.
    """
    source = get_source(dataset)
    if not (isinstance(retries, int) and retries >= 1):
        raise ValueError(f"retries must be an integer >= 1 (attempts per URL), got {retries!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if not backoff >= 0:
        raise ValueError(f"backoff must be >= 0 seconds, got {backoff!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out_dir)  # stale staging directories of killed downloads are removed first
    try:
        if mirror:
            staged = _fetch_from_mirror(
                source, mirror, staging, timeout=timeout, retries=retries, backoff=backoff
            )
        else:
            staged = _fetch_canonical(source, staging, timeout=timeout, retries=retries, backoff=backoff)
        final = _install(staged, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: downloaded %s", dataset, final)
    return final
