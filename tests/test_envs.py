"""The cluster environments in envs/ pin exactly the versions of requirements.lock."""

import re

import yaml

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[a-z0-9,\-]+\])?==(\S+)$")


def pins(requirements):
    parsed = {}
    for req in requirements:
        match = PIN.match(req)
        assert match, f"not an exact pin: {req!r}"
        parsed[match.group(1).lower().replace("_", "-")] = match.group(3)
    return parsed


def lock_pins(project_root):
    lines = (project_root / "requirements.lock").read_text().splitlines()
    return pins([line.strip() for line in lines if line.strip() and not line.startswith("#")])


def env_pins(path):
    spec = yaml.safe_load(path.read_text())
    pip_sections = [dep["pip"] for dep in spec["dependencies"] if isinstance(dep, dict)]
    assert len(pip_sections) == 1, f"{path}: expected one pip section"
    return pins(pip_sections[0])


def test_lock_pins_the_core_dependencies(project_root):
    locked = lock_pins(project_root)
    for package in ["snakemake", "jax", "jaxlib", "blackjax", "numpyro", "optax", "xarray", "netcdf4",
                    "seaborn", "scikit-learn", "arviz", "snakemake-executor-plugin-slurm", "xlrd", "openpyxl"]:
        assert package in locked, f"requirements.lock lacks {package}"
    assert locked["snakemake"].startswith("9.")
    assert locked["blackjax"].startswith("1.7.")


def test_envs_match_the_lock(project_root):
    locked = lock_pins(project_root)
    for name in ["cpu", "cuda"]:
        assert env_pins(project_root / "envs" / f"{name}.yaml") == locked, (
            f"envs/{name}.yaml disagrees with requirements.lock: run `python envs/generate.py`"
        )


def test_cuda_env_requests_the_cuda_jax(project_root):
    text = (project_root / "envs" / "cuda.yaml").read_text()
    assert re.search(r"jax\[cuda12\]==", text)
