"""Project-level checks: the README's commands, CI, `snakemake --lint` and a dry run of the whole DAG."""

import os
import re
import subprocess
import sys

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def readme_commands(project_root):
    blocks = re.findall(r"```bash\n(.*?)```", (project_root / "README.md").read_text(), flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_holds_the_two_commands(project_root):
    commands = readme_commands(project_root)
    study = [c for c in commands if c.startswith("python3 -m venv") and "snakemake --cores all" in c]
    tests = [c for c in commands if c.startswith("python3 -m venv") and c.endswith("pytest")]
    assert len(study) == 1 and len(tests) == 1
    assert "-c requirements.lock" in study[0] and "-c requirements.lock" in tests[0]


def test_ci_runs_the_readme_test_command(project_root):
    test_command = next(c for c in readme_commands(project_root) if c.endswith("pytest"))
    ci_lines = [line.strip() for line in (project_root / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def snakemake(project_root, *args, env=None, timeout=300):
    return subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_lint_is_clean(project_root):
    result = snakemake(project_root, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_dry_run_of_the_default_study(project_root, tmp_path):
    # --forceall: every job of the DAG, whatever is already in results/
    result = snakemake(project_root, "-n", "--forceall", "--quiet", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in ["download", "table", "prepare", "sample", "merge"]:
        assert re.search(rf"^{rule}\s+\d+", result.stdout, flags=re.MULTILINE), f"no {rule} job:\n{result.stdout}"


def test_bad_config_fails_before_any_job(project_root):
    result = snakemake(project_root, "-n", "--config", "sweeps={}", "runs={x: {dataset: airfoil, sampler: {kind: hmc}}}")
    assert result.returncode != 0
    assert "runs.x.sampler.kind: 'hmc' is not allowed" in result.stderr + result.stdout


def test_ruff_is_clean(project_root):
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "workflow/scripts", "benchmarks",
                             "envs"], cwd=project_root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
