"""The ``interplay`` command line: argparse groups of subcommands (``interplay bundle ...``).

Exit status: 0 success, 1 a check failed or the command could not do its work (the message says
why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _bundle_create(args: argparse.Namespace) -> int:
    from interplay import bundle

    root = Path(args.root)
    configfiles = args.configfile
    if configfiles is None:
        default = root / "config.yaml"
        configfiles = [default] if default.is_file() else []
    config = bundle.load_configfiles(configfiles)
    study = args.study if args.study is not None else bundle.study_name(config)
    if args.resolved is not None:
        with open(args.resolved) as handle:
            resolved = json.load(handle)
    else:
        resolved = bundle.resolve_runs(config)
    created = bundle.create_bundle(
        study,
        root=root,
        results=args.results if args.results is not None else root / "results",
        out=args.out,
        config=config,
        resolved=resolved,
        configfiles=configfiles,
        include_draws=not args.no_draws,
        date=args.date,
    )
    print(f"wrote {created.path} ({created.n_files} files, {created.total_bytes} bytes)")
    print(f"manifest sha256: {created.manifest_sha256}")
    print(f"archive sha256:  {created.archive_sha256}")
    print(f"summary:         {created.summary_path}")
    print(
        "The bundle is a BagIt bag (its manifest sha256 is that of tagmanifest-sha256.txt, which covers\n"
        "every file). Keep the manifest sha256 somewhere outside the bundle (paper, lab notebook); check with\n"
        f"  interplay bundle verify {created.path} --expect {created.manifest_sha256}"
    )
    return 0


def _bundle_verify(args: argparse.Namespace) -> int:
    from interplay import bundle

    report = bundle.verify_bundle(args.file, expect=args.expect)
    for line in report.lines():
        print(line)
    if report.ok:
        checked = "matches --expect" if args.expect else "not checked against an outside reference"
        print(f"OK {args.file}: {report.n_files} files match the manifest")
        print(f"manifest sha256: {report.manifest_sha256} ({checked})")
        return 0
    n_findings = len(report.lines())
    print(f"FAILED {args.file}: {n_findings} problem(s)", file=sys.stderr)
    return 1


def _bundle_restore(args: argparse.Namespace) -> int:
    from interplay import bundle

    report = bundle.restore_bundle(args.file, args.dir, expect=args.expect)
    print(f"restored {report.n_files} files from {args.file} into {args.dir}")
    print(f"manifest sha256: {report.manifest_sha256}")
    meta = json.loads((Path(args.dir) / bundle.META_DIR / "bundle.json").read_text())
    # One command: bundle/config.yaml is the config as the pipeline saw it (every --configfile and
    # --config merged in), which the study's own files alone would not reproduce.
    print(f"rebuild figures and tables (no sampling): cd {args.dir} && snakemake --cores all "
          f"--configfile {bundle.META_DIR}/config.yaml")
    if meta.get("configfiles"):
        print(f"  ({bundle.META_DIR}/config.yaml merges the study's config file(s) {', '.join(meta['configfiles'])})")
    if not meta.get("include_draws", True):
        print("this bundle has no posterior draws: analyses that read them cannot be rerun from it")
    return 0


def _add_bundle_commands(subparsers) -> None:
    group = subparsers.add_parser("bundle", help="archived, verifiable result bundles")
    commands = group.add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")

    create = commands.add_parser(
        "create", help="write results/bundles/<study>-<YYYYMMDD>-<short hash>.tar.gz"
    )
    create.add_argument("--study", default=None,
                        help="study name, used in the bundle name; default: the config's `study`")
    create.add_argument("--root", default=".", help="project root (source, git); default: .")
    create.add_argument("--results", default=None, help="results directory; default: ROOT/results")
    create.add_argument("--out", default=None, help="where to write; default: RESULTS/bundles")
    create.add_argument(
        "--configfile", action="append", default=None,
        help="config file(s) as given to snakemake (repeatable); default: ROOT/config.yaml if present",
    )
    create.add_argument(
        "--resolved", default=None,
        help="JSON file with every run's resolved config; default: resolve with interplay.config",
    )
    create.add_argument("--no-draws", action="store_true",
                        help="leave out the posterior draws (keep sample_stats, predictive, attrs)")
    create.add_argument("--date", default=None, help="YYYYMMDD for the name; default: today")
    create.set_defaults(func=_bundle_create)

    verify = commands.add_parser(
        "verify", help="check a bundle as a BagIt bag: every file against its manifest, the tag manifest, sizes")
    verify.add_argument("file")
    verify.add_argument("--expect", default=None,
                        help="the manifest sha256 printed by create (detects a re-made manifest)")
    verify.set_defaults(func=_bundle_verify)

    restore = commands.add_parser(
        "restore", help="verify, then unpack into DIR so snakemake there rebuilds figures without sampling"
    )
    restore.add_argument("file")
    restore.add_argument("dir")
    restore.add_argument("--expect", default=None, help="the manifest sha256 printed by create")
    restore.set_defaults(func=_bundle_restore)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interplay", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="GROUP")
    _add_bundle_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from interplay.bundle import BundleError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
