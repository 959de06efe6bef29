"""The figure stage in the Snakemake DAG (dry runs only, no sampling): a figure whose runs are missing
fails at parse time; one figure's target pulls in only its own runs; after an edit to figure code only
figure jobs rerun; the paper study's dry run lists every figure and sample job."""

import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from interplay import config as study_config
from interplay.figures import FIGURES

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Jobs of the figure stage (workflow/rules/figures.smk) and the default target.
FIGURE_STAGE = {*(f"figure_{name}" for name in FIGURES), "assemble_figures", "verdicts", "run_settings", "all",
                "all_figures"}
# Output kinds in DAG order: a finished study has every file newer than the ones it is made from.
STAGES = [r"results/data/download/", r"results/data/tables/", r"results/data/prepared/", r"results/samples/",
          r"results/posteriors/", r"results/analysis/(?!sweeps/)[^/]+/", r"results/analysis/sweeps/",
          r"results/(analysis/[^/]+\.csv|figures/(?!all\.pdf))", r"results/figures/all\.pdf"]


def snakemake(root, *args, timeout=300):
    result = subprocess.run([*SNAKEMAKE, *args], cwd=root, capture_output=True, text=True, timeout=timeout,
                            check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return result, result.stdout + result.stderr


def dry_run_jobs(root, *args) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run lists."""
    result, text = snakemake(root, "-n", *args)
    assert result.returncode == 0, text
    jobs = []
    for line in text.splitlines():  # job descriptions go to stderr, the summary to stdout
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            jobs.append((header.group(1), []))
        elif jobs and line.startswith("    output: "):
            jobs[-1][1].extend(line.removeprefix("    output: ").split(", "))
    return jobs


def copy_project(project_root, target) -> Path:
    """The workflow, its sources and the default config in a fresh directory (no results)."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(project_root / name, target / name)
    for name in ("workflow", "envs", "src/interplay"):
        shutil.copytree(project_root / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def finish_study(root) -> None:
    """Create every output of the default study with mtimes in DAG order, all newer than the sources."""
    jobs = dry_run_jobs(root)
    past = time.time() - 86_400
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    base = time.time() - 1_000
    for _, outputs in jobs:
        for output in outputs:
            path = root / output
            rank = next(i for i, pattern in enumerate(STAGES) if re.match(pattern, output))
            if output.startswith("results/data/download/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            os.utime(path, (base + 10 * rank, base + 10 * rank))


@pytest.fixture(scope="module")
def project_copy(project_root, tmp_path_factory):
    return copy_project(project_root, tmp_path_factory.mktemp("project"))


def test_a_figure_with_missing_runs_fails_at_parse_time(project_root):
    result, text = snakemake(project_root, "-n", "--config",
                             "figures={bivariate: {under: airfoil-tiny, over: airfoil-over}, lppd_grid: {sweep: nosuch}}")
    assert result.returncode != 0
    assert "figures.bivariate.under: run 'airfoil-tiny' is not in the study" in text
    assert "figures.lppd_grid.sweep: sweep 'nosuch' is not in the study" in text
    assert "Building DAG" not in text  # failed while parsing, before any job was planned


def test_one_figure_builds_only_its_own_ancestors(project_copy):
    config = yaml.safe_load((project_copy / "config.yaml").read_text())
    figure_runs = set(config["figures"]["cumulative_lppd"]["runs"])
    jobs = dry_run_jobs(project_copy, "results/figures/cumulative_lppd.pdf")
    rules = {rule for rule, _ in jobs}
    assert rules == {"download", "table", "prepare", "sample", "merge", "analyse", "figure_cumulative_lppd"}
    sampled = {re.match(r"results/samples/([^/]+)/", out).group(1) for rule, outs in jobs if rule == "sample"
               for out in outs}
    analyses = {out.split("/")[3] for rule, outs in jobs if rule == "analyse" for out in outs}
    analysed = {out.split("/")[2] for rule, outs in jobs if rule == "analyse" for out in outs}
    assert analyses == {"cumulative_lppd.csv"}
    assert sampled == analysed == figure_runs


def test_after_a_figure_code_edit_only_figure_jobs_rerun(project_copy):
    finish_study(project_copy)
    result, text = snakemake(project_copy, "-n")
    assert result.returncode == 0 and "Nothing to be done" in text, text

    os.utime(project_copy / "src/interplay/figures/style.py")  # a style edit
    rules = [rule for rule, _ in dry_run_jobs(project_copy)]
    assert set(rules) <= FIGURE_STAGE, sorted(set(rules) - FIGURE_STAGE)
    config = yaml.safe_load((project_copy / "config.yaml").read_text())
    assert {f"figure_{name}" for name in config["figures"]} | {"assemble_figures"} <= set(rules)
    assert "sample" not in rules and "merge" not in rules

    # an analysis edit reruns analyses and figures, still never sampling
    os.utime(project_copy / "src/interplay/analysis/conformity.py")
    jobs = dry_run_jobs(project_copy)
    rules = {rule for rule, _ in jobs}
    assert any(out.endswith("/conformity.csv") for rule, outs in jobs if rule == "analyse" for out in outs)
    assert "figure_conformity" in rules
    assert not rules & {"download", "table", "prepare", "sample", "merge"}


def test_paper_study_dry_run_lists_every_figure_and_sample_job(project_root):
    started = time.perf_counter()
    result, text = snakemake(project_root, "-n", "--quiet", "rules", "--configfile", "workflow/studies/paper.yaml")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, text
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE)}
    print(f"paper study dry run: {counts.get('total')} jobs in {elapsed:.1f} s")
    paper = yaml.safe_load((project_root / "workflow/studies/paper.yaml").read_text())
    assert set(paper["figures"]) == set(FIGURES)
    for name in FIGURES:
        assert counts.get(f"figure_{name}") == 1, name
    runs = study_config.resolve_runs(study_config.load_config(project_root / "workflow/studies/paper.yaml"))
    expected_blocks = sum(math.ceil(r["sampler"]["chains"] / r["sampler"]["block_size"]) for r in runs.values())
    # a study file replaces the default study: none of config.yaml's small-scale settings may leak in
    assert counts["sample"] == expected_blocks, (
        "the paper study's sample jobs do not match workflow/studies/paper.yaml alone: is config.yaml "
        "(e.g. its block sizes) being laid over it? The Snakefile should load config.yaml only without --configfile")
    assert counts["merge"] == len(runs) and counts["assemble_figures"] == 1 and counts["verdicts"] == 1
    # the paper's scale: 10,000 chains in blocks of 1,000 for the big airfoil runs, 84-run grid, a 48-run benchmark
    # (4 datasets x 3 seeds x MILE, DE and the single-fit MFVI and Laplace baselines)
    assert sum(1 for name in runs if name.startswith("grid-")) == 84
    assert sum(1 for name in runs if name.startswith("uci-")) == 48
    assert runs["airfoil-over"]["sampler"]["chains"] == 10_000


def test_the_report_holds_figures_captions_verdicts_and_settings(project_copy):
    finish_study(project_copy)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))  # stand-in figures: the report embeds whatever PNG is there
    ax.plot([0, 1])
    for png in (project_copy / "results/figures").glob("*.png"):
        fig.savefig(png)
    plt.close(fig)
    for table in ("analysis/verdicts.csv", "analysis/run_settings.csv", "figures/uci_benchmark.csv"):
        (project_copy / "results" / table).write_text("run,verdict\nairfoil-over,holds\n")
    result, text = snakemake(project_copy, "--report", "results/report.html")
    assert result.returncode == 0, text
    html = (project_copy / "results/report.html").read_text()
    config = yaml.safe_load((project_copy / "config.yaml").read_text())
    for name in config["figures"]:
        assert f"{name}.png" in html, name
        caption = (project_copy / "workflow/report" / f"{name}.rst").read_text()
        assert " ".join(caption.split()[:4]) in html, name
    for table, category in (("verdicts.csv", "Balancedness"), ("run_settings.csv", "Run settings")):
        assert table in html and category in html
