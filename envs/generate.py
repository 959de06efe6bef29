"""Write envs/cpu.yaml and envs/cuda.yaml from requirements.lock, so cluster environments match the lock.

Run after changing requirements.lock:  python envs/generate.py   (tests/test_envs.py checks they agree).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE.parent / "requirements.lock"

HEADER = """\
# {title}
# Generated from requirements.lock by envs/generate.py; do not edit by hand.
# Use: conda env create -f envs/{name}.yaml && conda activate interplay-{name} && pip install --no-deps -e .
name: interplay-{name}
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def locked_requirements() -> list[str]:
    lines = [line.strip() for line in LOCK.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def render(name: str, title: str, requirements: list[str]) -> str:
    body = "".join(f"      - {req}\n" for req in requirements)
    return HEADER.format(title=title, name=name) + body


def cuda_requirements(requirements: list[str]) -> list[str]:
    """The CPU pins with jax's CUDA 12 extra: the plugin and CUDA wheels follow the pinned jax version."""
    # jax[cuda12] pulls jax-cuda12-plugin and the NVIDIA wheels at exactly the pinned jax version.
    return [req.replace("jax==", "jax[cuda12]==") if req.startswith("jax==") else req for req in requirements]


def main() -> None:
    requirements = locked_requirements()
    (HERE / "cpu.yaml").write_text(render("cpu", "CPU environment (laptop, CPU nodes)", requirements))
    (HERE / "cuda.yaml").write_text(
        render("cuda", "CUDA 12 environment for GPU sampling jobs", cuda_requirements(requirements))
    )


if __name__ == "__main__":
    main()
