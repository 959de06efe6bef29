"""A tiny image study through the real Snakefile: scikit-learn's digits are downloaded (the image data path
of Fashion-MNIST and CIFAR-10), decoded and verified, prepared, sampled by adaptive SGHMC with a small CNN,
merged and analysed (predictive with accuracy and calibration, cumulative LPPD, balancedness with the
per-filter identity)."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import xarray as xr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_study(project_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=project_root, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (project_root / rel).is_file() and not rel.startswith(("results/", "tests/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project_root / rel, root / rel)
    shutil.copytree(project_root / "tests" / "studies", root / "tests" / "studies")
    # an empty mirror (as a UCI one): digits are not in it and come from the installed scikit-learn
    (root / "mirror").mkdir()
    env = {**os.environ, "INTERPLAY_DATA_MIRROR": str(root / "mirror"), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                           "tests/studies/digits.yaml"], cwd=root, env=env, capture_output=True, text=True,
                          check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return root


def test_digits_study_samples_and_analyses(digits_study):
    results = digits_study / "results"
    prepared = xr.open_dataset(results / "data" / "prepared" / "digits" / "seed-0_std-full.nc")
    assert list(prepared.attrs["image_shape"]) == [8, 8, 1]
    posterior = xr.open_dataset(results / "posteriors" / "digits-sghmc.nc", group="posterior")
    assert posterior["conv_kernel_0"].shape[1:] == (5, 3, 3, 1, 1)
    assert posterior.sizes["chain"] + int(posterior.attrs.get("n_diverged_dropped", 0)) <= 4
    predictive = pd.read_csv(results / "analysis" / "digits-sghmc" / "predictive.csv").set_index("metric")
    assert {"lppd", "accuracy", "ece", "brier"} <= set(predictive.index)
    assert predictive.loc["accuracy", "value"] > 0.2  # ten classes: chance is 0.1
    assert len(pd.read_csv(results / "analysis" / "digits-sghmc" / "cumulative_lppd.csv")) > 0
    balancedness = pd.read_csv(results / "analysis" / "digits-sghmc" / "balancedness.csv")
    filters = balancedness[balancedness["kind"] == "filter"]
    # one 3x3 filter on 8x8 images, padding 2: 10x10 maps read by 8 units: (9 + 1) - 100 * 8
    assert filters["rhs"].tolist() == [10 - 800]
    assert (results / "figures" / "cumulative_lppd.pdf").is_file()
