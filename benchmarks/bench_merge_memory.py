"""Peak memory of `merge_blocks` for few vs many blocks of the same block size (target: equal within 10%).

Writes synthetic block files of the airfoil network (946 parameters per draw; random float32
draws, one diverged chain per block so the dropping path runs), then merges 4 and 32 of them, each
merge in a fresh subprocess whose peak resident set size during the merge is reported (VmHWM, reset after
the imports via /proc/self/clear_refs), together with the RSS right before the merge.

Example:
    python benchmarks/bench_merge_memory.py --block-chains 16 --draws 100 --blocks 4 32
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_sampling import AIRFOIL_RUN

from interplay.models import ModelSpec, param_shapes
from interplay.posterior_io import write_block

# The sampling benchmark's airfoil net (this script's folder is on sys.path when it runs).
RUN = {**AIRFOIL_RUN, "name": "bench-merge"}
N_TEST, N_DIAG = 301, 16

MERGE_SCRIPT = """
import json, sys, time
from interplay.posterior_io import merge_blocks

def status_kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

paths, out = json.loads(sys.argv[1]), sys.argv[2]
before = status_kib("VmRSS")
try:  # reset the high-water mark, so the peak is the merge's, not the imports'
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
start = time.perf_counter()
summary = merge_blocks(paths, out)
seconds = time.perf_counter() - start
print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "reset": reset, "seconds": seconds,
                  "kept": summary["kept"], "dropped": summary["n_diverged_dropped"]}))
"""


def write_blocks(directory: Path, n_blocks: int, block_chains: int, n_draws: int) -> list[Path]:
    model = ModelSpec.from_run(RUN, in_dim=5)
    rng = np.random.default_rng(0)
    paths = []
    for block in range(n_blocks):
        chains = range(block * block_chains, (block + 1) * block_chains)
        n = block_chains
        draws = {k: rng.normal(size=(n, n_draws, *s)).astype(np.float32)
                 for k, s in param_shapes(model).items()}
        diverged = np.zeros(n, bool)
        diverged[1 % n] = True
        stats = {"step_size": rng.uniform(size=n), "L": rng.uniform(size=n),
                 "energy_variance": rng.uniform(size=n), "diverged": diverged,
                 "warmstart_val_loss": rng.normal(size=n), "warmup_seconds": np.ones(n),
                 "sampling_seconds": np.ones(n), "n_grad_evals": np.full(n, 1000, np.int64)}
        predictive = {"log_pred_density": rng.normal(size=(n, N_TEST)),
                      "pred_mean": rng.normal(size=(n, N_TEST)), "pit": rng.uniform(size=(n, N_TEST)),
                      "pred_draws": rng.normal(size=(n, n_draws, N_DIAG)),
                      "y_test": np.linspace(-2, 2, N_TEST)}
        path = directory / f"block-{block:04d}.nc"
        write_block(path, draws, stats, predictive, model=model, run=RUN, chains=chains)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-chains", type=int, default=16)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 32])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        paths = write_blocks(tmp, max(args.blocks), args.block_chains, args.draws)
        block_mib = paths[0].stat().st_size / 2**20
        print(f"wrote {len(paths)} blocks of {args.block_chains} chains x {args.draws} draws x 946 params "
              f"({block_mib:.1f} MiB each) in {time.perf_counter() - start:.1f} s")
        results = {}
        for n in args.blocks:
            out = tmp / f"merged-{n}.nc"
            proc = subprocess.run(
                [sys.executable, "-c", MERGE_SCRIPT, json.dumps([str(p) for p in paths[:n]]), str(out)],
                check=True, capture_output=True, text=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results[n] = result
            added = (result["peak_kib"] - result["before_kib"]) / 1024
            print(f"{n:3d} blocks: peak RSS {result['peak_kib'] / 1024:7.1f} MiB (before merge "
                  f"{result['before_kib'] / 1024:.1f} MiB, merge adds {added:.1f} MiB); "
                  f"{result['seconds']:.1f} s; "
                  f"merged file {out.stat().st_size / 2**20:.1f} MiB; "
                  f"{result['kept']} chains kept, {result['dropped']} dropped")
            out.unlink()
        low, high = min(args.blocks), max(args.blocks)
        ratio = results[high]["peak_kib"] / results[low]["peak_kib"]
        print(f"peak RSS ratio {high} vs {low} blocks: {ratio:.3f} (target: within 10%, i.e. <= 1.10)")


if __name__ == "__main__":
    main()
