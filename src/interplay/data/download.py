"""Fetch a dataset's original file from the UCI archive or a mirror into a download directory, with pooch.

Without a mirror the canonical UCI zip is fetched and its member extracted. A mirror (local directory,
``file://`` URL or ``http(s)://`` base URL) is a pooch base URL that replaces
``https://archive.ics.uci.edu/static/public``; the first of these that exists below it is taken:
the same relative zip path, ``raw/<member>``, ``<member>``, the table ``<dataset>.data``.

pooch does the fetching: per URL ``retries`` attempts in all (network errors, timeouts, truncated
bodies and 5xx/429 answers are retried; pooch waits 1, 2, ... s, at most 10 s, between attempts), a
progress report in the log, and the zip member extracted by its ``Unzip`` processor. A 404/410 (or,
in a local mirror, a missing file) is not retried: the next candidate is tried. The download directory
ends up holding exactly one file; everything is staged in a temporary directory beside it and moved
into place only when complete, so a failure leaves nothing behind. The file's content is checked
after conversion, against the table's pinned sha256 (`interplay.data.convert.make_table`).
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from interplay.data.atomic import make_temp_dir
from interplay.data.convert import generate_synthetic_regression_1x
from interplay.data.errors import DataError, MalformedFile, SourceMissing, SourceUnreachable
from interplay.data.numbers import format_rows
from interplay.data.sources import MIRROR_CONFIG_KEY, MIRROR_ENV, UCI_BASE_URL, DatasetSource, get_source

log = logging.getLogger(__name__)

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


class _NotThere(Exception):
    """The source answered that it has no such file (HTTP 404/410, a missing local file).

    Neither a ValueError nor a RequestException, so pooch does not retry it."""


class _Refused(Exception):
    """An HTTP error that no retry will mend (4xx other than 408/425/429): not retried by pooch."""


class _LogProgress:
    """A pooch progress bar that logs a line at each quarter of the download (for job logs, not terminals)."""

    def __init__(self, label: str):
        self.label = label
        self.total = 0  # set by pooch from Content-Length (0: unknown)
        self.n = 0
        self.quarter = 1

    def update(self, n: int) -> None:
        self.n += n
        while self.total and self.quarter < 4 and self.n >= self.quarter * self.total / 4:
            log.info("%s: %d%% of %d bytes", self.label, 25 * self.quarter, self.total)
            self.quarter += 1

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        log.info("%s: done (%d bytes)", self.label, self.total or self.n)


class _Fetcher:
    """A pooch downloader for one URL: HTTP through ``pooch.HTTPDownloader`` (timeout, progress),
    local files copied; counts the attempts pooch makes and keeps the last failure for the message."""

    def __init__(self, dataset: str, retries: int, timeout: float):
        self.dataset, self.retries, self.timeout = dataset, retries, timeout
        self.attempts = 0
        self.last_error = "no attempt made"

    def __call__(self, url: str, output_file: str, pooch_instance) -> None:
        import pooch
        import requests

        if urlparse(url).scheme == "file":
            source = Path(url2pathname(unquote(urlparse(url).path)))
            if not source.is_file():
                raise _NotThere(url)
            shutil.copyfile(source, output_file)
            return
        self.attempts += 1
        http = pooch.HTTPDownloader(timeout=self.timeout, progressbar=_LogProgress(f"{self.dataset}: {url}"))
        try:
            http(url, output_file, pooch_instance)
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in _MISSING_STATUS:
                raise _NotThere(url) from None
            self.last_error = f"HTTP {status} {error.response.reason if error.response is not None else ''}".strip()
            self._failed(url)
            if status not in _RETRY_STATUS:
                raise _Refused(self.last_error) from None
            raise
        except requests.RequestException as error:
            self.last_error = f"{type(error).__name__}: {error}"
            self._failed(url)
            raise

    def _failed(self, url: str) -> None:
        log.warning("%s: attempt %d/%d for %s failed: %s", self.dataset, self.attempts, self.retries, url,
                    self.last_error)


class _ZipMember:
    """A pooch processor: the member of the zip named ``member`` (at any depth of the archive),
    extracted with ``pooch.Unzip``; returns its path."""

    def __init__(self, dataset: str, member: str, origin: str):
        self.dataset, self.member, self.origin = dataset, member, origin

    def __call__(self, fname: str, action: str, pooch_instance) -> str:
        import pooch

        try:
            with zipfile.ZipFile(fname) as zf:
                names = zf.namelist()
            found = [n for n in names if PurePosixPath(n).name == self.member and not n.startswith("__MACOSX/")]
            if not found:
                raise MalformedFile(
                    f"{self.dataset}: archive {self.origin} has no member {self.member!r}; it holds {names}"
                )
            unzip = pooch.Unzip(members=[found[0]], extract_dir=".unzipped")
            extracted = unzip(fname, action, pooch_instance)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise MalformedFile(
                f"{self.dataset}: {self.origin} is not a valid zip archive (corrupted or truncated download): {exc}"
            ) from exc
        target = Path(unzip.extract_dir, *PurePosixPath(found[0]).parts)
        if str(target) not in extracted:
            raise MalformedFile(f"{self.dataset}: {self.member!r} could not be extracted from {self.origin}")
        return str(target)


def _fetch(dataset: str, base_url: str, relative: str, staging: Path, *, retries: int, timeout: float,
           hint: str, url: str | None = None, processor=None) -> Path | None:
    """``relative`` below ``base_url`` (or at ``url``) fetched by pooch into ``staging``; None when the
    source has no such file. Raises SourceUnreachable after ``retries`` failed attempts."""
    import pooch
    import requests

    store = pooch.create(path=staging, base_url=base_url.rstrip("/") + "/", registry={relative: None},
                         urls={relative: url} if url else None, retry_if_failed=retries - 1)
    fetcher = _Fetcher(dataset, retries, timeout)
    location = url or store.get_url(relative)
    try:
        return Path(store.fetch(relative, processor=processor, downloader=fetcher))
    except _NotThere:
        return None
    except (_Refused, requests.RequestException):
        raise SourceUnreachable(
            f"{dataset}: could not download {location} after {fetcher.attempts} attempt(s) "
            f"({fetcher.last_error}). {hint}"
        ) from None


def _candidates(source: DatasetSource) -> list[tuple[str, str]]:
    """(kind, relative path) in the order a mirror is searched."""
    found = []
    if source.relative_url:
        found.append(("zip", source.relative_url))
    if source.member:
        found += [("file", f"raw/{source.member}"), ("file", source.member)]
    found.append(("table", source.table_name))
    return found


def _fetch_from_mirror(source: DatasetSource, mirror: str, staging: Path, *, timeout: float, retries: int) -> Path:
    hint = (
        f"Check the mirror {mirror!r} (config key `{MIRROR_CONFIG_KEY}` / environment variable {MIRROR_ENV})"
    )
    if _is_http(mirror):
        base_url, root = mirror, None
    else:
        root = _local_path(mirror)
        if not root.is_dir():
            raise DataError(f"{source.name}: mirror directory {root} does not exist. {hint}")
        base_url = root.resolve().as_uri()
    tried = []
    for kind, relative in _candidates(source):
        location = str(root / relative) if root is not None else f"{base_url.rstrip('/')}/{relative.lstrip('/')}"
        tried.append(location)
        processor = _ZipMember(source.name, source.member, location) if kind == "zip" else None
        fetched = _fetch(source.name, base_url, relative, staging, retries=retries, timeout=timeout, hint=hint,
                         processor=processor)
        if fetched is None:
            log.info("%s: not in mirror: %s", source.name, location)
            continue
        log.info("%s: took %s", source.name, location)
        return fetched
    raise SourceMissing(f"{source.name}: the mirror holds none of {tried}. {hint}")


def _fetch_canonical(source: DatasetSource, staging: Path, *, timeout: float, retries: int) -> Path:
    if source.url is None:
        # Generated data: the generator reproduces the authors' table exactly (its hash is checked later).
        target = staging / source.table_name
        target.write_text(
            format_rows(generate_synthetic_regression_1x(), source.number_format), encoding="ascii"
        )
        log.info("%s: no archive to download; generated %s", source.name, source.table_name)
        return target
    fetched = _fetch(source.name, UCI_BASE_URL, PurePosixPath(urlparse(source.url).path).name, staging,
                     url=source.url, retries=retries, timeout=timeout, hint=MIRROR_HINT,
                     processor=_ZipMember(source.name, source.member, source.url))
    if fetched is None:
        raise SourceMissing(f"{source.name}: {source.url} does not exist (HTTP 404). {MIRROR_HINT}")
    return fetched


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
) -> Path:
    """Fetch `dataset` into `out_dir` (which then holds exactly one file) and return that file's path.

    `retries` is the number of attempts per URL (>= 1), `timeout` the seconds per attempt.
    `mirror`: see the module docstring. Image data sets (`interplay.data.images`) keep all their files
    (`download_images`).
    """
    from interplay.data.images import IMAGE_DATASETS, download_images

    if dataset in IMAGE_DATASETS:
        if not (isinstance(retries, int) and retries >= 1):
            raise ValueError(f"retries must be an integer >= 1 (attempts per URL), got {retries!r}")
        return Path(download_images(dataset, out_dir, mirror, timeout=timeout, retries=retries)[0]).parent
    source = get_source(dataset)
    if not (isinstance(retries, int) and retries >= 1):
        raise ValueError(f"retries must be an integer >= 1 (attempts per URL), got {retries!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out_dir)  # stale staging directories of killed downloads are removed first
    try:
        if mirror:
            staged = _fetch_from_mirror(source, mirror, staging, timeout=timeout, retries=retries)
        else:
            staged = _fetch_canonical(source, staging, timeout=timeout, retries=retries)
        final = _install(staged, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: downloaded %s", dataset, final)
    return final
