"""Memory and time of one sampling job (a chain block), without JAX: for Slurm requests and benchmarks.

`block_memory` adds up, program by program, what a block holds (DESIGN.md, "Memory of a block"); the
workflow asks for `sample_resources`, and benchmarks/bench_memory.py sets each program's figure against
XLA's memory analysis of the compiled program. Data sizes come from the data source
(`data_shape`), so a job's request is known before its data are prepared.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from interplay.config import DEFAULT_CHUNK_STEPS, MAMS_BURN_IN_PHASES, mams_burn_in_plan, n_parameters

FLOAT = 4  # bytes of a float32: parameters, draws, activations on the device
DOUBLE = 8  # bytes of a float64: the block file's predictive and sample-stats arrays
MiB = 2**20


@dataclass(frozen=True)
class DataShape:
    """Sizes of a run's prepared data: inputs, network outputs and the rows of each split."""

    n_inputs: int
    n_outputs: int
    n_train: int
    n_valid: int
    n_test: int


def data_shape(run: Mapping, teachers: Mapping | None = None) -> DataShape:
    """The run's data sizes from its source: the UCI table's rows and columns (pinned by its sha256 in
    `interplay.data.sources`, so the prepared file's split sizes are known exactly, before it exists) or
    the teacher's `in_dim` and `n` (`teachers`: the study's `teachers` section), then the split rule of
    `interplay.data.prepare.split_sizes` and `data.max_train_points`."""
    from interplay.data.images import IMAGE_DATASETS, image_split_sizes
    from interplay.data.prepare import split_sizes
    from interplay.data.sources import DATASETS

    dataset = run["dataset"]
    teachers = teachers or {}
    if dataset in IMAGE_DATASETS:  # the authors' split sizes of an image data set, its classes
        image = IMAGE_DATASETS[dataset]
        n_train, n_valid, n_test = image_split_sizes(image)
        max_train = run.get("data", {}).get("max_train_points")
        n_train = n_train if max_train is None else min(n_train, int(max_train))
        return DataShape(image.n_features, image.n_classes, n_train, n_valid, n_test)
    if dataset in teachers:
        n_inputs, n_rows = int(teachers[dataset]["in_dim"]), int(teachers[dataset]["n"])
    elif dataset in DATASETS:
        source = DATASETS[dataset]
        n_inputs, n_rows = len(source.features), source.n_rows
    else:
        known = sorted({*DATASETS, *teachers})
        raise ValueError(f"run {run.get('name')!r}: unknown dataset {dataset!r}; known: {known}")
    n_train, n_valid, n_test = split_sizes(n_rows)
    max_train = run.get("data", {}).get("max_train_points")
    if max_train is not None:
        n_train = min(n_train, int(max_train))
    likelihood = run["model"]["likelihood"]
    n_outputs = {"regr": 2, "mean_regr": 1}.get(likelihood, N_CLASSES.get(dataset, 2))
    return DataShape(n_inputs, n_outputs, n_train, n_valid, n_test)


# Classes of the classification data sets (the network's outputs under `class`).
N_CLASSES = {"ionosphere": 2}


def n_sampled_parameters(run: Mapping, shape: DataShape) -> int:
    """Floats in one parameter set: the net's weights and biases (`config.n_parameters`) and, for
    `mean_regr` without a fixed `sigma`, the sampled `log_sigma`."""
    model = run["model"]
    log_sigma = model["likelihood"] == "mean_regr" and model.get("sigma") is None
    return n_parameters(run, shape.n_inputs, shape.n_outputs) + int(log_sigma)


# ----------------------------------------------------------------------------- memory of a block

# Host memory of a sampling job before its arrays: Python, JAX and the libraries, the compiled programs
# and XLA compiling them (measured: 0.73-0.9 GB peak RSS of small CPU jobs, VmHWM, tests/test_resources.py). A CUDA
# jaxlib also maps the CUDA libraries and keeps its own host buffers: an allowance, not measured here.
BASE_BYTES = {"cpu": 960 * MiB, "gpu": 2560 * MiB}
# Chains per gradient group and warm-start group when `chain_batch` is unset (interplay.samplers).
CPU_GROUP = 4
# Per training point and chain, floats a log-density gradient keeps (the forward activations it saves and
# their cotangents, about 2 per unit of every layer past the inputs, plus the likelihood's per-point terms;
# fitted to XLA's analysis of the paper's nets, benchmarks/bench_memory.py).
ACTIVATION_FLOATS_PER_UNIT, ACTIVATION_FLOATS_EXTRA = 2, 16
# Per chain in a gradient step: position, momentum and gradient, the step's new ones and scratch.
STATE_COPIES = 15
AUTOCORRELATION_LAGS = 8  # interplay.samplers.autocorrelation.DEFAULT_LAGS
WRITER_CHUNK_BYTES = 64 * MiB  # HDF5 chunk cache and zlib buffers of the block writer


@dataclass(frozen=True)
class BlockMemory:
    """Bytes of one block: `device` per compiled program (warmstart, init, tuning, phase3, sampling,
    predictive; its arguments, outputs and temporaries), `host` per host buffer (draws buffer, predictive
    arrays, block writer), and the job's peaks (`device_peak`: with the arrays that stay live across
    programs; `host_total`: the job's peak RSS on `platform`, where a CPU job's device is its host)."""

    platform: str
    device: dict[str, float]
    host: dict[str, float]
    device_peak: float
    host_total: float


def phase3_tuning_bytes(chains: int, n3: int, params: int) -> float:
    """MCLMC phase 3 (L from the ESS): each chain's streaming autocorrelation state
    (`interplay.samplers.autocorrelation.state_floats` for `levels_for(n3)` levels), as the chunk program's
    argument and result, and two temporaries of its largest field (the lagged products, levels x lags x params) while it
    is updated: O(params) per chain, growing only with log2(n3). (Until the streaming estimator, phase 3
    stored chains x min(n3, 10,000) x min(params, 2,000) floats: this is the one place that said so.)"""
    if n3 < 2:
        return 0.0
    levels = 1 + max(0, math.floor(math.log2(n3 / (2 * AUTOCORRELATION_LAGS))))
    state = (levels * (3 * AUTOCORRELATION_LAGS - 1) + 2) * params
    # the chunk program's input and output states (not donated: a signal mid-chunk saves the input)
    return FLOAT * chains * (2 * state + 2 * levels * AUTOCORRELATION_LAGS * params)


def phase3_steps(warmup_steps: int, phases) -> int:
    """Steps of MCLMC's phase 3, as `interplay.samplers.mclmc.phase_lengths` splits the warmup."""
    n1 = round(warmup_steps * phases[0])
    n2 = min(round(warmup_steps * phases[1]), warmup_steps - n1)
    return warmup_steps - n1 - n2


def activation_bytes(group: int, points: int, units: tuple[int, ...]) -> float:
    """One gradient (or forward pass) of `group` chains over `points` data points of a net with `units`."""
    per_point = ACTIVATION_FLOATS_PER_UNIT * sum(units[1:]) + ACTIVATION_FLOATS_EXTRA
    return FLOAT * group * points * per_point


def _units(run: Mapping, shape: DataShape) -> tuple[int, ...]:
    """Widths of the activations per point: inputs, each convolution's output (flattened), hidden, outputs."""
    from interplay.specs import conv_layers, conv_output_shape

    model = run["model"]
    conv = conv_layers(model.get("conv"))
    maps = [math.prod(conv_output_shape(model["image_shape"], conv[:k + 1])) for k in range(len(conv))]
    return (shape.n_inputs, *maps, *model["hidden"], shape.n_outputs)


def _draws_per_chain(sampler: Mapping) -> int:
    kind = sampler["kind"]
    if kind in ("mile", "mams"):
        block = sampler["mclmc" if kind == "mile" else "mams"]
        return block["steps"] // block["thin"]
    if kind == "nuts":
        return sampler["nuts"]["draws"]
    if kind == "sghmc":
        return sampler["sghmc"]["steps"] // sampler["sghmc"]["thin"]
    if kind in ("mfvi", "laplace"):
        return sampler[kind]["draws"]
    return 1  # de: the warm-start members


def chunk_draws_per_chain(sampler: Mapping, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> int:
    """Draws per chain the sampling program of a chunked kind holds at once (`interplay.samplers.mclmc` /
    `mams`: one chunk of `chunk_steps` steps, in MAMS transitions of at most ``max_integration_steps``)."""
    block = sampler["mclmc" if sampler["kind"] == "mile" else "mams"]
    steps = chunk_steps if sampler["kind"] == "mile" else max(1, chunk_steps // block["max_integration_steps"])
    return max(1, min(block["steps"] // block["thin"], steps // block["thin"]))


def block_memory(run: Mapping, shape: DataShape, platform: str = "cpu",
                 chunk_steps: int = DEFAULT_CHUNK_STEPS) -> BlockMemory:
    """Memory of one block of `run` (its `block_size` chains, or all if fewer) on data of `shape`, with
    the programs laid out for `platform` ("cpu": gradient groups of 4 chains, unless `chain_batch` says
    otherwise; "gpu": all chains at once). MILE and MAMS hold one chunk of `chunk_steps` steps' draws on the
    device while sampling (config `checkpoint.chunk_steps`); every kind's draws then wait on the host."""
    if platform not in BASE_BYTES:
        raise ValueError(f"platform must be one of {sorted(BASE_BYTES)}, got {platform!r}")
    sampler = run["sampler"]
    kind = sampler["kind"]
    chains = min(int(sampler["block_size"]), int(sampler["chains"]))
    params = n_sampled_parameters(run, shape)
    units = _units(run, shape)
    draws_per_chain = _draws_per_chain(sampler)
    default_group = CPU_GROUP if platform == "cpu" else chains
    mcmc = sampler.get({"mile": "mclmc", "mams": "mams", "sghmc": "sghmc"}.get(kind, ""), {})
    grouped = kind in ("mile", "mams", "sghmc")
    group = min(chains, mcmc.get("chain_batch") or default_group) if grouped else chains
    chain_params = FLOAT * chains * params
    draws = chain_params * draws_per_chain
    dense = units[len(units) - len(run["model"]["hidden"]) - 2:]  # the dense kernels' widths (after any conv)
    largest_leaf = FLOAT * chains * draws_per_chain * max(a * b for a, b in itertools.pairwise(dense))
    states = STATE_COPIES * chain_params

    device: dict[str, float] = {}
    if kind not in ("mfvi", "laplace"):  # the warm start: AdamW members in groups, each member's params, moments, best
        width = min(chains, default_group)
        batch = min(sampler["warmstart"]["batch_size"], shape.n_train)
        per_member = FLOAT * (8 * params + 3 * shape.n_train) + activation_bytes(1, batch, units) \
            + FLOAT * shape.n_valid * 2 * max(units)
        device["warmstart"] = chain_params + width * per_member
    # sghmc: minibatch gradients, and each chain's permutation of the training points
    points = min(sampler["sghmc"]["batch_size"], shape.n_train) if kind == "sghmc" else shape.n_train
    gradients = activation_bytes(group, points, units) + (FLOAT * chains * shape.n_train if kind == "sghmc" else 0)
    device["init"] = states / 3 + gradients
    device["tuning"] = states + gradients
    if kind == "mile":
        cfg = sampler["mclmc"]
        n3 = phase3_steps(cfg["warmup_steps"], cfg["phases"])
        device["phase3"] = states + gradients + phase3_tuning_bytes(chains, n3, params)
    if kind == "mams" and sampler["mams"]["burn_in_steps"]:  # MILE's tuner, then its draws for the variances
        tune, steps, thin = mams_burn_in_plan(sampler["mams"]["burn_in_steps"])
        n3 = phase3_steps(tune, MAMS_BURN_IN_PHASES)
        device["phase3"] = states + gradients + max(phase3_tuning_bytes(chains, n3, params),
                                                    2 * chain_params * (steps // thin))
    if kind == "mfvi":  # guide means and scales with their Adam moments, the ELBO of every step
        device["tuning"] = 3 * states + gradients + FLOAT * chains * sampler["mfvi"]["steps"]
    if kind == "laplace" and sampler["laplace"].get("hessian") == "diagonal":
        # a chunk of per-point Jacobians and their squares (samplers.laplace.JACOBIAN_BUDGET floats a chain)
        jacobians = 2 * FLOAT * chains * min(2**24, params * max(shape.n_train, shape.n_test))
        device["tuning"] = states + gradients + jacobians
    # the sampling program's draws (one chunk for the chunked kinds) and a copy of them
    chunked = kind in ("mile", "mams")
    on_device = chain_params * chunk_draws_per_chain(sampler, chunk_steps) if chunked else draws
    device["sampling"] = states + gradients + 2 * on_device
    n_diag = min(run.get("diagnostics", {}).get("pred_draw_points", 16), shape.n_test)
    chunk = max(1, min(chains, 2**24 // max(1, shape.n_test * max(units))))  # sampling.predictive_chunk_size
    piece = draws * chunk / chains
    per_chain_outputs = FLOAT * (shape.n_test * (2 + shape.n_outputs) + draws_per_chain * n_diag)
    # the chunk's draws, their (draw, chain, ...) copy for the scan, activations, outputs
    device["predictive"] = 2 * piece + activation_bytes(chunk, shape.n_test, units) + chunk * per_chain_outputs

    host = {
        "draws buffer": draws,
        # float32 outputs of the predictive program and their float64 copies in the block file
        "predictive arrays": chains * per_chain_outputs * (1 + DOUBLE / FLOAT),
        # netCDF4/HDF5 copy one variable (cast, fill-value mask) before compressing it chunk by chunk
        "block writer": 2 * largest_leaf + WRITER_CHUNK_BYTES,
    }
    # after sampling the draws wait on the host; the predictive takes them to the device a chunk at a time
    device_peak = max(
        device.get("warmstart", 0.0),
        chain_params + max(device[p] for p in ("init", "tuning", "phase3") if p in device),
        chain_params + device["sampling"],
        chain_params + device["predictive"],
    )
    host_arrays = host["predictive arrays"] + host["block writer"]
    if platform == "cpu":  # device buffers are host memory; np.asarray of a CPU array shares its buffer
        filled = draws if chunked else 0.0  # the host buffer the chunks fill while the sampler runs
        host_total = BASE_BYTES["cpu"] + max(device_peak, filled + chain_params + device["sampling"],
                                             draws + chain_params + device["predictive"] + host_arrays)
    else:
        host_total = BASE_BYTES["gpu"] + chain_params + host["draws buffer"] + host_arrays
    return BlockMemory(platform, device, host, device_peak, host_total)


# ----------------------------------------------------------------------------- time of a block

# A pessimistic rate for a block's full-batch gradients on a CPU; GPU jobs finish far inside the limit.
FLOPS_PER_SECOND = 2e9
FLOPS_PER_PARAMETER_AND_POINT = 6  # forward and backward pass of a dense net
MAX_RUNTIME_MINUTES, MIN_RUNTIME_MINUTES = 7 * 24 * 60, 15


def gradient_evaluations(run: Mapping, shape: DataShape) -> int:
    """Full-batch gradient evaluations per chain: the sampler's, and the warm start's minibatch ones
    counted as full-batch (a pessimistic bound)."""
    sampler = run["sampler"]
    kind = sampler["kind"]
    if kind == "mile":
        gradients = 2 * (sampler["mclmc"]["warmup_steps"] + sampler["mclmc"]["steps"])
    elif kind == "mams":  # the MCLMC burn-in, then transitions of up to max_integration_steps, 2 gradients each
        mams = sampler["mams"]
        gradients = 2 * mams["burn_in_steps"] + 2 * mams["max_integration_steps"] * (mams["warmup_steps"]
                                                                                   + mams["steps"])
    elif kind == "nuts":
        gradients = 64 * (sampler["nuts"]["warmup"] + sampler["nuts"]["draws"])
    elif kind == "mfvi":
        gradients = sampler["mfvi"]["steps"]
    elif kind == "laplace":  # full-batch MAP steps
        gradients = sampler["laplace"]["epochs"]
    elif kind == "sghmc":  # minibatch steps, counted as full-batch gradients (at least one)
        sghmc = sampler["sghmc"]
        gradients = max(1, (sghmc["warmup_steps"] + sghmc["steps"]) * sghmc["batch_size"] // max(1, shape.n_train))
    else:
        gradients = 0
    if kind not in ("mfvi", "laplace"):
        warmstart = sampler["warmstart"]
        gradients += warmstart["max_epochs"] * max(1, shape.n_train // warmstart["batch_size"])
    return gradients


def block_runtime_minutes(run: Mapping, shape: DataShape) -> int:
    """A generous time limit: twice the block's gradient FLOPs at `FLOPS_PER_SECOND`, 15 min to 7 days."""
    chains = min(int(run["sampler"]["block_size"]), int(run["sampler"]["chains"]))
    flops = (FLOPS_PER_PARAMETER_AND_POINT * n_sampled_parameters(run, shape) * shape.n_train
             * gradient_evaluations(run, shape) * chains)
    return int(min(MAX_RUNTIME_MINUTES, max(MIN_RUNTIME_MINUTES, 2 * flops / FLOPS_PER_SECOND / 60)))


def sample_resources(run: Mapping, teachers: Mapping | None = None, platform: str = "cpu",
                     chunk_steps: int = DEFAULT_CHUNK_STEPS) -> dict[str, int]:
    """A sampling job's Slurm request: `mem_mb` (MiB, its peak host memory from `block_memory` on
    `platform`, sampling in chunks of `chunk_steps`) and `runtime` (minutes, `block_runtime_minutes`), on the
    run's data (`data_shape`)."""
    shape = data_shape(run, teachers)
    memory = block_memory(run, shape, platform, chunk_steps)
    return {"mem_mb": int(-(-memory.host_total // MiB)), "runtime": block_runtime_minutes(run, shape)}
