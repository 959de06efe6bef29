"""End to end through the real Snakefile: a tiny study is sampled, merged, analysed and bundled; the
bundle restores into a directory where Snakemake plans no sampling job and rebuilds equal tables."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import xarray as xr

from interplay import bundle
from interplay.analysis.balancedness import VERDICTS as BALANCEDNESS_VERDICTS
from snakemake_dry_run import dry_run_jobs

pytestmark = pytest.mark.slow


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=root, check=True,
                   capture_output=True)


def snakemake(workdir, *args, mirror):
    env = {**os.environ, "INTERPLAY_DATA_MIRROR": str(mirror), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, check=False, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def finished_study(project_root, mirror_dir, tmp_path_factory):
    """A copy of the project (its tracked and untracked source) in its own git repo, with the tiny study run."""
    root = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=project_root, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (project_root / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project_root / rel, root / rel)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "snapshot")
    snakemake(root, "--configfile", "tests/studies/tiny.yaml", mirror=mirror_dir)
    return root


def test_tiny_study_outputs(finished_study):
    for run in ["tiny-relu", "tiny-tanh"]:
        posterior = xr.open_dataset(finished_study / "results" / "posteriors" / f"{run}.nc", group="posterior")
        assert posterior.sizes["chain"] + int(posterior.attrs.get("n_diverged_dropped", 0)) <= 4
        assert posterior.sizes["draw"] == 4
        table = pd.read_csv(finished_study / "results" / "analysis" / run / "predictive.csv")
        assert len(table) > 0
    balancedness = pd.read_csv(finished_study / "results" / "analysis" / "tiny-relu" / "balancedness.csv")
    # 5-4-2 net with biases: d_0 - d_1 = (5 * 4 + 4) - 4 * 2 per layer pair; (fan_in + 1) - fan_out per neuron
    pair = balancedness[balancedness["family"] == "layer_pair"].dropna(subset=["rhs"])
    neuron = balancedness[balancedness["family"] == "neuron"].dropna(subset=["rhs"])
    assert pair["rhs"].tolist() == [16]
    assert neuron["rhs"].tolist() == [4] * 4
    assert set(balancedness.loc[balancedness["kind"] == "verdict", "verdict"]) <= set(BALANCEDNESS_VERDICTS)


def test_bundle_restore_rebuilds_without_sampling(finished_study, tmp_path, mirror_dir):
    snakemake(finished_study, "bundle", "--configfile", "tests/studies/tiny.yaml", mirror=mirror_dir)
    archives = sorted((finished_study / "results" / "bundles").glob("tiny-*.tar.gz"))
    assert len(archives) == 1
    assert bundle.verify_bundle(archives[0]).ok

    restored = tmp_path / "restored"
    bundle.restore_bundle(archives[0], restored)
    config = ("--configfile", "bundle/config.yaml")
    assert dry_run_jobs(restored, extra_args=config) == {}

    bundled = {p.relative_to(restored): pd.read_csv(p) for p in (restored / "results" / "analysis").rglob("*.csv")}
    assert bundled
    shutil.rmtree(restored / "results" / "analysis")
    jobs = dry_run_jobs(restored, extra_args=config)
    assert jobs and not {"download", "table", "prepare", "sample", "merge"} & set(jobs), jobs
    snakemake(restored, *config, mirror=mirror_dir)
    for rel, table in bundled.items():
        pd.testing.assert_frame_equal(pd.read_csv(restored / rel), table, check_exact=False, rtol=1e-9)
