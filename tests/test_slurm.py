"""The pipeline on a real Slurm cluster, through the production profile `slurm/config.yaml`; and the profiles'
resource requests (dry run) and the workstation profile's GPU queue (a tiny local workflow), which need no Slurm.

A one-node cluster on localhost (tests/slurm/cluster.sh: munged, slurmctld, slurmd; fake GPUs) runs the tiny
study tests/slurm/study.yaml with the production profile plus the test overlay tests/slurm/profile-overlay.yaml
(partition name, squeue polling, short waits). Needs the Debian packages of .ci/slurm-setup.sh and the UCI
mirror; skips without them, except on CI (CI=true), where a missing piece is an error.

The two Slurm tests share one work directory and run in file order: first a sampling job fails (the workflow must
fail, and no partial block be kept), then the whole study runs, re-running that block cleanly.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from interplay.config import block_ids, load_config, resolve_runs, sample_resources

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEST_LAYER = PROJECT_ROOT / "tests" / "slurm"
CLUSTER_SCRIPT = TEST_LAYER / "cluster.sh"
STUDY = TEST_LAYER / "study.yaml"
# what the cluster script and the test need: Debian packages slurmctld slurmd slurm-client munge
SLURM_BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo")
SNAKEMAKE_TIMEOUT_S = 420


def on_slurm(test):
    """The marks of a test that runs the study on the local Slurm cluster."""
    return pytest.mark.slurm(pytest.mark.mirror(pytest.mark.timeout(900)(test)))


@dataclass(frozen=True)
class Cluster:
    directory: Path
    env: dict[str, str]  # SLURM_CONF, and PATH starting with the cluster's srun shim

    def jobs(self, run_id: str) -> list[dict[str, str]]:
        """`scontrol show job -d` fields of the jobs a Snakemake run (its SLURM run ID) submitted."""
        listing = subprocess.run(["scontrol", "show", "job", "-d", "-o"], env=self.env, check=True,
                                 capture_output=True, text=True, timeout=30).stdout
        jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in listing.splitlines() if line.strip()]
        return [job for job in jobs if job.get("JobName") == run_id]


def _missing_binaries() -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [binary for binary in SLURM_BINARIES if shutil.which(binary, path=path) is None]


@pytest.fixture(scope="module")
def slurm_cluster(mirror_dir) -> Cluster:
    """A one-node Slurm cluster on localhost with 4 CPUs and 2 fake GPUs; its daemons stop at teardown."""
    missing = _missing_binaries()
    if missing:
        reason = (f"Slurm test cluster: {', '.join(missing)} not found; run .ci/slurm-setup.sh "
                  "(Debian packages slurmctld slurmd slurm-client munge)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    # under /tmp, not pytest's tmp_path: munged (the munge user) must reach the socket, and socket paths are short
    directory = Path(tempfile.mkdtemp(prefix="interplay-slurm-", dir="/tmp"))
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    settings = {"SLURM_TEST_CPUS": "4", "SLURM_TEST_GPUS": "2", "SLURM_TEST_PARTITION": "debug", "PATH": path}
    try:
        started = subprocess.run([str(CLUSTER_SCRIPT), "start", str(directory)], check=False,
                                 env={**os.environ, **settings}, capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            pytest.fail(f"the test Slurm cluster did not start:\n{started.stdout}\n{started.stderr}")
        env = {"SLURM_CONF": str(directory / "etc" / "slurm.conf"),
               "PATH": os.pathsep.join([str(directory / "bin"), str(Path(sys.executable).parent), path])}
        yield Cluster(directory, env)
    finally:
        stopped = subprocess.run([str(CLUSTER_SCRIPT), "stop", str(directory)], check=False,
                                 env={**os.environ, **settings}, capture_output=True, text=True, timeout=120)
        if stopped.returncode != 0:
            warnings.warn(f"stopping the test Slurm cluster failed:\n{stopped.stdout}\n{stopped.stderr}",
                          stacklevel=1)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """The work directory both tests run the study in, and the test profile beside it."""
    root = tmp_path_factory.mktemp("slurm-study")
    spec = importlib.util.spec_from_file_location("make_profile", TEST_LAYER / "make_profile.py")
    make_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_profile)
    make_profile.write_profile(root / "profile")
    (root / "work").mkdir()
    return root


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return resolve_runs(load_config(STUDY))


def run_snakemake(cluster: Cluster, study_dir: Path, mirror_dir: Path, *targets: str,
                  env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`snakemake --cores all --profile <test profile>` on the study; (exit code, output, SLURM run ID)."""
    # targets first: after --configfile they would be taken for more config files
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", "all", "--profile", str(study_dir / "profile"),
               "--snakefile", str(PROJECT_ROOT / "Snakefile"), "--directory", str(study_dir / "work"),
               "--configfile", str(STUDY)]
    job_env = {**os.environ, **cluster.env, "INTERPLAY_DATA_MIRROR": str(mirror_dir), "JAX_PLATFORMS": "cpu",
               **(env or {})}
    result = subprocess.run(command, check=False, cwd=PROJECT_ROOT, env=job_env, capture_output=True, text=True,
                            timeout=SNAKEMAKE_TIMEOUT_S)
    output = result.stdout + result.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, f"snakemake did not use the slurm executor:\n{output[-5000:]}"
    return result.returncode, output, run_id.group(1)


def rule_of(job: dict[str, str]) -> str:
    """The Snakemake rule of a Slurm job, from the comment the executor gives it (rule_<name>_wildcards_...)."""
    return re.match(r"rule_(.+?)(_wildcards_.*)?$", job["Comment"]).group(1)


def megabytes(slurm_memory: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([MGT]?)", slurm_memory).groups()
    return int(value) * {"": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]


def minutes(slurm_time: str) -> int:
    days, _, clock = slurm_time.rpartition("-")
    hours, mins, secs = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins + (secs > 0)


@on_slurm
def test_failing_sample_job_fails_the_workflow(slurm_cluster, study_dir, mirror_dir, runs):
    # A JAX platform that does not exist makes the sampling job raise on the node, a stand-in for a broken
    # GPU node; the data jobs before it do not touch JAX and succeed.
    block = study_dir / "work" / "results" / "samples" / "slurm-relu" / "block-0000.nc"
    code, output, run_id = run_snakemake(slurm_cluster, study_dir, mirror_dir,
                                         str(block.relative_to(study_dir / "work")),
                                         env={"JAX_PLATFORMS": "no-such-platform"})

    assert code != 0, f"snakemake succeeded although its sampling job failed:\n{output[-5000:]}"
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", output), output[-5000:]
    assert not block.exists(), "a failed sampling job left its block behind"
    jobs = {rule_of(job): job for job in slurm_cluster.jobs(run_id)}
    assert jobs["sample"]["JobState"] == "FAILED" and jobs["sample"]["ExitCode"] != "0:0"
    assert jobs["prepare"]["JobState"] == "COMPLETED"
    assert "download" not in jobs, "download is a local rule: it must run on the submit host, not on Slurm"


@on_slurm
def test_study_runs_end_to_end_on_slurm(slurm_cluster, study_dir, mirror_dir, runs):
    # every run's posterior and one analysis downstream (all analyses would double the test's time)
    targets = [f"results/posteriors/{name}.nc" for name in runs] + ["results/analysis/slurm-relu/predictive.csv"]
    code, output, run_id = run_snakemake(slurm_cluster, study_dir, mirror_dir, *targets)
    assert code == 0, f"the study failed on Slurm:\n{output[-8000:]}"

    results = study_dir / "work" / "results"
    assert pd.read_csv(results / "analysis" / "slurm-relu" / "predictive.csv").shape[0] > 0
    for name, run in runs.items():
        blocks = block_ids(run)
        assert len(blocks) == 2
        chains_seen = []
        for block in blocks:
            block_file = results / "samples" / name / f"block-{block}.nc"
            posterior = xr.open_dataset(block_file, group="posterior")
            chains_seen += posterior["chain"].values.tolist()
            # the job ran on the fake GPU node without a CUDA JAX: it fell back to the CPU and recorded that
            assert xr.open_dataset(block_file).attrs["device"].startswith("cpu")
        assert chains_seen == list(range(run["sampler"]["chains"]))

        merged_path = results / "posteriors" / f"{name}.nc"
        merged = xr.open_dataset(merged_path, group="posterior")
        attrs = xr.open_dataset(merged_path).attrs
        mclmc = run["sampler"]["mclmc"]
        assert merged.sizes["draw"] == mclmc["steps"] // mclmc["thin"]
        assert merged.sizes["chain"] + int(attrs["n_diverged_dropped"]) == run["sampler"]["chains"]
        assert np.isfinite(merged["kernel_0"].values).all()

    jobs = slurm_cluster.jobs(run_id)
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [(job["Comment"], job["JobState"]) for job in jobs]
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        by_rule.setdefault(rule_of(job), []).append(job)
    # the block that failed in the test before, and every other block, ran as its own GPU job
    assert len(by_rule["sample"]) == sum(len(block_ids(run)) for run in runs.values())
    assert len(by_rule["merge"]) == len(runs)
    assert len(by_rule["analyse"]) == 1  # predictive.csv of slurm-relu
    assert "download" not in by_rule and "all" not in by_rule
    for job in by_rule["sample"]:
        # asked for one GPU (sbatch --gpus=1) and got one from the node's gres
        assert job.get("TresPerJob") == "gres:gpu:1", job
        assert job.get("JOB_GRES") == "gpu:1", job
        # memory and time limit come from the rule's estimate for the run, not from the profile's defaults
        name = re.match(r"rule_sample_wildcards_(.+)_(\d{4})$", job["Comment"]).group(1)
        estimate = sample_resources(runs[name])
        assert megabytes(job["MinMemoryNode"]) == estimate["mem_mb"], job
        assert minutes(job["TimeLimit"]) == estimate["runtime"], job
    for job in by_rule["merge"]:
        assert "gpu" not in job.get("TresPerJob", "") and job.get("JOB_GRES", "(null)") == "(null)", job


# ----------------------------------------------------------------------------- profiles, without Slurm


def dry_run_resources(profile: str, tmp_path: Path) -> dict[str, list[str]]:
    """The `resources:` line of every job a dry run of the study with `profile` plans, by rule."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "all", "--profile", profile, "--dry-run",
         "--snakefile", str(PROJECT_ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(STUDY)],
        check=False, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    planned: dict[str, list[str]] = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout,
                                      flags=re.MULTILINE):
        planned.setdefault(rule, []).append(resources)
    return planned


def resource(resources: str, name: str) -> str | None:
    found = re.search(rf"(?:^|, ){name}=([^,]+)", resources)
    return found.group(1) if found else None


def test_slurm_profile_asks_a_gpu_for_sampling_jobs_only(tmp_path, runs):
    planned = dry_run_resources("slurm", tmp_path)
    assert len(planned["sample"]) == sum(len(block_ids(run)) for run in runs.values())
    for resources in planned["sample"]:
        assert resource(resources, "gpu") == "1" and resource(resources, "cpus_per_gpu") is not None
        assert resource(resources, "slurm_partition") is not None
        # the rule's estimate from the run's size, not the profile's default runtime
        assert int(resource(resources, "runtime")) == sample_resources(runs["slurm-relu"])["runtime"]
    for rule in ("table", "prepare", "merge"):
        for resources in planned[rule]:
            assert resource(resources, "gpu") is None, (rule, resources)
            assert resource(resources, "slurm_partition") != resource(planned["sample"][0], "slurm_partition")
            assert resource(resources, "runtime") is not None and resource(resources, "mem_mb") is not None


WORKSTATION_WORKFLOW = """
rule all:
    input: expand("sample-{i}.txt", i=range(3)), expand("cpu-{i}.txt", i=range(3))

rule sample:
    output: "sample-{i}.txt"
    shell: "date +%s.%N > {output}; sleep 1; date +%s.%N >> {output}"

rule cpu:
    output: "cpu-{i}.txt"
    shell: "date +%s.%N > {output}; sleep 1; date +%s.%N >> {output}"
"""


def test_workstation_profile_runs_sampling_jobs_one_at_a_time(tmp_path):
    # a stand-in workflow whose `sample` rule is what the profile queues for the GPU
    (tmp_path / "Snakefile").write_text(WORKSTATION_WORKFLOW)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/workstation", "--cores", "4",
         "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path)],
        check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def intervals(rule):
        return sorted(tuple(map(float, (tmp_path / f"{rule}-{i}.txt").read_text().split())) for i in range(3))

    samples = intervals("sample")
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(samples)), samples
    # the CPU jobs did run alongside (so 4 cores would have let the sampling jobs overlap, too)
    everything = sorted(samples + intervals("cpu"))
    assert any(next_start < end for (_, end), (next_start, _) in itertools.pairwise(everything)), everything
