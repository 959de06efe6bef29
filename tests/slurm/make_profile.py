"""Write a Snakemake profile that is slurm/config.yaml with tests/slurm/profile-overlay.yaml laid over it.

    python tests/slurm/make_profile.py OUT_DIR   # then: snakemake --profile OUT_DIR ...

Mappings (default-resources, set-resources and each rule's entry) merge key by key, so the test profile
keeps every production setting the overlay does not name (e.g. sample's gpu request).
"""

import sys
from pathlib import Path

import yaml

from interplay.config import deep_merge

HERE = Path(__file__).resolve().parent
PRODUCTION_PROFILE = HERE.parents[1] / "slurm" / "config.yaml"
OVERLAY = HERE / "profile-overlay.yaml"


def write_profile(out_dir: Path, extra: dict | None = None) -> Path:
    """Write OUT_DIR/config.yaml (production profile + test overlay + `extra`); return OUT_DIR."""
    profile = yaml.safe_load(PRODUCTION_PROFILE.read_text())
    profile = deep_merge(profile, yaml.safe_load(OVERLAY.read_text()))
    profile = deep_merge(profile, extra or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/slurm/make_profile.py OUT_DIR")
    print(write_profile(Path(sys.argv[1])) / "config.yaml")
