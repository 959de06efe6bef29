"""JAX's persistent compilation cache for sampling jobs (interplay.compilation_cache): where it lives, that it
is used, that it never changes a block's arrays, and that bundles leave it out."""

import copy
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from interplay import bundle
from interplay.compilation_cache import (
    DEFAULT_DIR,
    CompileTimes,
    cache_folder,
    host_tag,
    parse_summary,
)
from interplay.config import ConfigError, validate_config
from test_sampling_blocks import RUN, comparable, write_prepared

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\n"
# A fresh interpreter per job, as Snakemake runs `sample` (the cache must be set before anything compiles).
JOB = """
import json, sys
from interplay.compilation_cache import CompileTimes, enable_compilation_cache
settings, run, step_progress = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[5] == "steps"
enable_compilation_cache(settings)
from interplay.sampling import sample_block
with CompileTimes() as times:
    sample_block(run, 0, sys.argv[3], sys.argv[4], step_progress=step_progress)
print(times.summary())
"""
# Small and quick to compile: the job's programs are all there (warm start, MCLMC phases, predictive).
TINY = copy.deepcopy(RUN)
TINY["sampler"].update(chains=2, block_size=2)
TINY["sampler"]["warmstart"]["max_epochs"] = 5
TINY["sampler"]["mclmc"].update(warmup_steps=40, steps=20, thin=2)


def test_host_tag_names_machine_and_cpu_features():
    tag = host_tag(X86, machine="x86_64")
    assert tag.startswith("x86_64-") and len(tag) == len("x86_64-") + 12
    assert host_tag(X86.replace("sse2 avx2", "avx2 sse2"), machine="x86_64") == tag  # order does not matter
    assert host_tag(X86.replace(" avx512f", ""), machine="x86_64") != tag  # another instruction set
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\n"
    assert host_tag(arm, machine="aarch64") != host_tag(arm.replace(" sve", ""), machine="aarch64")
    assert host_tag() == host_tag()  # this host, from /proc/cpuinfo


def test_cache_folder_from_settings(tmp_path):
    assert cache_folder({"enabled": False, "dir": "x"}, tmp_path) is None
    assert cache_folder({}, tmp_path, tag="t") == (tmp_path / DEFAULT_DIR / "t").resolve()
    assert cache_folder({"dir": "/abs/cache"}, tmp_path, tag="t") == (tmp_path / "/abs/cache" / "t").resolve()
    with pytest.raises(ValueError, match="compilation_cache: unknown key.*'size'"):
        cache_folder({"size": 1}, tmp_path)
    with pytest.raises(ValueError, match="compilation_cache.dir must be a non-empty path"):
        cache_folder({"dir": " "}, tmp_path)


def test_config_defaults_and_errors():
    config = validate_config({})
    assert config["compilation_cache"] == {"enabled": True, "dir": DEFAULT_DIR}
    assert config["sample_progress"] == "phases"
    with pytest.raises(ConfigError, match="compilation_cache"):
        validate_config({"compilation_cache": {"dirr": "x"}})
    with pytest.raises(ConfigError, match="sample_progress"):
        validate_config({"sample_progress": "often"})


def test_compile_times_count_this_process_compilations():
    with CompileTimes() as times:
        jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.123456)(jnp.arange(7.0)).block_until_ready()
    assert times.programs >= 1 and times.compile_seconds > 0 and times.tracing_seconds > 0
    parsed = parse_summary("2026-01-01 INFO interplay: " + times.summary())
    assert parsed["programs"] == times.programs and parsed["cache_hits"] == times.cache_hits == 0
    assert parsed["compile_seconds"] == pytest.approx(times.compile_seconds, abs=0.01)
    assert parse_summary("no figures here") is None
    before = times.programs
    jax.jit(lambda x: x - 0.654321)(jnp.arange(5.0)).block_until_ready()
    assert times.programs == before  # listeners removed on exit


def run_job(settings, data, out, progress="phases"):
    done = subprocess.run([sys.executable, "-c", JOB, json.dumps(settings), json.dumps(TINY), str(data),
                           str(out), progress], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Error reading persistent compilation cache" not in done.stderr
    return parse_summary(done.stdout)


def test_a_warm_cache_loads_every_program_and_changes_no_array(tmp_path):
    data = write_prepared(tmp_path / "prepared.nc")
    settings = {"enabled": True, "dir": str(tmp_path / "cache")}
    cold = run_job(settings, data, tmp_path / "cold.nc")
    entries = list((tmp_path / "cache").glob("*/*-cache"))
    assert len(entries) >= cold["programs"] - cold["cache_hits"] > 0  # every compiled program was written
    warm = run_job(settings, data, tmp_path / "warm.nc")
    assert warm["cache_hits"] == warm["programs"] == cold["programs"]
    assert warm["compile_seconds"] < cold["compile_seconds"]
    # In-program progress (host callbacks: not cacheable) without the cache: the same arrays again.
    steps = run_job({"enabled": False}, data, tmp_path / "steps.nc", progress="steps")
    assert steps["cache_hits"] == 0
    reference = comparable(tmp_path / "cold.nc")
    for other in ("warm.nc", "steps.nc"):
        for group, ds in comparable(tmp_path / other).items():
            xr.testing.assert_identical(ds, reference[group])  # bit for bit
    assert np.isfinite(reference["posterior"]["kernel_0"].values).all()


def test_bundles_leave_the_cache_out(tmp_path):
    results = tmp_path / "results"
    for rel in ("analysis/r/predictive.csv", "data/tables/airfoil.data", ".jax-cache/x86_64-abc/jit_f-0-cache"):
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).write_text("x")
    files = {p.relative_to(results).as_posix() for p in bundle.study_result_files(results, {"r": {"dataset": "airfoil"}})}
    assert files == {"analysis/r/predictive.csv", "data/tables/airfoil.data"}
