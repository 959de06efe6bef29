"""How a `sample` job's cost grows with its chains: the paper's airfoil net (5-16-16-16-16-2, `regr`, MILE).

For each number of chains (one block), a whole `sample` job (`interplay.sampling.sample_block`: data, warm
start, MCLMC tuning and sampling, predictive, block file) runs in a fresh interpreter twice, sharing a
compilation cache private to the benchmark: cold (it compiles everything) and warm (it loads every program,
so its phases time the computation alone). Printed per chain count: both jobs' wall times and compile
seconds, the warm job's MCLMC gradient evaluations per second (full-batch gradients over all chains, warm-up
plus sampling) and its wall time per chain, so cost per chain against the number of chains is visible.

Then the projected time of the paper's full airfoil run, 10,000 chains x 1,000 draws (warm start of
`max_epochs` 200, MCLMC 50,000 warm-up and 10,000 sampling steps, thin 10), from the warm job with the most
chains: its warm-start seconds per epoch and MCLMC seconds per step, scaled linearly to 10,000 chains
(exact when the measured job had 10,000 chains; a lower bound on throughput below that, so an upper bound
on time once the device is saturated). Target: <= 30 minutes on one H200.

Examples:
    python benchmarks/bench_scaling.py --data results/data/prepared/airfoil/seed-0_std-full.nc   # CPU, short
    python benchmarks/bench_scaling.py --data ... --chains 1000 10000 --paper-schedule           # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from interplay.compilation_cache import parse_summary
from interplay.config import resolve_runs, sampling_run

PAPER = {"max_epochs": 200, "warmup_steps": 50_000, "steps": 10_000, "thin": 10}
FULL_RUN_CHAINS = 10_000
TARGET_MINUTES = 30.0
# One job in a fresh interpreter, as Snakemake runs `sample` (argv: run, data, out, cache dir, threads).
JOB = """
import json, sys, time
start = time.perf_counter()
from interplay.compilation_cache import CompileTimes, enable_compilation_cache
from interplay.samplers import use_cpu_cores
use_cpu_cores(int(sys.argv[5]))
enable_compilation_cache({"enabled": True, "dir": sys.argv[4]})
from interplay.sampling import sample_block
with CompileTimes() as times:
    sample_block(json.loads(sys.argv[1]), 0, sys.argv[2], sys.argv[3], step_progress=False)
print(times.summary())
print("WALL", time.perf_counter() - start)
"""


def airfoil_run(chains: int, schedule: dict) -> dict:
    """The paper's airfoil run (schema defaults) with `chains` in one block and `schedule`'s lengths."""
    run = {"dataset": "airfoil", "model": {"hidden": [16, 16, 16, 16], "likelihood": "regr"},
           "sampler": {"kind": "mile", "chains": chains, "block_size": chains,
                       "warmstart": {"max_epochs": schedule["max_epochs"]},
                       "mclmc": {key: schedule[key] for key in ("warmup_steps", "steps", "thin")}}}
    return sampling_run(resolve_runs({"runs": {"bench-scaling": run}})["bench-scaling"])


def run_job(run: dict, data: Path, out: Path, cache: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", JOB, json.dumps(run), str(data), str(out), str(cache),
                           str(threads)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"sample job with {run['sampler']['chains']} chains failed:\n{done.stderr[-4000:]}")
    lines = done.stdout.splitlines()
    figures = next(parse_summary(line) for line in lines if parse_summary(line))
    figures["wall"] = float(next(line.split()[1] for line in lines if line.startswith("WALL")))
    import xarray as xr

    with xr.open_dataset(out, group="sample_stats") as stats:
        for name in ("warmstart_seconds", "warmup_seconds", "sampling_seconds", "predictive_seconds"):
            figures[name] = float(stats[name].max())
        figures["epochs"] = int(stats["warmstart_epochs"].max())
        figures["grad_evals"] = int(stats["n_grad_evals"].sum())
    out.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("results/data/prepared/airfoil/seed-0_std-full.nc"))
    parser.add_argument("--chains", type=int, nargs="+", default=[8, 64, 512, 4096])
    parser.add_argument("--paper-schedule", action="store_true", help="the paper's schedule (GPU runs)")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--thin", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU cores (JAX CPU devices) per job")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data}: no prepared airfoil split (run `snakemake {args.data}` first)")
    schedule = PAPER if args.paper_schedule else {"max_epochs": args.max_epochs, "warmup_steps": args.warmup_steps,
                                                  "steps": args.steps, "thin": args.thin}
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    print(f"airfoil 5-16-16-16-16-2 regr, schedule {schedule}, {args.threads} thread(s) per job")
    header = (f"{'chains':>7s} {'cold s':>8s} {'cold compile':>12s} {'warm s':>8s} {'warm compile':>12s} "
              f"{'warm-start s':>12s} {'MCLMC s':>8s} {'grad evals/s':>13s} {'ms/chain':>9s}")
    print(header)
    measured = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        cache = Path(scratch) / "cache"
        for chains in args.chains:
            run = airfoil_run(chains, schedule)
            cold = run_job(run, args.data, Path(scratch) / "cold.nc", cache, args.threads)
            warm = run_job(run, args.data, Path(scratch) / "warm.nc", cache, args.threads)
            mclmc = warm["warmup_seconds"] + warm["sampling_seconds"]
            measured[chains] = warm
            print(f"{chains:7d} {cold['wall']:8.1f} {cold['compile_seconds']:12.1f} {warm['wall']:8.1f} "
                  f"{warm['compile_seconds']:12.1f} {warm['warmstart_seconds']:12.1f} {mclmc:8.1f} "
                  f"{warm['grad_evals'] / mclmc:13.4g} {1000 * warm['wall'] / chains:9.1f}", flush=True)
    chains = max(measured)
    job = measured[chains]
    scale = FULL_RUN_CHAINS / chains
    warmstart = job["warmstart_seconds"] / max(job["epochs"], 1) * PAPER["max_epochs"] * scale
    steps = schedule["warmup_steps"] + schedule["steps"]
    mclmc = (job["warmup_seconds"] + job["sampling_seconds"]) / steps * (PAPER["warmup_steps"] + PAPER["steps"])
    mclmc *= scale
    predictive = job["predictive_seconds"] * (PAPER["steps"] / PAPER["thin"]) / (schedule["steps"] / schedule["thin"])
    predictive *= scale
    total = (warmstart + mclmc + predictive) / 60
    import jax

    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    print(f"\nprojected full airfoil run ({FULL_RUN_CHAINS:,} chains x 1,000 draws, paper schedule) on {device}, "
          f"from the {chains}-chain job x {scale:g}: warm start {warmstart / 60:.1f} min, MCLMC {mclmc / 60:.1f} min, "
          f"predictive {predictive / 60:.1f} min, total {total:.1f} min (target <= {TARGET_MINUTES:.0f} min on one "
          f"H200: {'met' if total <= TARGET_MINUTES else 'not met'})")


if __name__ == "__main__":
    main()
