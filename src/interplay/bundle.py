"""Archived, verifiable result bundles: one deterministic ``.tar.gz`` per study.

A bundle holds everything needed to check a study's results byte for byte and to rebuild its
figures and analysis tables without sampling: config (as given and with every run resolved),
code version (git commit and diff), environment, merged posteriors (optionally without draws),
analysis tables, figures, report, logs, benchmarks, prepared data and the source tree.

Layout inside the archive (everything under one top directory named like the archive)::

    <study>-<YYYYMMDD>-<short hash>/
        MANIFEST.sha256            "sha256  path" per file (sha256sum format), each line preceded
                                   by a "# size <bytes>" comment; lists every file but the two
                                   manifest files
        MANIFEST.sha256.sha256     sha256 of MANIFEST.sha256 (sha256sum format)
        bundle/bundle.json         study, date, git, options
        bundle/environment.json    Python, exact package versions, JAX backend and devices
        bundle/config.yaml         the merged config as Snakemake saw it
        bundle/resolved_config.json  every run's resolved dict
        bundle/git.diff, bundle/git-status.txt   only when the work tree was dirty
        Snakefile, workflow/, src/, config/, envs/, pyproject.toml, requirements.lock, ...
        results/...                posteriors, analysis, figures, report, logs, benchmarks, data

The tar is deterministic: members sorted by name (the two manifest files last), mtime fixed to
the bundle date, uid/gid 0, no user names, gzip header without name or time.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from interplay.data.atomic import is_temp_name

MANIFEST_NAME = "MANIFEST.sha256"
MANIFEST_HASH_NAME = "MANIFEST.sha256.sha256"
META_DIR = "bundle"
FORMAT_VERSION = 1
NO_GIT = "nogit"
# Verify and restore read every member in blocks of this size and hold no member whole; the
# manifest (about 100 bytes a file) is the one member kept in memory, and only up to this size.
READ_BLOCK = 1 << 20
MAX_MANIFEST_BYTES = 8 << 20
# tarfile reads a PAX or GNU long-name header whole, at the size the archive declares.
MAX_HEADER_BYTES = 1 << 20
# Deflate is the cost of `create` (~30 MiB/s a core); posteriors are compressed NetCDF already, and
# levels 1 and 6 run about as fast on them, so the default level keeps text and logs small.
GZIP_LEVEL = 6

# Source paths (relative to the project root) needed to rebuild; missing ones are skipped.
SOURCE_PATHS = (
    "Snakefile",
    "config.yaml",
    "workflow",
    "src",
    "config",
    "envs",
    "pyproject.toml",
    "requirements.lock",
    "README.md",
    "LICENSE",
    "docs",
)
# Result paths (relative to the results directory, the rules' output, log and benchmark paths):
# a bundle holds exactly the study's runs and their outputs, never a whole folder of results that
# other studies share. Per run ({run}: each of the study's resolved runs) ...
RUN_RESULT_PATTERNS = (
    "analysis/{run}/**/*",
    "logs/sample/{run}/**/*",
    "logs/merge/{run}.log",
    "logs/analysis/{run}/**/*",
    "benchmarks/sample/{run}-[0-9][0-9][0-9][0-9].tsv",
    "benchmarks/merge/{run}.tsv",
)  # ... and results/posteriors/{run}.nc, which every run must have
# per sweep of the study's config
SWEEP_RESULT_PATTERNS = ("analysis/sweeps/{sweep}/**/*", "logs/analysis/sweeps/{sweep}/**/*")
# per dataset the study's runs use (all datasets when a run names none)
DATASET_RESULT_PATTERNS = (
    "data/tables/{dataset}.data",
    "data/prepared/{dataset}/**/*",
    "logs/download/{dataset}.log",
    "logs/table/{dataset}.log",
    "logs/prepare/{dataset}/**/*",
)
# per figure of the config's `figures:` section (all figures when the config has none)
FIGURE_RESULT_PATTERNS = ("figures/{figure}.*", "logs/figures/{figure}.log")
# once per study: the assembled figures, study-level tables (verdicts, run settings), the report
STUDY_RESULT_PATTERNS = ("figures/all.pdf", "logs/figures/all.log", "logs/figures/verdicts.log",
                         "logs/figures/run_settings.log", "analysis/*")
REPORT_NAMES = ("report.html", "report.zip", "report")
# Never bundled: earlier bundles, raw chain blocks (the merged posteriors hold them), the
# bundle rule's own log (it is being written while the bundle is made), build litter.
EXCLUDED_RESULT_DIRS = ("bundles", "samples", "data/download", "logs/bundle")
EXCLUDED_PARTS = ("__pycache__", ".snakemake", ".pytest_cache", ".ruff_cache", ".git")
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")

# Restored files get mtimes in pipeline order, this many seconds apart (coarse file systems
# store 2 s), so that every output is strictly newer than its inputs and than the scripts.
MTIME_STEP = 10
MTIME_LAYERS = (  # (path prefix, layer); the longest matching prefix wins, default layer 0
    ("results/data/tables/", 1),
    ("results/data/prepared/", 2),
    ("results/posteriors/", 3),
    ("results/analysis/", 4),
    ("results/figures/", 5),
    ("results/figures/all.", 6),
    ("results/report", 7),
)


class BundleError(Exception):
    """A bundle cannot be made, read or restored; the message names the problem."""


@dataclass(frozen=True)
class CreatedBundle:
    path: Path
    manifest_sha256: str
    archive_sha256: str
    n_files: int
    total_bytes: int
    summary_path: Path


@dataclass
class VerifyReport:
    """Outcome of checking an archive against its manifest (paths relative to the bundle top)."""

    archive: Path
    top: str | None = None
    manifest_sha256: str | None = None
    n_files: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered or self.problems)

    def lines(self) -> list[str]:
        """One line per finding, for printing."""
        out = [f"PROBLEM  {p}" for p in self.problems]
        out += [f"MISSING  {p}" for p in self.missing]
        out += [f"EXTRA    {p}" for p in self.extra]
        out += [f"ALTERED  {p}" for p in self.altered]
        return out


# ---------------------------------------------------------------------------------------------
# small helpers


def bundle_name(study: str, date: str, short_hash: str) -> str:
    """``<study>-<YYYYMMDD>-<short hash>``; the study must be a plain name usable in a path."""
    if not study or any(c in study for c in "/\\\n\t {}") or study.startswith("."):
        raise BundleError(f"study name {study!r} cannot be used in a file name")
    _check_date(date)
    return f"{study}-{date}-{short_hash}"


def today() -> str:
    """Today's date as YYYYMMDD; ``SOURCE_DATE_EPOCH`` (reproducible-builds convention) overrides."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.UTC).strftime("%Y%m%d")
    return _dt.date.today().strftime("%Y%m%d")


def _check_date(date: str) -> int:
    """Seconds since the epoch of ``date`` (YYYYMMDD) at 00:00 UTC, the fixed tar mtime."""
    try:
        day = _dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=_dt.UTC)
    except (TypeError, ValueError):
        raise BundleError(f"date {date!r} is not of the form YYYYMMDD") from None
    return int(day.timestamp())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
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
    commit = (_git(root, "rev-parse", "--verify", "--quiet", "HEAD") or "").strip() or None
    short = (_git(root, "rev-parse", "--short=8", "HEAD") or "").strip() if commit else ""
    if not with_diff:
        return {"commit": commit, "short": short or NO_GIT}
    inside = (_git(root, "rev-parse", "--is-inside-work-tree") or "").strip() == "true"
    status = _git(root, "status", "--porcelain", "--untracked-files=all") if inside else None
    dirty = bool(status and status.strip())
    diff = _git(root, "diff", "HEAD", "--binary") if commit and dirty else None
    return {
        "commit": commit,
        "short": short or NO_GIT,
        "dirty": dirty,
        "status": status if dirty else None,
        "diff": diff or None,
    }


def environment_info() -> dict:
    """Python version, exact versions of every installed distribution, JAX backend and devices."""
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
        "packages": dict(sorted(packages.items())),
        "env": {k: os.environ[k] for k in ("JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
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


def merge_configs(configs: list[dict]) -> dict:
    """Deep-merge config dicts, later ones winning (what Snakemake does with several configfiles)."""
    from interplay.config import deep_merge

    merged: dict = {}
    for config in configs:
        merged = deep_merge(merged, config or {})
    return merged


def load_configfiles(paths: list[Path | str]) -> dict:
    import yaml

    configs = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"config file {path} does not exist")
        with open(path) as handle:
            loaded = yaml.safe_load(handle)
        if loaded is not None and not isinstance(loaded, dict):
            raise BundleError(f"config file {path} does not hold a mapping")
        configs.append(loaded or {})
    return merge_configs(configs)


def study_name(config: dict) -> str:
    """The study's name from a config: ``bundle.study``, ``study`` (a string) or ``study.name``."""
    bundle_section = config.get("bundle") or {}
    candidates = [bundle_section.get("study") if isinstance(bundle_section, dict) else None]
    study = config.get("study")
    candidates.append(study.get("name") if isinstance(study, dict) else study)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    raise BundleError(
        "the config names no study: set `study: NAME` (or `bundle: {study: NAME}`), "
        "e.g. snakemake bundle --config study=NAME"
    )


def resolve_runs(config: dict) -> dict[str, dict]:
    """Every run's resolved dict (``interplay.config.resolve_runs`` on a copy of ``config``)."""
    from interplay import config as study_config

    try:
        return study_config.resolve_runs(copy.deepcopy(config))
    except study_config.ConfigError as error:
        raise BundleError(f"cannot resolve the study's runs: {error}") from None


# ---------------------------------------------------------------------------------------------
# collecting files


@dataclass(frozen=True)
class _Entry:
    arcname: str  # relative to the bundle top
    source: Path | bytes
    executable: bool = False


def _excluded(rel: Path) -> bool:
    """Caches, build folders and the temporary files of writers (`interplay.data.atomic`) stay out."""
    return (any(part in EXCLUDED_PARTS for part in rel.parts) or rel.name.endswith(EXCLUDED_SUFFIXES)
            or any(part.endswith(".egg-info") for part in rel.parts) or is_temp_name(rel.name))


def _walk_files(base: Path) -> list[Path]:
    """Regular files under ``base`` (following symlinks, e.g. results on scratch), sorted."""
    if base.is_file():
        return [base]
    found = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_PARTS and not d.endswith(".egg-info"))
        found.extend(Path(dirpath) / name for name in filenames)
    return sorted(path for path in found if path.is_file())


def _source_files(root: Path) -> list[str]:
    """Source files under SOURCE_PATHS: what git tracks or would track (.gitignore respected);
    without git, every file except build litter."""
    present = [p for p in SOURCE_PATHS if (root / p).exists()]
    if not present:
        return []
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *present)
    if listed is not None and (_git(root, "rev-parse", "--show-toplevel") or "").strip() == str(root.resolve()):
        names = {name for name in listed.split("\0") if name}
    else:
        names = {path.relative_to(root).as_posix() for p in present for path in _walk_files(root / p)}
    return sorted(name for name in names if (root / name).is_file() and not _excluded(Path(name)))


def study_result_files(results: Path | str, runs: dict, sweeps=(), files=(), figures=None) -> list[Path]:
    """The study's result files under ``results``: for each of ``runs`` (name: resolved dict) its
    outputs at the rules' known paths (RUN_RESULT_PATTERNS), those of each of ``sweeps``, of each
    dataset the runs use and of each of ``figures`` (names; None: every figure), the study-level
    tables and report, and ``files`` (e.g. the bundle rule's inputs; each must exist). Posteriors
    are not included (see create_bundle). Other runs' folders and files in ``results`` (another
    study's) are left out."""
    import glob

    results = Path(results)
    datasets = {run.get("dataset") if isinstance(run, dict) else None for run in runs.values()}
    patterns = [p.format(run=glob.escape(name)) for name in runs for p in RUN_RESULT_PATTERNS]
    patterns += [p.format(sweep=glob.escape(name)) for name in sweeps for p in SWEEP_RESULT_PATTERNS]
    if None in datasets:
        patterns += [p.format(dataset="*") for p in DATASET_RESULT_PATTERNS]
    else:
        patterns += [p.format(dataset=glob.escape(d)) for d in sorted(datasets) for p in DATASET_RESULT_PATTERNS]
    if figures is None:
        patterns += ["figures/**/*", "logs/figures/**/*"]
    else:
        patterns += [p.format(figure=glob.escape(name)) for name in figures for p in FIGURE_RESULT_PATTERNS]
    patterns += [*STUDY_RESULT_PATTERNS, *REPORT_NAMES, *(f"{name}/**/*" for name in REPORT_NAMES)]
    found: set[Path] = set()
    for pattern in patterns:
        if pattern.endswith("/**/*"):  # a folder of the study's: all of it, following symlinks
            for base in results.glob(pattern.removesuffix("/**/*")):
                if base.is_dir():
                    found.update(_walk_files(base))
        else:
            found.update(results.glob(pattern))
    for name in files:
        path = Path(name) if Path(name).is_absolute() else Path.cwd() / name
        if not path.is_file():
            raise BundleError(f"result file {name} does not exist")
        if path.resolve().is_relative_to(results.resolve()):
            found.add(results / path.resolve().relative_to(results.resolve()))
    excluded = [results / d for d in EXCLUDED_RESULT_DIRS]
    return sorted(
        f for f in found
        if f.is_file() and not any(f.is_relative_to(d) for d in excluded)
        and not _excluded(f.relative_to(results)) and f.relative_to(results).parts[0] != "posteriors"
    )


def _copy_values(var, out, slab_bytes: int) -> None:
    """Copy a variable in slabs along its first dim (pred_draws can be ~1 GB at 10,000 chains)."""
    itemsize = getattr(var.dtype, "itemsize", 0)
    if var.ndim == 0 or not itemsize or var.size * itemsize <= slab_bytes:
        out[...] = var[...]
        return
    row_bytes = itemsize * (var.size // max(var.shape[0], 1))
    step = max(1, slab_bytes // max(row_bytes, 1))
    for start in range(0, var.shape[0], step):
        out[start:start + step] = var[start:start + step]


def strip_draws(
    source: Path | str, target: Path | str, drop: tuple[str, ...] = ("posterior",), slab_bytes: int = 64 << 20
) -> None:
    """Copy a posterior NetCDF file leaving out the ``drop`` groups (the draws).

    Everything else is copied as stored (dims, dtypes, chunking, compression, attrs: root attrs,
    ``sample_stats``, ``predictive``), at most ``slab_bytes`` in memory at a time; the root gets
    ``draws_omitted = 1`` so later code can tell.
    """
    import netCDF4

    def copy_group(src, dst, drop_here: tuple[str, ...]) -> None:
        dst.setncatts({name: src.getncattr(name) for name in src.ncattrs()})
        for name, dim in src.dimensions.items():
            dst.createDimension(name, None if dim.isunlimited() else len(dim))
        for name, var in src.variables.items():
            filters = var.filters() or {}
            chunking = var.chunking()
            attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            fill = attrs.pop("_FillValue", None)
            out = dst.createVariable(
                name,
                var.datatype,
                var.dimensions,
                zlib=bool(filters.get("zlib")),
                complevel=filters.get("complevel") or 4,
                shuffle=bool(filters.get("shuffle")),
                fletcher32=bool(filters.get("fletcher32")),
                chunksizes=None if chunking in (None, "contiguous") else chunking,
                fill_value=fill,
            )
            out.setncatts(attrs)
            var.set_auto_maskandscale(False)
            out.set_auto_maskandscale(False)
            _copy_values(var, out, slab_bytes)
        for name, group in src.groups.items():
            if name not in drop_here:
                copy_group(group, dst.createGroup(name), ())

    with netCDF4.Dataset(source, "r") as src:
        missing = [name for name in drop if name not in src.groups]
        if missing:
            raise BundleError(f"{source} has no group(s) {missing} to leave out")
        with netCDF4.Dataset(target, "w", format=src.data_model) as dst:
            copy_group(src, dst, drop)
            dst.setncattr("draws_omitted", 1)


# ---------------------------------------------------------------------------------------------
# writing


class _HashingReader:
    """File wrapper that hashes what tarfile reads from it."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def _tarinfo(name: str, size: int, mtime: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _check_arcname(name: str) -> None:
    # sha256sum escapes such names, and a newline would split a manifest line
    if any(c in name for c in "\n\r\\"):
        raise BundleError(f"cannot bundle {name!r}: newlines and backslashes are not allowed in names")


def manifest_text(rows: list[tuple[str, int, str]]) -> str:
    """Manifest for ``(path, size, sha256)`` rows, sorted by path."""
    lines = [
        f"# interplay bundle manifest, format {FORMAT_VERSION}: every file of the bundle but this one",
        f"# and {MANIFEST_HASH_NAME}. In the unpacked bundle: sha256sum -c {MANIFEST_NAME}",
    ]
    for path, size, digest in sorted(rows):
        lines += [f"# size {size}", f"{digest}  {path}"]
    return "\n".join(lines) + "\n"


def parse_manifest(text: str) -> dict[str, tuple[int | None, str]]:
    """``{path: (size or None, sha256)}``; raises :class:`BundleError` on a malformed line."""
    entries: dict[str, tuple[int | None, str]] = {}
    size: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# size "):
            try:
                size = int(line[len("# size "):])
            except ValueError:
                raise BundleError(f"manifest line {number}: bad size {line!r}") from None
            continue
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not path:
            raise BundleError(f"manifest line {number} is not 'sha256  path': {line!r}")
        if path in entries:
            raise BundleError(f"manifest lists {path} twice")
        entries[path] = (size, digest)
        size = None
    return entries


def create_bundle(
    study: str,
    *,
    root: Path | str = ".",
    results: Path | str | None = None,
    out: Path | str | None = None,
    config: dict | None = None,
    resolved: dict | None = None,
    configfiles: list[Path | str] = (),
    files: list[Path | str] = (),
    include_draws: bool = True,
    date: str | None = None,
    git: dict | None = None,
    environment: dict | None = None,
) -> CreatedBundle:
    """Write ``<out>/<study>-<date>-<short hash>.tar.gz`` and its summary ``.json`` beside it.

    ``root`` is the project root (source, git); ``results`` defaults to ``root/results`` and is
    stored as ``results/`` whatever its real path; ``out`` defaults to ``results/bundles``.
    ``config`` is the merged config (as Snakemake's ``config``), ``resolved`` every run's resolved
    dict (JSON-able), whose keys are the study's runs: their posteriors must exist, and the bundle
    holds exactly their results (:func:`study_result_files`), never other runs found in the results
    folders. ``files`` are result files that must be bundled too (the bundle rule passes its
    inputs, from the DAG). ``configfiles`` are copied at their place under ``root`` (else to
    ``bundle/configfiles/``). ``git``/``environment`` override what is recorded (defaults:
    :func:`git_info`, :func:`environment_info`).
    """
    import yaml

    root = Path(root).resolve()
    results = Path(results).resolve() if results is not None else root / "results"
    out = Path(out) if out is not None else results / "bundles"
    date = date or today()
    mtime = _check_date(date)
    if not results.is_dir():
        raise BundleError(f"results directory {results} does not exist")
    git = git_info(root) if git is None else git
    name = bundle_name(study, date, git["short"])
    # exactly the study's runs (and their outputs), whatever else the results folders hold
    runs = resolved if resolved is not None else resolve_runs(config or {})
    if not runs:
        raise BundleError("no merged posteriors to bundle: the study has no runs")
    posteriors = [results / "posteriors" / f"{run}.nc" for run in sorted(runs)]
    missing = [path.stem for path in posteriors if not path.is_file()]
    if missing:
        raise BundleError(f"no merged posteriors in {results / 'posteriors'} for the study's run(s) "
                          f"{', '.join(missing)}: make them first (snakemake results/posteriors/RUN.nc)")
    config_sections = config if isinstance(config, dict) else {}
    sweeps = sorted(config_sections.get("sweeps") or {})
    figures = sorted(config_sections["figures"]) if isinstance(config_sections.get("figures"), dict) else None

    environment = environment_info() if environment is None else environment

    entries: dict[str, _Entry] = {}

    def add(entry: _Entry) -> None:
        _check_arcname(entry.arcname)
        if entry.arcname in entries or entry.arcname in (MANIFEST_NAME, MANIFEST_HASH_NAME):
            raise BundleError(f"two files would be bundled as {entry.arcname}")
        entries[entry.arcname] = entry

    for rel in _source_files(root):
        add(_Entry(rel, root / rel, bool((root / rel).stat().st_mode & 0o111)))
    configfile_names = []
    for configfile in configfiles:
        path = Path(configfile).resolve()
        if not path.is_file():
            raise BundleError(f"config file {configfile} does not exist")
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
        if rel is None:
            rel = f"{META_DIR}/configfiles/{path.name}"
        if rel not in entries:
            add(_Entry(rel, path))
        configfile_names.append(rel)
    for path in study_result_files(results, runs, sweeps, files, figures):
        add(_Entry("results/" + path.relative_to(results).as_posix(), path))

    meta = {
        "format": FORMAT_VERSION,
        "study": study,
        "name": name,
        "date": date,
        "git": {k: git.get(k) for k in ("commit", "short", "dirty")},
        "include_draws": include_draws,
        "configfiles": configfile_names,
    }

    def add_json(rel: str, value) -> None:
        add(_Entry(rel, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()))

    add_json(f"{META_DIR}/bundle.json", meta)
    add_json(f"{META_DIR}/environment.json", environment)
    add(_Entry(f"{META_DIR}/config.yaml", yaml.safe_dump(config or {}, sort_keys=True).encode()))
    add_json(f"{META_DIR}/resolved_config.json", resolved if resolved is not None else {})
    if git.get("dirty"):
        add(_Entry(f"{META_DIR}/git.diff", (git.get("diff") or "").encode()))
        add(_Entry(f"{META_DIR}/git-status.txt", (git.get("status") or "").encode()))

    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar.gz"
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out) as scratch:
        for posterior in posteriors:
            arcname = "results/posteriors/" + posterior.name
            if include_draws:
                add(_Entry(arcname, posterior))
            else:
                stripped = Path(scratch) / posterior.name
                strip_draws(posterior, stripped)
                add(_Entry(arcname, stripped))
        partial = Path(scratch) / archive.name
        rows, manifest_sha256 = _write_tar(partial, name, [entries[k] for k in sorted(entries)], mtime)
        os.replace(partial, archive)

    archive_sha256 = sha256_file(archive)
    summary = {
        "archive": archive.name,
        "archive_sha256": archive_sha256,
        "manifest_sha256": manifest_sha256,
        "study": study,
        "date": date,
        "git_commit": git.get("commit"),
        "git_dirty": bool(git.get("dirty")),
        "include_draws": include_draws,
        "n_files": len(rows),
        "total_bytes": sum(size for _, size, _ in rows),
    }
    summary_path = out / f"{name}.json"
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return CreatedBundle(archive, manifest_sha256, archive_sha256, len(rows), summary["total_bytes"],
                         summary_path)


def _write_tar(path: Path, top: str, entries: list[_Entry], mtime: int) -> tuple[list, str]:
    """Stream the entries, then the manifest, into a deterministic tar.gz; returns the manifest
    rows ``(path, size, sha256)`` and the manifest's sha256."""
    rows: list[tuple[str, int, str]] = []
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL
    ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = 1 << 20
        for entry in entries:
            if isinstance(entry.source, bytes):
                opened, size = io.BytesIO(entry.source), len(entry.source)
            else:
                opened = open(entry.source, "rb")  # noqa: SIM115 (closed by the with below)
                size = os.fstat(opened.fileno()).st_size
            with opened as handle:
                reader = _HashingReader(handle)
                tar.addfile(_tarinfo(f"{top}/{entry.arcname}", size, mtime, entry.executable), reader)
            rows.append((entry.arcname, reader.size, reader.digest.hexdigest()))
        manifest = manifest_text(rows).encode()
        if len(manifest) > MAX_MANIFEST_BYTES:  # verify would refuse it
            raise BundleError(f"the manifest of {len(rows)} files would be {len(manifest)} bytes, more than "
                              f"the {MAX_MANIFEST_BYTES} that verify reads")
        manifest_sha256 = hashlib.sha256(manifest).hexdigest()
        for arcname, data in (
            (MANIFEST_NAME, manifest),
            (MANIFEST_HASH_NAME, f"{manifest_sha256}  {MANIFEST_NAME}\n".encode()),
        ):
            tar.addfile(_tarinfo(f"{top}/{arcname}", len(data), mtime, False), io.BytesIO(data))
    return rows, manifest_sha256


# ---------------------------------------------------------------------------------------------
# reading


def _safe_relative(name: str) -> bool:
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and name == path.as_posix()


_WHOLE_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                       tarfile.GNUTYPE_LONGLINK)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses PAX and GNU long-name headers larger than MAX_HEADER_BYTES, which tarfile would
    otherwise read into memory whole at whatever size the archive declares."""

    def _proc_member(self, tarfile_):
        if self.type in _WHOLE_HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            raise tarfile.SubsequentHeaderError(  # tarfile turns it into ReadError: unreadable
                f"{self.type!r} header of {self.size} bytes, more than the {MAX_HEADER_BYTES} allowed"
            )
        return super()._proc_member(tarfile_)


def _scan(archive: Path, extract_to: Path | None = None):
    """One streaming pass: ``({member name: (size, sha256)}, [problems], {name: mode},
    {name: bytes})``; regular members are hashed (and written under ``extract_to``, top directory
    stripped, when given) in blocks of READ_BLOCK bytes. Only the two manifest files at
    ``<top>/`` are kept, each up to MAX_MANIFEST_BYTES (a larger one is a problem)."""
    found: dict[str, tuple[int, str]] = {}
    modes: dict[str, int] = {}
    problems: list[str] = []
    manifests: dict[str, bytes] = {}
    try:
        # ignore_zeros: read on past end-of-archive blocks and corrupt headers, which tarfile would
        # otherwise take as the end, so appended or hidden members are seen (and reported)
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz, tarfile.open(
            fileobj=gz, mode="r|", ignore_zeros=True, tarinfo=_BoundedTarInfo
        ) as tar:
            for member in tar:
                if not member.isreg():
                    if not member.isdir():
                        problems.append(f"{member.name}: not a regular file (type {member.type!r})")
                    continue
                if not _safe_relative(member.name):
                    problems.append(f"{member.name}: unsafe path")
                    continue
                if member.name in found:
                    problems.append(f"{member.name}: stored twice")
                    continue
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                parts = Path(member.name).parts
                # the manifest files count only at their one place, <top>/MANIFEST.sha256[.sha256]
                keep = len(parts) == 2 and parts[1] in (MANIFEST_NAME, MANIFEST_HASH_NAME)
                if keep and member.size > MAX_MANIFEST_BYTES:
                    problems.append(f"{parts[1]} is {member.size} bytes, more than the "
                                    f"{MAX_MANIFEST_BYTES} allowed: not read")
                    keep = False
                kept = io.BytesIO() if keep else None
                target = None
                if extract_to is not None and len(parts) > 1:
                    target = extract_to.joinpath(*parts[1:])
                    target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") if target is not None else contextlib.nullcontext() as sink:
                    while block := handle.read(READ_BLOCK):
                        digest.update(block)
                        if kept is not None:
                            kept.write(block)
                        if sink is not None:
                            sink.write(block)
                found[member.name] = (member.size, digest.hexdigest())
                modes[member.name] = member.mode
                if kept is not None:
                    manifests[member.name] = kept.getvalue()
            while gz.read(READ_BLOCK):  # to the end, where gzip checks its CRC and length
                pass
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, ValueError) as error:
        problems.append(f"archive unreadable: {type(error).__name__}: {error}")
    return found, problems, modes, manifests


def _check(archive: Path, found, problems, manifests, expect: str | None) -> VerifyReport:
    report = VerifyReport(archive=archive, problems=list(problems))
    tops = sorted({name.split("/", 1)[0] for name in found if name.endswith("/" + MANIFEST_NAME)
                   and name.count("/") == 1})
    if len(tops) != 1:
        report.problems.append(
            f"expected one <top>/{MANIFEST_NAME}, found {len(tops)}" + (f": {tops}" if tops else "")
        )
        report.extra = sorted(found)
        return report
    top = report.top = tops[0]
    manifest_bytes = manifests.get(f"{top}/{MANIFEST_NAME}")
    if manifest_bytes is None:  # too large to read: nothing to check against (a problem says so)
        return report
    report.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    hash_bytes = manifests.get(f"{top}/{MANIFEST_HASH_NAME}")
    if hash_bytes is None:
        report.problems.append(f"{MANIFEST_HASH_NAME} missing")
    elif hash_bytes.decode(errors="replace").split()[:1] != [report.manifest_sha256]:
        report.problems.append(
            f"{MANIFEST_NAME} altered: its sha256 {report.manifest_sha256} differs from {MANIFEST_HASH_NAME}"
        )
    if expect is not None and expect.strip().lower() != report.manifest_sha256:
        report.problems.append(
            f"{MANIFEST_NAME} sha256 {report.manifest_sha256} is not the expected {expect.strip().lower()}"
        )
    try:
        listed = parse_manifest(manifest_bytes.decode())
    except (BundleError, UnicodeDecodeError) as error:
        report.problems.append(f"{MANIFEST_NAME} unreadable: {error}")
        return report
    report.n_files = len(listed)
    stored = {}
    for name, value in found.items():
        if name.startswith(top + "/"):
            rel = name[len(top) + 1:]
            if rel not in (MANIFEST_NAME, MANIFEST_HASH_NAME):
                stored[rel] = value
        else:
            report.extra.append(name)
    for rel, (size, digest) in sorted(listed.items()):
        if rel not in stored:
            report.missing.append(rel)
        elif stored[rel][1] != digest or (size is not None and stored[rel][0] != size):
            report.altered.append(rel)
    report.extra += sorted(rel for rel in stored if rel not in listed)
    return report


def verify_bundle(archive: Path | str, expect: str | None = None) -> VerifyReport:
    """Check every file of ``archive`` against its manifest (and the manifest against ``expect``,
    the manifest sha256 printed when the bundle was made)."""
    archive = Path(archive)
    if not archive.is_file():
        raise BundleError(f"bundle {archive} does not exist")
    found, problems, _, manifests = _scan(archive)
    return _check(archive, found, problems, manifests, expect)


def restore_mtimes(dest: Path, now: float | None = None) -> None:
    """Give restored files mtimes in pipeline order (sources oldest, then data, posteriors,
    analysis, figures, report), all in the past, so Snakemake sees every output up to date."""
    now = time.time() if now is None else now
    base = int(now) - MTIME_STEP * (1 + max(layer for _, layer in MTIME_LAYERS))
    for path in _walk_files(dest):
        rel = path.relative_to(dest).as_posix()
        layer = max((lay for prefix, lay in MTIME_LAYERS if rel.startswith(prefix)), default=0)
        stamp = base + MTIME_STEP * layer
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def restore_bundle(archive: Path | str, dest: Path | str, expect: str | None = None) -> VerifyReport:
    """Verify ``archive``, unpack it into ``dest`` (new or empty) as a project directory, check the
    unpacked bytes again, and set mtimes (see :func:`restore_mtimes`). Raises :class:`BundleError`
    listing every finding when the archive does not verify; ``dest`` is then left untouched."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"restore target {dest} exists and is not an empty directory")
    report = verify_bundle(archive, expect)
    if not report.ok:
        raise BundleError(f"bundle {archive} does not verify:\n" + "\n".join(report.lines()))
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=dest))
    try:
        # a second read: check what was written, not what was read before
        found, problems, modes, manifests = _scan(archive, extract_to=staging)
        again = _check(archive, found, problems, manifests, report.manifest_sha256)
        if not again.ok:
            raise BundleError(f"bundle {archive} changed while restoring:\n" + "\n".join(again.lines()))
        for name, mode in modes.items():
            target = staging.joinpath(*Path(name).parts[1:])
            target.chmod(0o755 if mode & 0o111 else 0o644)
        for child in sorted(staging.iterdir()):
            shutil.move(str(child), dest / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    restore_mtimes(dest)
    return report


def dry_run_jobs(workdir: Path | str, *targets: str, extra_args: tuple[str, ...] = ()) -> dict[str, int]:
    """Jobs ``snakemake -n`` would run in ``workdir``: ``{rule: count}`` (empty when nothing to do).

    A test helper for "a restored bundle rebuilds figures without sampling"."""
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
               *extra_args, *targets]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BundleError(f"snakemake -n failed in {workdir}:\n{done.stdout}\n{done.stderr}")
    jobs: dict[str, int] = {}
    in_table = False
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        words = line.split()
        if words[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(words) == 2 and words[1].isdigit() and words[0] != "total":
                jobs[words[0]] = int(words[1])
            elif words and set(words[0]) != {"-"} and words[0] != "total":
                in_table = False
    return jobs
