"""Benchmark of the streaming analyses: peak memory (RSS) and throughput on a large posterior file.

Writes a synthetic posterior of at least --size-gb GB in the DESIGN.md layout (exact prior draws of
an 8-16-16-16-16-1 ReLU net, chunked by chain, zlib-compressed, written one chain block at a time),
plus a 1-M-1 identity net of --identity-gb GB for the reallocation analysis, then runs each analysis
in its own subprocess and prints its wall time, peak RSS and throughput (GB/s of file, samples/s).

    python benchmarks/bench_analysis.py --size-gb 1 --dir /tmp/bench
    python benchmarks/bench_analysis.py --size-gb 10 --dir /tmp/bench --keep

Peak RSS is ru_maxrss of the process that ran one analysis (Python, numpy, netCDF4 and the
imported libraries included); the target is <= 2 GB, independent of the file size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from interplay.testing.posteriors import layer_widths, make_run, write_streaming_posterior

N_IN, HIDDEN, N_OUT = 8, [16, 16, 16, 16], 1
DRAWS, BLOCK_CHAINS, N_TEST, N_DIAG = 1000, 16, 200, 16
IDENTITY_M = 16
ANALYSES = ("balancedness", "conformity", "predictive", "cumulative_lppd", "diagnostics")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


COMPLEVEL = 1  # zlib level of the synthetic files (0: uncompressed; set by --complevel)


def _mlp_writer(path: Path, n_chains: int, seed: int) -> Path:
    widths = layer_widths(N_IN, HIDDEN, N_OUT)
    run = make_run("bench", hidden=HIDDEN, chains=n_chains, scale=1.0)
    rng = np.random.default_rng(seed)

    def draws(first, n):
        out = {}
        for layer in range(len(widths) - 1):
            shape = (n, DRAWS, widths[layer], widths[layer + 1])
            out[f"kernel_{layer}"] = rng.standard_normal(shape, dtype=np.float32)
            out[f"bias_{layer}"] = rng.standard_normal((n, DRAWS, widths[layer + 1]), dtype=np.float32)
        return out

    def predictive(first, n):
        return {"log_pred_density": rng.normal(-1.0, 0.5, size=(n, N_TEST)),
                "pred_mean": rng.normal(size=(n, N_TEST)), "pit": rng.uniform(size=(n, N_TEST)),
                "pred_draws": rng.normal(size=(n, DRAWS, N_DIAG))}

    return write_streaming_posterior(path, run, widths, n_chains, DRAWS, draws, block_chains=BLOCK_CHAINS,
                                     n_test=N_TEST, n_diag=N_DIAG, predictive_block=predictive,
                                     complevel=COMPLEVEL)


def _identity_writer(path: Path, n_chains: int, seed: int) -> Path:
    widths = [1, IDENTITY_M, 1]
    run = make_run("bench-identity", hidden=[IDENTITY_M], activation="identity", bias=False, chains=n_chains)
    rng = np.random.default_rng(seed)

    def draws(first, n):
        return {"kernel_0": rng.standard_normal((n, DRAWS, 1, IDENTITY_M), dtype=np.float32),
                "kernel_1": rng.standard_normal((n, DRAWS, IDENTITY_M, 1), dtype=np.float32)}

    return write_streaming_posterior(path, run, widths, n_chains, DRAWS, draws, block_chains=256, n_test=N_TEST,
                                     n_diag=N_DIAG, complevel=COMPLEVEL)


def write_at_least(writer, path: Path, size_gb: float, seed: int, block: int) -> tuple[Path, float]:
    """Write a pilot block to measure compressed bytes per chain, then the full file; returns (path, s)."""
    pilot = path.with_name(path.stem + "-pilot.nc")
    writer(pilot, block, seed + 1)
    per_chain = pilot.stat().st_size / block
    pilot.unlink()
    n_chains = max(block, math.ceil(size_gb * 1e9 / per_chain / block) * block)
    start = time.perf_counter()
    writer(path, n_chains, seed)
    return path, time.perf_counter() - start


def run_one(name: str, posterior: Path, out_dir: Path) -> dict:
    """Run one analysis in this process; report its time and this process's peak RSS."""
    from interplay.analysis import ANALYSES as ENTRY_POINTS
    from interplay.analysis.posterior_files import posterior_counts, read_run_config

    run = read_run_config(posterior)
    start = time.perf_counter()
    ENTRY_POINTS[name](posterior, out_dir / f"{name}.csv", run)
    seconds = time.perf_counter() - start
    chains, draws = posterior_counts(posterior)
    size = posterior.stat().st_size
    return {"analysis": name, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "file_gb": size / 1e9,
            "gb_per_s": size / 1e9 / seconds, "samples": chains * draws, "samples_per_s": chains * draws / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="minimum size of the MLP posterior file")
    parser.add_argument("--identity-gb", type=float, default=None, help="size of the 1-M-1 file (default 10%%)")
    parser.add_argument("--dir", type=Path, required=True, help="directory for the files (needs the space)")
    parser.add_argument("--analyses", nargs="*", default=[*ANALYSES, "reallocation"])
    parser.add_argument("--keep", action="store_true", help="keep the files (and reuse existing ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--complevel", type=int, default=1, help="zlib level of the files (0 = uncompressed)")
    parser.add_argument("--run-one", nargs=2, metavar=("ANALYSIS", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    global COMPLEVEL
    COMPLEVEL = args.complevel
    if args.run_one:
        print(json.dumps(run_one(args.run_one[0], Path(args.run_one[1]), args.dir)))
        return 0

    identity_gb = 0.1 * args.size_gb if args.identity_gb is None else args.identity_gb
    tag = f"z{args.complevel}"
    files = {"mlp": (args.dir / f"bench-mlp-{args.size_gb:g}gb-{tag}.nc", _mlp_writer, args.size_gb, BLOCK_CHAINS),
             "identity": (args.dir / f"bench-identity-{identity_gb:g}gb-{tag}.nc", _identity_writer, identity_gb, 256)}
    for key, (path, writer, size, block) in files.items():
        if args.keep and path.exists():
            print(f"reusing {path} ({path.stat().st_size / 1e9:.2f} GB)")
            continue
        _, seconds = write_at_least(writer, path, size, args.seed, block)
        size_gb = path.stat().st_size / 1e9
        print(f"wrote {key} posterior {path}: {size_gb:.2f} GB in {seconds:.0f} s ({size_gb / seconds:.3f} GB/s), "
              f"writer peak RSS so far {peak_rss_mb():.0f} MB", flush=True)

    results = []
    for name in args.analyses:
        path = files["identity" if name == "reallocation" else "mlp"][0]
        cmd = [sys.executable, __file__, "--dir", str(args.dir / "tables"), "--run-one", name, str(path)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if done.returncode:
            print(f"{name} failed:\n{done.stderr[-3000:]}", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{name:16s} {result['file_gb']:6.2f} GB  {result['seconds']:8.1f} s  "
              f"{result['gb_per_s']:6.3f} GB/s  {result['samples_per_s']:10.0f} samples/s  "
              f"peak RSS {result['peak_rss_mb']:6.0f} MB", flush=True)
    if not args.keep:
        for path, *_ in files.values():
            path.unlink(missing_ok=True)
    worst = max((r["peak_rss_mb"] for r in results), default=float("nan"))
    print(f"largest peak RSS over analyses: {worst:.0f} MB (target <= 2048 MB)")
    return 0 if len(results) == len(args.analyses) else 1


if __name__ == "__main__":
    sys.exit(main())
