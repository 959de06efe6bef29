"""The paper's single-fit UCI baselines on airfoil: mean-field VI and last-layer Laplace, one fit per seed.

Runs `sample_block` on the airfoil split of each seed (d-16-16-16-1, the resolved settings of the
study's `uci-single` sweep: `config.yaml` by default, `--config workflow/studies/paper.yaml` for the
paper's), and prints per run the wall-clock seconds, the test LPPD (mean log predictive density, on the
standardised scale) and the RMSE of the predictive mean. Needs the UCI mirror ($INTERPLAY_DATA_MIRROR).

    INTERPLAY_DATA_MIRROR=/path/to/uci .venv/bin/python benchmarks/bench_baselines.py [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from interplay.config import load_config, resolve_runs
from interplay.data import prepare_split
from interplay.posterior_io import open_posterior
from interplay.sampling import sample_block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--dataset", default="airfoil")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kinds", nargs="+", default=["mfvi", "laplace"])
    args = parser.parse_args()
    mirror = os.environ.get("INTERPLAY_DATA_MIRROR")
    if not mirror:
        raise SystemExit("set INTERPLAY_DATA_MIRROR to a directory holding the study tables (airfoil.data, ...)")
    runs = resolve_runs(load_config(args.config))
    print(f"{'run':36s} {'hidden':>10s} {'chains':>6s} {'seconds':>8s} {'LPPD':>8s} {'RMSE':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data = prepare_split(Path(mirror) / f"{args.dataset}.data", Path(tmp) / f"seed-{seed}.nc",
                                 dataset=args.dataset, seed=seed)
            for kind in args.kinds:
                name = f"uci-{args.dataset}-{kind}-seed{seed}"
                if name not in runs:
                    raise SystemExit(f"{args.config} has no run {name!r} (the uci-single sweep's names)")
                run = runs[name]
                out = Path(tmp) / f"{name}.nc"
                start = time.perf_counter()
                sample_block(run, 0, data, out)
                seconds = time.perf_counter() - start
                predictive = open_posterior(out)["predictive"]
                density = predictive["log_pred_density"].values  # (chain, test_point): pool the chains
                lppd = float(np.mean(logsumexp(density, axis=0) - np.log(density.shape[0])))
                rmse = float(np.sqrt(((predictive["pred_mean"].mean("chain") - predictive["y_test"]) ** 2).mean()))
                hidden = "-".join(map(str, run["model"]["hidden"]))
                print(f"{name:36s} {hidden:>10s} {run['sampler']['chains']:6d} {seconds:8.1f} {lppd:8.3f} {rmse:7.3f}")


if __name__ == "__main__":
    main()
