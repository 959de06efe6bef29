"""The sampler-bias study, small: balancedness relative error, verdict, LPPD and cost per sampler.

Samples every run of a study's ``figures.sampler_bias`` set (default: the CPU-sized acceptance
study workflow/studies/sampler_bias_cpu.yaml, airfoil 16-16 ``regr``: MILE at two energy-variance
targets, MAMS and NUTS, one data split and warm start) block by block with the pipeline's own
``sample_block``, merges the blocks, runs the balancedness and predictive analyses and prints, per
run: the relative error of each layer pair with its interval, the layer and unit verdicts, LPPD,
gradient evaluations per chain and wall seconds. It prints figures; it asserts nothing.

    python benchmarks/bench_sampler_bias.py --data results/data/prepared/airfoil/seed-0_std-full.nc
    python benchmarks/bench_sampler_bias.py --configfile config.yaml --data ...   # the default study's runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from interplay.analysis.balancedness import balancedness_table
from interplay.analysis.posterior_files import read_variable
from interplay.analysis.predictive import predictive_metrics
from interplay.config import n_blocks, resolve_runs
from interplay.posterior_io import merge_blocks
from interplay.sampling import sample_block

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default=str(ROOT / "workflow" / "studies" / "sampler_bias_cpu.yaml"))
    parser.add_argument("--data", required=True, help="prepared split of the runs' dataset (prepare rule output)")
    parser.add_argument("--runs", nargs="*", help="a subset of the figure's runs")
    parser.add_argument("--out", help="keep the posteriors here (default: a temporary folder)")
    args = parser.parse_args()
    with open(args.configfile) as fh:
        config = yaml.safe_load(fh)
    runs = resolve_runs(config)
    names = args.runs or config["figures"]["sampler_bias"]["runs"]
    margin = config.get("analysis", {}).get("balancedness", {}).get("margin", 0.05)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        lines = []
        for name in names:
            run = runs[name]
            start = time.perf_counter()
            blocks = []
            for block in range(n_blocks(run)):
                path = out / name / f"block-{block:04d}.nc"
                path.parent.mkdir(parents=True, exist_ok=True)
                sample_block(run, block, args.data, path)
                blocks.append(path)
            merged = out / f"{name}.nc"
            merge_blocks(blocks, merged, drop_diverged=True)
            seconds = time.perf_counter() - start
            table = balancedness_table(merged, run, margin=margin)
            pairs = table[table["kind"] == "layer_pair"].sort_values("layer")
            verdict = dict(zip(table.loc[table["kind"] == "verdict", "family"],
                               table.loc[table["kind"] == "verdict", "verdict"]))
            lppd = predictive_metrics(merged, run).set_index("metric").loc["lppd"]
            grads = read_variable(merged, "sample_stats", "n_grad_evals").astype(float)
            warm = read_variable(merged, "sample_stats", "warmstart_grad_evals").astype(float)
            errors = ", ".join(f"{int(p.layer) + 1}-{int(p.layer) + 2}: {p.rel_error:+.1%} "
                               f"[{p.rel_error_lo:+.1%}, {p.rel_error_hi:+.1%}]" for p in pairs.itertuples())
            line = (f"{name:<22} {run['sampler']['kind']:<5} chains {int(pairs['n_chains'].iloc[0]):>3} | {errors} | "
                    f"layer {verdict.get('layer_pair')}, units {verdict.get('neuron')} | LPPD {lppd['value']:.3f} "
                    f"± {lppd['mc_se']:.3f} | grad evals/chain {np.mean(grads + np.nan_to_num(warm)):.3g} | "
                    f"{seconds:.0f} s")
            print(line, flush=True)
            lines.append(line)
        print("\nsampler bias (relative error per layer pair [family-wise interval], verdicts at margin "
              f"{margin:.0%}):")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
