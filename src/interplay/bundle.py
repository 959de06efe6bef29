"""Archived, verifiable result bundles: one deterministic ``.tar.gz`` per study, a BagIt bag.

A bundle holds everything needed to check a study's results byte for byte and to rebuild its
figures and analysis tables without sampling: config (as given and with every run resolved),
code version (git commit and diff), environment, merged posteriors (optionally without draws),
analysis tables, figures, report, logs, benchmarks, prepared data and the source tree.

The archive is a BagIt bag (RFC 8493, written by :mod:`interplay.bag`) whose payload is the
project directory and an RO-Crate (:mod:`interplay.crate`)::

    <study>-<YYYYMMDD>-<short hash>/
        bagit.txt, bag-info.txt (study, date, code version, Payload-Oxum)
        manifest-sha256.txt, tagmanifest-sha256.txt
        data/
            ro-crate-metadata.json     Workflow Run Crate: workflow, config, environment, results
            bundle/bundle.json         study, date, git, options
            bundle/environment.json    Python, exact package versions, host, JAX backend and devices
            bundle/config.yaml         the merged config as Snakemake saw it
            bundle/resolved_config.json  every run's resolved dict
            bundle/git.diff, bundle/git-status.txt   only when the work tree was dirty
            Snakefile, workflow/, src/, config/, envs/, pyproject.toml, requirements.lock, ...
            results/...                posteriors, analysis, figures, report, logs, benchmarks, data

Provenance (git, environment) comes from :mod:`interplay.provenance`; posteriors without draws
from :func:`interplay.posterior_io.strip_draws`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from interplay import bag, crate
from interplay.bag import VerifyReport
from interplay.data.atomic import is_temp_name
from interplay.data.convert import sha256_file
from interplay.provenance import environment_info, git_info, run_git

META_DIR = "bundle"
FORMAT_VERSION = 2  # 1: own manifest format; 2: a BagIt bag with an RO-Crate
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
    manifest_sha256: str  # of the bag's tagmanifest-sha256.txt (covers every file): the reference to keep
    archive_sha256: str
    n_files: int
    total_bytes: int
    summary_path: Path


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
    listed = run_git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *present)
    if listed is not None and (run_git(root, "rev-parse", "--show-toplevel") or "").strip() == str(root.resolve()):
        names = {name for name in listed.split("\0") if name}
    else:
        names = {path.relative_to(root).as_posix() for p in present for path in _walk_files(root / p)}
    return sorted(name for name in names if (root / name).is_file() and not _excluded(Path(name)))


def own_dataset_files(root: Path, own: dict) -> dict[str, Path]:
    """The files of the config's own data sets (`datasets`) by bundle path: their path below ``root``,
    or ``bundle/datasets/<name>/<file name>`` for a file outside it."""
    files = {}
    for name, entry in sorted(own.items()):
        source = Path(entry["path"]) if Path(entry["path"]).is_absolute() else root / entry["path"]
        if not source.is_file():
            raise BundleError(f"datasets.{name}: the file {source} does not exist")
        resolved = source.resolve()
        rel = (resolved.relative_to(root).as_posix() if resolved.is_relative_to(root)
               else f"{META_DIR}/datasets/{name}/{source.name}")
        files[rel] = source
    return files


def dataset_provenance(results: Path, root: Path, runs: dict, own: dict) -> dict[str, dict]:
    """Per data set of the study's runs (bundle.json `datasets`): the sha256 of its study table and, for
    an own data set, its file's path and sha256."""
    names = sorted({run["dataset"] for run in runs.values() if isinstance(run, dict) and "dataset" in run})
    found = {}
    for name in names:
        entry = {}
        table = results / "data" / "tables" / f"{name}.data"
        if table.is_file():
            entry["table_sha256"] = sha256_file(table)
        if name in own:
            source = Path(own[name]["path"])
            entry.update(source=own[name]["path"],
                         source_sha256=sha256_file(source if source.is_absolute() else root / source))
        found[name] = entry
    return found


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


# ---------------------------------------------------------------------------------------------
# writing


def _iso_utc(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(int(timestamp), _dt.UTC).isoformat()


def run_times(paths: list[Path]) -> tuple[str, str]:
    """The run's start and end (ISO 8601, UTC): the oldest and newest modification time of its
    result files, i.e. when its first and last outputs were written."""
    stamps = [path.stat().st_mtime for path in paths]
    return _iso_utc(min(stamps)), _iso_utc(max(stamps))


def bag_info(study: str, name: str, date: str, git: dict, include_draws: bool) -> dict[str, str]:
    """The bag-info.txt labels of a bundle: study, date, code version (RFC 8493 labels where one fits)."""
    from interplay import __version__

    commit = git.get("commit") or "none (not a git checkout)"
    return {
        "Source-Organization": "interplay",
        "External-Identifier": name,
        "External-Description": f"interplay result bundle of the study {study}",
        "Bagging-Date": f"{date[:4]}-{date[4:6]}-{date[6:]}",
        "Bag-Software-Agent": f"interplay {__version__}",
        "Study": study,
        "Code-Version": commit + (" with uncommitted changes (bundle/git.diff)" if git.get("dirty") else ""),
        "Posterior-Draws": "included" if include_draws else "omitted",
    }


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
    :func:`interplay.provenance.git_info`, :func:`interplay.provenance.environment_info`).
    """
    import yaml

    from interplay.posterior_io import strip_draws

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

    entries: dict[str, bag.Member] = {}

    def add(member: bag.Member) -> None:
        try:
            bag.check_member_path(member.path)
        except bag.BagFormatError as error:
            raise BundleError(str(error)) from None
        if member.path in entries or member.path == crate.METADATA_NAME:
            raise BundleError(f"two files would be bundled as {member.path}")
        entries[member.path] = member

    for rel in _source_files(root):
        add(bag.Member(rel, root / rel, bool((root / rel).stat().st_mode & 0o111)))
    own = config_sections.get("datasets") or {}
    for rel, source in own_dataset_files(root, own).items():  # git-ignored data files are bundled too
        if rel not in entries:
            add(bag.Member(rel, source))
    configfile_names = []
    for configfile in configfiles:
        path = Path(configfile).resolve()
        if not path.is_file():
            raise BundleError(f"config file {configfile} does not exist")
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
        if rel is None:
            rel = f"{META_DIR}/configfiles/{path.name}"
        if rel not in entries:
            add(bag.Member(rel, path))
        configfile_names.append(rel)
    result_files = study_result_files(results, runs, sweeps, files, figures)
    for path in result_files:
        add(bag.Member("results/" + path.relative_to(results).as_posix(), path))
    start, end = run_times(result_files + posteriors)

    meta = {
        "format": FORMAT_VERSION,
        "study": study,
        "name": name,
        "date": date,
        "git": {k: git.get(k) for k in ("commit", "short", "dirty")},
        "include_draws": include_draws,
        "configfiles": configfile_names,
        "datasets": dataset_provenance(results, root, runs, own),
    }

    def add_json(rel: str, value) -> None:
        add(bag.Member(rel, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()))

    add_json(f"{META_DIR}/bundle.json", meta)
    add_json(f"{META_DIR}/environment.json", environment)
    add(bag.Member(f"{META_DIR}/config.yaml", yaml.safe_dump(config or {}, sort_keys=True).encode()))
    add_json(f"{META_DIR}/resolved_config.json", resolved if resolved is not None else {})
    if git.get("dirty"):
        add(bag.Member(f"{META_DIR}/git.diff", (git.get("diff") or "").encode()))
        add(bag.Member(f"{META_DIR}/git-status.txt", (git.get("status") or "").encode()))

    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar.gz"
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out) as scratch:
        for posterior in posteriors:
            arcname = "results/posteriors/" + posterior.name
            if include_draws:
                add(bag.Member(arcname, posterior))
            else:
                stripped = Path(scratch) / posterior.name
                try:
                    strip_draws(posterior, stripped)
                except ValueError as error:
                    raise BundleError(str(error)) from None
                add(bag.Member(arcname, stripped))
        sizes = [crate.CrateFile(m.path, len(m.source) if isinstance(m.source, bytes) else m.source.stat().st_size)
                 for m in entries.values()]
        inputs = [f"{META_DIR}/config.yaml", f"{META_DIR}/resolved_config.json", *configfile_names]
        try:
            metadata = crate.workflow_run_crate(
                name=f"{study}: interplay result bundle {name}",
                description=f"Results of the study {study} (runs {', '.join(sorted(runs))}) with the code, config "
                            "and environment that made them",
                date=f"{date[:4]}-{date[4:6]}-{date[6:]}", files=sizes, inputs=sorted(set(inputs)),
                start=start, end=end, environment=environment)
        except ValueError as error:
            raise BundleError(f"cannot describe the run as an RO-Crate: {error}") from None
        entries[crate.METADATA_NAME] = bag.Member(crate.METADATA_NAME, metadata)
        partial = Path(scratch) / archive.name
        try:
            written = bag.write_bag_tar(partial, name, list(entries.values()),
                                        bag_info(study, name, date, git, include_draws), mtime)
        except bag.BagFormatError as error:
            raise BundleError(str(error)) from None
        os.replace(partial, archive)

    archive_sha256 = sha256_file(archive)
    summary = {
        "archive": archive.name,
        "archive_sha256": archive_sha256,
        "manifest_sha256": written.tagmanifest_sha256,
        "study": study,
        "date": date,
        "git_commit": git.get("commit"),
        "git_dirty": bool(git.get("dirty")),
        "include_draws": include_draws,
        "n_files": written.n_files,
        "total_bytes": written.total_bytes,
    }
    summary_path = out / f"{name}.json"
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return CreatedBundle(archive, written.tagmanifest_sha256, archive_sha256, written.n_files,
                         written.total_bytes, summary_path)


# ---------------------------------------------------------------------------------------------
# reading


def verify_bundle(archive: Path | str, expect: str | None = None) -> VerifyReport:
    """Check ``archive`` as a bag: every file against its manifest, the manifest and bag-info.txt
    against the tag manifest (and the tag manifest against ``expect``, the manifest sha256 printed
    when the bundle was made); see :mod:`interplay.bag`."""
    archive = Path(archive)
    if not archive.is_file():
        raise BundleError(f"bundle {archive} does not exist")
    return bag.verify_bag_tar(archive, expect)


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
    """Verify ``archive``, unpack it, check the unpacked bag again (``bagit`` validation of the
    written bytes), move its payload into ``dest`` (new or empty) as a project directory, and set
    mtimes (see :func:`restore_mtimes`). Raises :class:`BundleError` listing every finding when the
    archive does not verify; ``dest`` is then left untouched."""
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
        again = bag.unpack_bag_tar(archive, staging, report.manifest_sha256)
        if not again.ok:
            raise BundleError(f"bundle {archive} changed while restoring:\n" + "\n".join(again.lines()))
        for child in sorted((staging / bag.PAYLOAD_DIR).iterdir()):
            shutil.move(str(child), dest / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    restore_mtimes(dest)
    return report
