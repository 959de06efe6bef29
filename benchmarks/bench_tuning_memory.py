"""MCLMC phase 3: L from the streamed ESS against L from the stored trace, and the memory of each.

On airfoil 16-16 ``regr`` (the full training split, a short warm start and schedule), every chain is tuned
twice from the same warm start and keys: phase 3 streaming every parameter's ESS
(``interplay.samplers.autocorrelation``) and phase 3 storing its trace for BlackJAX's ESS
(``full_trace_ess=True``). Both see identical phase-3 steps, so the L's differ by the estimator only.
Prints both L's per chain and their ratio, then the tuning memory per chain of the streamed state and
of the former stored trace (min(n3, 10,000) x min(params, 2,000) floats) for the paper's nets.
It prints figures; it asserts nothing.

    INTERPLAY_DATA_MIRROR=../shared/data/uci python benchmarks/bench_tuning_memory.py [--warmup 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from interplay.data import load_split, prepare_split
from interplay.models import ModelSpec, PriorSpec, make_logdensity
from interplay.samplers import autocorrelation
from interplay.samplers.mclmc import phase_lengths, run_mclmc
from interplay.samplers.warmstart import train_ensemble
from interplay.sampling import SAMPLER_STREAM, WARMSTART_STREAM, _stream, chain_keys

ROOT = Path(__file__).resolve().parents[1]
RUN = {"model": {"hidden": [16, 16], "activation": "relu", "bias": True, "likelihood": "regr", "sigma": None},
       "prior": {"scale": 1.0, "bias_scale": None, "bias": "gaussian", "log_sigma_scale": 1.0}}
WARMSTART = {"lr": 0.01, "weight_decay": 0.005, "batch_size": 64, "max_epochs": 30, "patience": 10}
# Paper nets (inputs, hidden, outputs incl. regr's log sigma) and the paper's phase 3 (50,000 warmup steps).
PAPER_NETS = {"airfoil 5-16-16-16-16-2": 946, "bikesharing 16-16-16-16 (in 13)": 1074,
              "ionosphere 16-16-16-16 (in 34, 2 classes)": 1410}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10_000, help="MCLMC warmup steps (phase 3: the last 10%%)")
    args = parser.parse_args()
    mirror = Path(os.environ.get("INTERPLAY_DATA_MIRROR", ROOT.parent / "shared" / "data" / "uci"))
    with tempfile.TemporaryDirectory() as tmp:
        path = prepare_split(mirror / "airfoil.data", Path(tmp) / "airfoil.nc", dataset="airfoil", seed=0,
                             standardise="full")
        (x, y), (x_valid, y_valid) = load_split(path, "train"), load_split(path, "valid")
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    model = ModelSpec.from_run(RUN, in_dim=x.shape[1])
    prior = PriorSpec.from_run(RUN, model)
    keys = chain_keys(0, range(args.chains))
    members, _ = train_ensemble(model, prior, x, y, x_valid, y_valid, _stream(keys, WARMSTART_STREAM), WARMSTART)
    logdensity = make_logdensity(model, prior, x, y)
    cfg = {"warmup_steps": args.warmup, "steps": 10, "thin": 1}
    n3 = phase_lengths(args.warmup, (0.8, 0.1, 0.1))[2]
    _, streamed = run_mclmc(logdensity, members, _stream(keys, SAMPLER_STREAM), cfg)
    _, full = run_mclmc(logdensity, members, _stream(keys, SAMPLER_STREAM), cfg, full_trace_ess=True)
    dim = sum(int(np.prod(np.shape(leaf))) for leaf in members.values()) // args.chains
    print(f"airfoil 16-16 regr, {dim} parameters, {args.chains} chains, warmup {args.warmup} (phase 3: {n3} steps)")
    print(f"{'chain':>5} {'step size':>10} {'L streamed':>11} {'L full trace':>13} {'ratio':>6}")
    for c in range(args.chains):
        print(f"{c:>5} {streamed['step_size'][c]:>10.4g} {streamed['L'][c]:>11.4g} {full['L'][c]:>13.4g} "
              f"{streamed['L'][c] / full['L'][c]:>6.3f}")
    ratio = streamed["L"] / full["L"]
    print(f"ratio streamed / full trace: mean {ratio.mean():.3f}, min {ratio.min():.3f}, max {ratio.max():.3f}")
    print("\nphase-3 tuning memory per chain (float32), paper schedule (warmup 50,000: phase 3 = 5,000 steps)")
    for name, params in PAPER_NETS.items():
        for steps in (5_000, 50_000):
            levels = autocorrelation.levels_for(steps)
            stream_mb = 4 * autocorrelation.state_floats(params, levels) / 2**20
            trace_mb = 4 * min(steps, 10_000) * min(params, 2_000) / 2**20
            print(f"  {name}, phase 3 {steps:>6} steps: streamed {stream_mb:6.3f} MB ({levels} levels), "
                  f"former trace {trace_mb:7.2f} MB; per 10,000 chains {stream_mb * 1e4 / 1024:5.2f} GB "
                  f"vs {trace_mb * 1e4 / 1024:6.1f} GB")


if __name__ == "__main__":
    main()
