"""Sampling reruns only when what it reads changes (real Snakemake runs, rerun triggers at their default).

A tiny two-run study is sampled and merged for real; then edits that leave every run's sampling settings
alone (key order, defaults written out, 1 for 1.0, merge-only keys, another sampler kind's settings, figure
keys) must plan no `sample` job, and a real sampling change must plan exactly the blocks of the run it
touches. The params a `sample` job records are `interplay.config.sampling_settings` (sorted JSON)."""

import copy
import os
import re
import subprocess
import sys

import pytest
import yaml

from test_figures_workflow import copy_project

pytestmark = pytest.mark.mirror

STUDY = {
    "study": "rerun",
    "defaults": {
        "dataset": "airfoil",
        "data": {"max_train_points": 64},
        "model": {"hidden": [3]},
        "sampler": {"kind": "de", "chains": 2, "block_size": 1, "warmstart": {"max_epochs": 2}},
        "diagnostics": {"pred_draw_points": 2},
    },
    "runs": {"rt-a": {}, "rt-b": {"prior": {"scale": 0.5}}},
    "figures": {"bivariate": {"under": "rt-a", "over": "rt-b", "bins": 20}},
}
POSTERIORS = ["results/posteriors/rt-a.nc", "results/posteriors/rt-b.nc"]


def snakemake(root, mirror, study, *args):
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    env = {**os.environ, "INTERPLAY_DATA_MIRROR": str(mirror), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "study.yaml"],
                          cwd=root, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def planned(root, mirror, study, *targets) -> dict[str, list[str]]:
    """rule -> outputs of every job a dry run (default rerun triggers) plans."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in snakemake(root, mirror, study, "-n", *targets).splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            rule = header.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.startswith("    output: "):
            jobs[rule].extend(line.removeprefix("    output: ").split(", "))
    return jobs


@pytest.fixture(scope="module")
def sampled(project_root, mirror_dir, tmp_path_factory):
    root = copy_project(project_root, tmp_path_factory.mktemp("rerun"))
    snakemake(root, mirror_dir, STUDY, *POSTERIORS)
    assert planned(root, mirror_dir, STUDY, *POSTERIORS) == {}
    return root


def reordered(tree):
    """The same mapping with every dict's keys in reverse order."""
    if isinstance(tree, dict):
        return {key: reordered(tree[key]) for key in reversed(list(tree))}
    return tree


def reorder_everything(study):
    flipped = reordered(study)
    study.clear()
    study.update(flipped)


def edited(change):
    study = copy.deepcopy(STUDY)
    change(study)
    return study


NO_SAMPLING_CHANGE = {
    "keys reordered": reorder_everything,
    "defaults written out": lambda s: s["runs"]["rt-a"].update(
        prior={"scale": 1, "bias": "gaussian"}, merge={"drop_diverged": True},
        sampler={"seed": 0, "mclmc": {"steps": 10000}}, data={"seed": 0, "standardise": "full"}),
    "merge-only key": lambda s: s["defaults"].update(merge={"drop_diverged": False}),
    "another sampler kind's settings": lambda s: s["defaults"]["sampler"].update(
        mclmc={"steps": 7, "thin": 7}, nuts={"draws": 3}, mfvi={"lr": 0.5}),
    "figure key": lambda s: s["figures"]["bivariate"].update(bins=30),
}


@pytest.mark.parametrize("change", NO_SAMPLING_CHANGE, ids=list(NO_SAMPLING_CHANGE))
def test_edits_that_sampling_does_not_read_plan_no_sample_job(sampled, mirror_dir, change):
    study = edited(NO_SAMPLING_CHANGE[change])
    jobs = planned(sampled, mirror_dir, study)  # the default target: analyses, figures, ...
    assert "sample" not in jobs, jobs["sample"]
    assert not {"download", "table", "prepare"} & set(jobs), jobs
    if change == "merge-only key":
        assert sorted(jobs["merge"]) == POSTERIORS  # merge does see its own setting


def test_a_sampling_change_plans_exactly_the_blocks_of_its_run(sampled, mirror_dir):
    study = edited(lambda s: s["runs"]["rt-b"].update(sampler={"seed": 1}))
    jobs = planned(sampled, mirror_dir, study, *POSTERIORS)
    assert sorted(jobs["sample"]) == ["results/samples/rt-b/block-0000.nc", "results/samples/rt-b/block-0001.nc"]
    assert jobs["merge"] == ["results/posteriors/rt-b.nc"]
    study = edited(lambda s: s["defaults"]["sampler"]["warmstart"].update(lr=0.02))
    assert len(planned(sampled, mirror_dir, study, *POSTERIORS)["sample"]) == 4
