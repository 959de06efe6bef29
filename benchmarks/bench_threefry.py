"""What the unrolled CPU lowering of JAX's threefry hash (`interplay.samplers.prng.unroll_threefry_on_cpu`)
buys with the installed JAX: each figure is measured in a fresh process with JAX's default (rolled-loop)
CPU lowering (``INTERPLAY_THREEFRY=jax``) and with the unrolled one that `interplay.samplers` chooses on
import (the lowering is process-wide and cannot be undone).

Prints, for both lowerings and their ratio:
- the momentum-noise draw alone: split every chain's key and draw one standard normal per parameter,
  --chains chains x 946 parameters (the airfoil net), per step of a jitted scan;
- the MCLMC sampling phase of the airfoil net (5-16-16-16-16-2, random data of the airfoil shape) on
  --chains chains, steps/s timed between the sampler's progress reports (compilation excluded).

Examples:
    python benchmarks/bench_threefry.py                      # 16 chains, 200 steps, one CPU core
    python benchmarks/bench_threefry.py --chains 64 --steps 400
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_PARAMS = 946  # the airfoil net's parameters per chain


def noise_step_seconds(n_chains: int, n_steps: int = 500, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds per step of a scan that splits each chain's key and draws its noise."""
    import jax
    import jax.numpy as jnp

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(n_chains))

    @jax.jit
    def run(keys):
        def step(carry, _):
            keys, total = carry
            split = jax.vmap(lambda key: jax.random.split(key, 2))(keys)
            noise = jax.vmap(lambda key: jax.random.normal(key, (N_PARAMS,)))(split[:, 1])
            return (split[:, 0], total + noise), None

        return jax.lax.scan(step, (keys, jnp.zeros((n_chains, N_PARAMS))), None, length=n_steps)[0][1]

    run(keys).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(keys).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best / n_steps


def measure(lowering: str, n_chains: int, steps: int, warmup: int) -> dict:
    """Both figures in this process, with `lowering` ("default" or "unrolled") in effect."""
    from interplay.samplers import use_cpu_cores  # chooses the lowering ($INTERPLAY_THREEFRY)

    use_cpu_cores(1)  # the sample rule's default: one core per job
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_sampling import AIRFOIL_RUN, load_data, time_sampling

    from interplay.models import ModelSpec, PriorSpec, init_params, make_logdensity
    from interplay.samplers.prng import unroll_threefry_on_cpu
    from interplay.sampling import chain_keys

    unrolled = unroll_threefry_on_cpu()  # idempotent: reports what the import chose
    (x_train, y_train), _, _ = load_data(None)
    model = ModelSpec.from_run(AIRFOIL_RUN, in_dim=x_train.shape[1])
    logdensity = make_logdensity(model, PriorSpec.from_run(AIRFOIL_RUN, model), jnp.asarray(x_train),
                                 jnp.asarray(y_train))
    keys = chain_keys(0, range(n_chains))
    positions = jax.vmap(lambda key: init_params(model, key))(keys)
    cfg = {"warmup_steps": warmup, "phases": [0.9, 0.1, 0.0], "steps": steps, "thin": 10}
    _, _, steps_per_s, _ = time_sampling(logdensity, positions, keys, cfg)
    return {"lowering": lowering, "registered": unrolled, "jax": jax.__version__,
            "noise_us": 1e6 * noise_step_seconds(n_chains), "mclmc_steps_per_s": steps_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200, help="MCLMC sampling steps (a multiple of 10)")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--measure", choices=("default", "unrolled"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.chains, args.steps, args.warmup_steps)))
        return

    results = {}
    for lowering, env_value in (("default", "jax"), ("unrolled", "unrolled")):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "INTERPLAY_THREEFRY": env_value}
        out = subprocess.run([sys.executable, __file__, "--measure", lowering, "--chains", str(args.chains),
                              "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)],
                             check=True, capture_output=True, text=True, env=env)
        results[lowering] = json.loads(out.stdout.strip().splitlines()[-1])
    default, unrolled = results["default"], results["unrolled"]
    print(f"JAX {default['jax']} on the CPU, {args.chains} chains; unrolled lowering registered: "
          f"{unrolled['registered']} (and in the default run: {default['registered']})")
    print(f"noise draw per step ({args.chains} x {N_PARAMS} normals): default {default['noise_us']:.0f} us, "
          f"unrolled {unrolled['noise_us']:.0f} us -> {default['noise_us'] / unrolled['noise_us']:.2f}x")
    print(f"MCLMC sampling, airfoil net: default {default['mclmc_steps_per_s']:.1f} steps/s, unrolled "
          f"{unrolled['mclmc_steps_per_s']:.1f} steps/s -> "
          f"{unrolled['mclmc_steps_per_s'] / default['mclmc_steps_per_s']:.3f}x")


if __name__ == "__main__":
    main()
