"""Shared test fixtures: project paths and the UCI mirror (../shared/data/uci)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def find_mirror() -> Path | None:
    """The UCI mirror: $INTERPLAY_DATA_MIRROR, else ../shared/data/uci beside the checkout."""
    candidates = [os.environ.get("INTERPLAY_DATA_MIRROR"), PROJECT_ROOT.parent / "shared" / "data" / "uci"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "SHA256SUMS").is_file():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """Path of the UCI mirror; tests that need it skip with a clear reason where it is absent.

    CI always has it; on CI a missing mirror is an error, not a skip.
    """
    mirror = find_mirror()
    if mirror is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the UCI mirror at ../shared/data/uci or $INTERPLAY_DATA_MIRROR")
        pytest.skip("UCI mirror not found: set INTERPLAY_DATA_MIRROR or place it at ../shared/data/uci")
    return mirror
