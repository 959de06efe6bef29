"""The memory and time model of a sampling job (interplay.resources) against real runs and known sizes."""

import json
import subprocess
import sys

import pytest

from interplay import resources
from interplay.config import ConfigError, resolve_runs, sample_resources
from interplay.data import make_teacher_student_table, prepare_split, split_sizes
from interplay.data.sources import DATASETS

TEACHERS = {"teacher_mem": {"in_dim": 5, "hidden": [8], "n": 60}}
TINY_MILE = {"warmstart": {"max_epochs": 3, "batch_size": 16},
             "mclmc": {"warmup_steps": 40, "steps": 20, "thin": 2}}
# Real `sample` jobs whose peak RSS the estimate must cover (and not exceed 1.5-fold): one whose
# memory is the job's fixed cost, one with a long MCLMC phase 3, one dominated by the draws.
JOBS = {
    "fixed-cost": {"model": {"hidden": [4]}, "sampler": {"chains": 2, "block_size": 2, **TINY_MILE}},
    "long-phase3": {"model": {"hidden": [64, 64]}, "sampler": {
        "chains": 8, "block_size": 8, "warmstart": TINY_MILE["warmstart"],
        "mclmc": {"warmup_steps": 1000, "phases": [0.05, 0.05, 0.9], "steps": 20, "thin": 2}}},
    "draws": {"model": {"hidden": [64, 64]}, "sampler": {
        "chains": 8, "block_size": 8, "warmstart": TINY_MILE["warmstart"],
        "mclmc": {"warmup_steps": 40, "steps": 1500, "thin": 1}}},
}
# Run in a fresh interpreter, as a Snakemake `sample` job is: its peak RSS (ru_maxrss, KiB on Linux).
# The job's own peak RSS: VmHWM of its address space. Not getrusage's ru_maxrss, which Linux carries over
# exec from the forked parent's image (inside a long pytest run that is the test process's size).
PROBE = """
import json, re, sys
from pathlib import Path
from interplay.sampling import sample_block
sample_block(json.loads(sys.argv[1]), 0, sys.argv[2], sys.argv[3])
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"peak_mib": peak_kib / 1024}))
"""


def resolve(run: dict, teachers=TEACHERS) -> dict:
    return resolve_runs({"teachers": teachers, "runs": {"r": run}})["r"]


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    table = make_teacher_student_table(TEACHERS["teacher_mem"], folder / "teacher_mem.data")
    return prepare_split(table, folder / "prepared.nc", dataset="teacher_mem", seed=0)


def test_data_shape_is_the_prepared_split(teacher_data):
    import xarray as xr

    shape = resources.data_shape(resolve({"dataset": "teacher_mem"}), TEACHERS)
    with xr.open_dataset(teacher_data) as ds:
        counts = {split: int((ds["split"].values == split).sum()) for split in ("train", "valid", "test")}
        assert shape.n_inputs == ds.sizes["feature"] == 5
    assert (shape.n_train, shape.n_valid, shape.n_test) == (counts["train"], counts["valid"], counts["test"])
    assert shape.n_outputs == 2  # regr: mean and log sigma


def test_data_shape_of_the_paper_data_sets():
    # split_sizes' docstring gives the authors' splits; the inputs are the tables' feature columns
    expected = {"airfoil": (5, 1052, 150, 301), "bikesharing": (12, 12165, 1738, 3476),
                "ionosphere": (33, 245, 35, 71), "concrete": (8, 721, 102, 207)}
    for dataset, sizes in expected.items():
        likelihood = "class" if DATASETS[dataset].task == "classification" else "regr"
        shape = resources.data_shape(resolve({"dataset": dataset, "model": {"likelihood": likelihood}}))
        assert (shape.n_inputs, shape.n_train, shape.n_valid, shape.n_test) == sizes, dataset
        assert shape.n_outputs == 2
    capped = resolve({"dataset": "synthetic_regression_1x", "data": {"max_train_points": 200},
                      "model": {"likelihood": "mean_regr"}})
    assert resources.data_shape(capped) == resources.DataShape(1, 1, 200, *split_sizes(1000)[1:])
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        resources.data_shape({"name": "x", "dataset": "nope", "model": {"likelihood": "regr"}})


def test_parameter_count_of_the_paper_nets():
    airfoil = resolve({"dataset": "airfoil", "model": {"hidden": [16, 16, 16, 16]}})
    assert resources.n_sampled_parameters(airfoil, resources.data_shape(airfoil)) == 5 * 16 + 16 + 3 * 272 + 34
    under = resolve({"dataset": "airfoil", "model": {"hidden": [3], "likelihood": "mean_regr"}})
    assert resources.n_sampled_parameters(under, resources.data_shape(under)) == 5 * 3 + 3 + 3 + 1 + 1


def test_phase3_term_is_the_streaming_autocorrelation_state():
    from interplay.samplers import autocorrelation

    # 10 chains, 946 parameters, the paper's 5,000 phase-3 steps: each chain's state as the chunk program's
    # argument and result, two products temporaries
    levels = autocorrelation.levels_for(5000)
    state = autocorrelation.state_floats(946, levels)
    assert resources.AUTOCORRELATION_LAGS == autocorrelation.DEFAULT_LAGS
    assert resources.phase3_tuning_bytes(10, 5000, 946) == 4 * 10 * (2 * state + 2 * levels * 8 * 946)
    # O(params): ten times the steps adds a few ladder levels, not ten times the memory
    assert resources.phase3_tuning_bytes(10, 50000, 946) < 1.5 * resources.phase3_tuning_bytes(10, 5000, 946)
    assert resources.phase3_tuning_bytes(5, 1, 946) == 0
    assert resources.phase3_steps(50000, (0.8, 0.1, 0.1)) == 5000


def test_estimate_follows_the_data_size():
    # more training points: more time, and bigger gradients (all 1,000 chains at once on a GPU)
    full = resolve({"dataset": "bikesharing", "sampler": {"chains": 1000, "block_size": 1000}})
    capped = resolve({"dataset": "bikesharing", "data": {"max_train_points": 1000},
                      "sampler": {"chains": 1000, "block_size": 1000}})
    assert sample_resources(full)["runtime"] > sample_resources(capped)["runtime"]
    peaks = [resources.block_memory(run, resources.data_shape(run), "gpu").device["tuning"] for run in (full, capped)]
    assert peaks[0] > 10 * peaks[1]
    # more inputs, more parameters: a bigger phase-3 trace and bigger draws
    airfoil, ionosphere = resolve({"dataset": "airfoil"}), resolve({"dataset": "ionosphere", "model": {"likelihood": "class"}})
    assert sample_resources(ionosphere)["mem_mb"] > sample_resources(airfoil)["mem_mb"]
    # the paper's 1,000-chain airfoil block: its draws alone are 1000 x 1000 x 946 floats (~3.8 GB)
    paper = resolve({"dataset": "airfoil", "model": {"hidden": [16, 16, 16, 16]},
                     "sampler": {"chains": 10000, "block_size": 1000}})
    assert sample_resources(paper)["mem_mb"] > 2 * 1000 * 1000 * 946 * 4 / 2**20
    with pytest.raises(ValueError, match="platform must be one of"):
        sample_resources(paper, platform="tpu")
    with pytest.raises(ConfigError):
        resolve({"dataset": "teacher_nope"})


def test_chunked_samplers_hold_one_chunk_of_draws_on_the_device():
    # MILE and MAMS sample in chunks (config checkpoint.chunk_steps): ten times the draws grow the host buffer
    # tenfold, not the sampling program; NUTS keeps all its draws in its program
    def memory(kind, block, steps, chunk_steps=1000):
        run = resolve({"dataset": "airfoil", "sampler": {"kind": kind, "chains": 1000, "block_size": 1000,
                                                         block: {"steps": steps, "thin": 10}}})
        return resources.block_memory(run, resources.data_shape(run), "gpu", chunk_steps)

    for kind, block in (("mile", "mclmc"), ("mams", "mams")):
        short, long = memory(kind, block, 10_000), memory(kind, block, 100_000)
        assert long.device["sampling"] == short.device["sampling"]
        assert long.host["draws buffer"] == 10 * short.host["draws buffer"]
    mile = memory("mile", "mclmc", 10_000)
    assert memory("mile", "mclmc", 10_000, chunk_steps=2000).device["sampling"] > mile.device["sampling"]
    assert resources.chunk_draws_per_chain(resolve({"dataset": "airfoil"})["sampler"], 1000) == 100
    nuts = resolve({"dataset": "airfoil", "sampler": {"kind": "nuts", "chains": 4, "block_size": 4,
                                                      "nuts": {"draws": 1000}}})
    draws = 4 * 1000 * 4 * resources.n_sampled_parameters(nuts, resources.data_shape(nuts))
    assert resources.block_memory(nuts, resources.data_shape(nuts), "gpu").device["sampling"] > 2 * draws


@pytest.mark.parametrize("job", sorted(JOBS))
def test_estimate_covers_the_measured_peak_rss(job, teacher_data, tmp_path):
    run = resolve({"dataset": "teacher_mem", **JOBS[job]})
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(run), str(teacher_data), str(tmp_path / "block.nc")],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
    estimate = sample_resources(run, TEACHERS)["mem_mb"]
    print(f"{job}: measured peak RSS {measured:.0f} MiB, estimate {estimate} MiB ({estimate / measured:.2f}x)")
    assert measured <= estimate <= 1.5 * measured, (job, measured, estimate)
