"""Memory of one sampling block: XLA's analysis of the compiled programs against interplay.resources.

For the paper's nets (airfoil 5-16-16-16-16-2 `regr`, bikesharing 12-16-16-16-16-2 `regr`, ionosphere
33-16-16-16-16-2 `class`; workflow/studies/paper.yaml) and the paper's MILE schedule (50,000 tuning steps,
10,000 sampling steps, thin 10), at 1,000 and 10,000 chains per block, it lowers every program of a `mile`
block with abstract shapes (``jax.ShapeDtypeStruct``: nothing is run or allocated), compiles it on the CPU
and prints XLA's memory analysis (arguments + outputs + temporaries - aliased, MiB) next to the estimate of
`interplay.resources.block_memory` for the same program, then the host memory of the draws buffer and the
block writer, and whether the block fits a 40 GB (A100-40) or 80 GB GPU. Every stage is measured by its chunk
program (`interplay.samplers.checkpoint`): the sampling program holds one chunk of draws (config
`checkpoint.chunk_steps`, 1,000 steps: 100 draws at thin 10), the rest wait on the host.

The programs are laid out as on a GPU: every chain's gradients in one group (``chain_batch`` = all chains)
and the warm start's members all trained together. Compiling takes about 10 s per program.

    .venv/bin/python benchmarks/bench_memory.py                       # all three nets, 1,000 and 10,000 chains
    .venv/bin/python benchmarks/bench_memory.py --nets airfoil --chains 1000
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from interplay import resources
from interplay.config import resolve_runs
from interplay.models import ModelSpec, PriorSpec, init_params, make_logdensity
from interplay.samplers import autocorrelation, chain_mesh, mclmc
from interplay.samplers.warmstart import ensemble_programs
from interplay.sampling import predictive_chunk_size, predictive_program

NETS = {
    "airfoil": {"dataset": "airfoil", "model": {"hidden": [16, 16, 16, 16], "likelihood": "regr"}},
    "bikesharing": {"dataset": "bikesharing", "model": {"hidden": [16, 16, 16, 16], "likelihood": "regr"}},
    "ionosphere": {"dataset": "ionosphere", "model": {"hidden": [16, 16, 16, 16], "likelihood": "class"}},
}
MiB = 2**20
GPU_BYTES = {"A100-40": 40e9, "80 GB": 80e9}


def paper_run(net: str, chains: int) -> dict:
    """The paper's run of `net` (schema defaults: MILE's schedule) with one block of `chains` chains."""
    spec = {**NETS[net], "sampler": {"chains": chains, "block_size": chains}}
    return resolve_runs({"runs": {net: spec}})[net]


def peak_bytes(compiled) -> int:
    """XLA's peak of a compiled program: arguments + outputs + temporaries, less what outputs alias."""
    stats = compiled.memory_analysis()
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
            - stats.alias_size_in_bytes)


def abstract(tree, chains: int | None = None):
    """ShapeDtypeStructs of `tree`'s leaves, with a leading chain axis of `chains` if given."""
    lead = () if chains is None else (chains,)
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((*lead, *leaf.shape), leaf.dtype), tree)


def xla_block_peaks(run: dict, shape: resources.DataShape) -> dict[str, int]:
    """XLA's peak bytes of each compiled program of a `mile` block of `run` on data of `shape`."""
    n_chain = run["sampler"]["block_size"]
    cfg = run["sampler"]["mclmc"]
    model = ModelSpec.from_run(run, in_dim=shape.n_inputs, n_classes=shape.n_outputs
                               if run["model"]["likelihood"] == "class" else None)
    prior = PriorSpec.from_run(run, model)
    y_dtype = jnp.int32 if model.likelihood == "class" else jnp.float32
    x_train, y_train = jnp.zeros((shape.n_train, shape.n_inputs)), jnp.zeros(shape.n_train, y_dtype)
    keys = jax.ShapeDtypeStruct((n_chain, 2), jnp.uint32)
    peaks = {}

    # The warm start's chunk program, all members in one group (a GPU's layout).
    inputs = [jax.ShapeDtypeStruct((n, shape.n_inputs), jnp.float32) for n in (shape.n_train, shape.n_valid)]
    labels = [jax.ShapeDtypeStruct((n,), y_dtype) for n in (shape.n_train, shape.n_valid)]
    data = (inputs[0], labels[0], inputs[1], labels[1])
    init_groups, advance = ensemble_programs(model, run["sampler"]["warmstart"], shape.n_train)
    grouped_keys = jax.ShapeDtypeStruct((1, n_chain, 2), jnp.uint32)
    state = jax.eval_shape(init_groups, grouped_keys, data)
    counter = jax.ShapeDtypeStruct((), jnp.int32)
    peaks["warmstart"] = peak_bytes(advance.lower(grouped_keys, state, data, counter, counter).compile())

    logdensity = make_logdensity(model, prior, x_train, y_train)
    positions = abstract(jax.eval_shape(lambda key: init_params(model, key), jax.random.PRNGKey(0)), n_chain)
    # A GPU's layout: every chain of the device in one vectorised group (kernel_group_width None).
    statics = {"logdensity_fn": logdensity, "mesh": chain_mesh(n_chain, jax.local_devices()[:1]), "group": None}
    peaks["init"] = peak_bytes(mclmc._init_states.lower(positions, keys, **statics).compile())
    states = jax.eval_shape(lambda p, k: mclmc._init_states(p, k, **statics), positions, keys)
    tuning = mclmc.TuningState(*[jax.ShapeDtypeStruct((n_chain,), jnp.float32)] * 5)
    targets = {k: jax.ShapeDtypeStruct((), jnp.float32)
               for k in ("energy_var_start", "energy_var_end", "trust", "decay_rate")}
    n1, n2, n3 = mclmc.phase_lengths(cfg["warmup_steps"], cfg["phases"])
    dim = resources.n_sampled_parameters(run, shape)
    per_chain = jax.ShapeDtypeStruct((n_chain,), jnp.float32)
    stream = (per_chain, jax.ShapeDtypeStruct((n_chain, 2, dim), jnp.float32))
    reference = jax.ShapeDtypeStruct((n_chain, dim), jnp.float32)
    # every stage's chunk program (its first step and step count are traced arguments)
    peaks["tuning"] = peak_bytes(mclmc._tune_step_size_and_L.lower(
        (states, tuning, stream, reference), keys, targets, counter, counter, n1=n1, n2=n2, **statics).compile())
    levels = autocorrelation.levels_for(n3)
    estimates = jax.eval_shape(lambda s: mclmc._init_estimates(s, levels=levels, mesh=statics["mesh"], group=None),
                               states)
    peaks["phase3"] = peak_bytes(mclmc._tune_L_by_ess.lower(
        (states, estimates, per_chain), tuning, keys, counter, counter, n3=n3, **statics).compile())
    n_draws = cfg["steps"] // cfg["thin"]
    chunk_draws = resources.chunk_draws_per_chain(run["sampler"])
    peaks["sampling"] = peak_bytes(mclmc._sample.lower(
        (states, per_chain, jax.ShapeDtypeStruct((n_chain,), bool)), tuning, keys, counter, counter,
        thin=cfg["thin"], chunk_draws=chunk_draws, **statics).compile())

    n_diag = run["diagnostics"]["pred_draw_points"]
    chunk = predictive_chunk_size(n_chain, shape.n_test, max(model.units))
    program = predictive_program(model, jnp.zeros((shape.n_test, shape.n_inputs)),
                                 jnp.zeros(shape.n_test, y_dtype), n_diag)
    piece = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((chunk, n_draws, *leaf.shape[1:]), leaf.dtype),
                         positions)
    peaks["predictive"] = peak_bytes(program.lower(piece).compile())
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--chains", nargs="+", type=int, default=[1000, 10000])
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}; MiB = 2^20 bytes; "
          "XLA = compiled program's arguments + outputs + temporaries; model = interplay.resources")
    for net in args.nets:
        for n_chain in args.chains:
            run = paper_run(net, n_chain)
            shape = resources.data_shape(run)
            start = time.perf_counter()
            xla = xla_block_peaks(run, shape)
            model = resources.block_memory(run, shape, platform="gpu")
            seconds = time.perf_counter() - start
            print(f"\n{net}: {n_chain} chains, {shape.n_train} training points, "
                  f"{resources.n_sampled_parameters(run, shape)} parameters (compiled in {seconds:.0f} s)")
            print(f"  {'program':<12} {'XLA MiB':>10} {'model MiB':>10} {'model/XLA':>9}")
            for program, measured in xla.items():
                estimate = model.device[program]
                print(f"  {program:<12} {measured / MiB:>10.0f} {estimate / MiB:>10.0f} {estimate / measured:>9.2f}")
            # the block's peak: each program with the arrays that stay live across it (the members); the draws
            # leave the device chunk by chunk and wait on the host
            members = resources.FLOAT * n_chain * resources.n_sampled_parameters(run, shape)
            draws = model.host["draws buffer"]
            device_peak = max(xla["warmstart"], members + max(xla["init"], xla["tuning"], xla["phase3"]),
                              members + xla["sampling"], members + xla["predictive"])
            for name, value in model.host.items():
                print(f"  host {name:<23} {value / MiB:>10.0f} MiB")
            print(f"  block's device peak (XLA programs + live arrays) {device_peak / MiB:.0f} MiB, model "
                  f"{model.device_peak / MiB:.0f} MiB ({model.device_peak / device_peak:.2f}x); host total "
                  f"(model, GPU job) {model.host_total / MiB:.0f} MiB")
            fits = ", ".join(f"{gpu}: {'fits' if device_peak <= size else 'does NOT fit'}"
                             for gpu, size in GPU_BYTES.items())
            print(f"  block on one GPU ({fits}); its draws ({draws / 1e9:.1f} GB) stay on the host, the sampling "
                  f"program holds {resources.chunk_draws_per_chain(run['sampler'])} draws per chain at a time")
            largest = max(xla, key=xla.get)
            print(f"  largest program: {largest} ({xla[largest] / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
