"""What JAX's persistent compilation cache (config `compilation_cache`) saves a study: wall time and compile
seconds per `sample` job, with no cache, a cold (empty) cache and a warm one.

The study runs with Snakemake in a scratch directory (never in the checkout, whose results other work may
use): its data are prepared first (not timed), then, for each of the modes asked for,

- `none`: `compilation_cache: {enabled: false}`;
- `cold`: an empty cache (jobs still share programs among themselves: a later block of a run loads what an
  earlier one wrote);
- `warm`: the cache the cold pass left, every output but the prepared data deleted first;

it prints the study's wall time and, per `sample` job, the compile seconds its log reports
(`interplay.compilation_cache.CompileTimes`: XLA compilation or loading from the cache; tracing and lowering,
which no cache saves, beside them). The default study takes about 12 minutes per pass on 2 cores; name a few
targets for a reduced one.

Examples:
    python benchmarks/bench_compile_cache.py                                   # the default study, all
    python benchmarks/bench_compile_cache.py --targets results/posteriors/airfoil-over.nc \\
        results/posteriors/grid-tau1-depth1.nc                                 # a reduced study
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interplay.compilation_cache import parse_summary

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
KEEP = ("data", ".jax-cache")  # what a warm pass keeps of results/


def snakemake(workdir: Path, configfile: Path, targets: list[str], cores: int, *extra: str) -> float:
    """Run the study's `targets` in `workdir`; the wall seconds."""
    # targets first: options such as --until and --config take every word after them
    command = [str(SNAKEMAKE), *targets, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", str(cores), "--quiet", "rules", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"snakemake failed:\n{done.stderr[-4000:]}")
    return time.perf_counter() - start


def sample_jobs(results: Path) -> dict[str, dict[str, float]]:
    """{run/block: compile figures and job seconds} from the `sample` logs."""
    jobs = {}
    for log in sorted((results / "logs" / "sample").glob("*/block-*.log")):
        figures, total = None, float("nan")
        for line in log.read_text().splitlines():
            figures = parse_summary(line) or figures
            if " s total" in line and "wrote " in line:
                total = float(line.rsplit(" in ", 1)[1].split(" s total")[0])
        if figures is not None:
            jobs[f"{log.parent.name}/{log.stem}"] = {**figures, "job_seconds": total}
    return jobs


def clear_outputs(results: Path) -> None:
    for entry in results.iterdir():
        if entry.name not in KEEP:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def report(mode: str, wall: float, jobs: dict[str, dict[str, float]]) -> None:
    print(f"\n== {mode}: study wall time {wall:.1f} s, {len(jobs)} sample jobs")
    print(f"{'job':40s} {'job s':>7s} {'compile s':>9s} {'programs':>8s} {'cached':>6s} {'lower s':>7s} "
          f"{'trace s':>7s}")
    for name, job in jobs.items():
        print(f"{name:40s} {job['job_seconds']:7.1f} {job['compile_seconds']:9.2f} {job['programs']:8.0f} "
              f"{job['cache_hits']:6.0f} {job['lowering_seconds']:7.2f} {job['tracing_seconds']:7.2f}")
    if jobs:
        total = {key: sum(job[key] for job in jobs.values()) for key in next(iter(jobs.values()))}
        print(f"{'total':40s} {total['job_seconds']:7.1f} {total['compile_seconds']:9.2f} "
              f"{total['programs']:8.0f} {total['cache_hits']:6.0f} {total['lowering_seconds']:7.2f} "
              f"{total['tracing_seconds']:7.2f}")
        print(f"mean compile seconds per sample job: {total['compile_seconds'] / len(jobs):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--targets", nargs="*", default=[], help="Snakemake targets (default: the whole study)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["none", "cold", "warm"], choices=["none", "cold", "warm"])
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("INTERPLAY_DATA_MIRROR", str(ROOT.parent / "shared" / "data" / "uci"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-compile-cache-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = workdir / "results"
    configfile = args.configfile.resolve()
    print(f"study {configfile}, targets {args.targets or 'all'}, {args.cores} cores, in {workdir}")
    snakemake(workdir, configfile, args.targets, args.cores, "--until", "prepare")
    for mode in args.modes:
        clear_outputs(results)
        extra = []
        if mode == "none":
            extra = ["--config", "compilation_cache={enabled: false}"]
        elif mode == "cold":
            shutil.rmtree(results / ".jax-cache", ignore_errors=True)
        wall = snakemake(workdir, configfile, args.targets, args.cores, *extra)
        report(mode, wall, sample_jobs(results))
    cache = results / ".jax-cache"
    if cache.exists():
        files = [p for p in cache.rglob("*") if p.is_file()]
        print(f"\ncache: {len(files)} entries, {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB in {cache}")


if __name__ == "__main__":
    main()
