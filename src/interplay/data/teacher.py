"""Teacher-student data with a known truth: a random network labels Gaussian inputs."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from interplay.data.atomic import write_bytes_atomic
from interplay.data.errors import DataError
from interplay.data.numbers import format_rows
from interplay.specs import ACTIVATIONS

log = logging.getLogger(__name__)

SPEC_DEFAULTS = {"noise": 0.1, "seed": 0, "activation": "relu"}
SPEC_KEYS = {"in_dim", "hidden", "n", *SPEC_DEFAULTS}


def _positive_int(spec: Mapping, key: str, minimum: int = 1) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"teacher spec: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_spec(spec: Mapping) -> dict:
    """The spec with defaults filled in, or DataError naming the bad key."""
    if not isinstance(spec, Mapping):
        raise DataError(f"teacher spec must be a mapping, got {type(spec).__name__}")
    unknown = set(spec) - SPEC_KEYS
    missing = {"in_dim", "hidden", "n"} - set(spec)
    if unknown or missing:
        raise DataError(f"teacher spec: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    full = {**SPEC_DEFAULTS, **spec}
    _positive_int(full, "in_dim")
    _positive_int(full, "n", minimum=2)
    _positive_int(full, "seed", minimum=0)
    if not isinstance(full["hidden"], (list, tuple)):
        raise DataError(f"teacher spec: hidden must be a list of widths, got {full['hidden']!r}")
    for i, _ in enumerate(full["hidden"]):
        _positive_int({f"hidden[{i}]": full["hidden"][i]}, f"hidden[{i}]")
    noise = full["noise"]
    if (
        isinstance(noise, bool)
        or not isinstance(noise, (int, float))
        or not noise >= 0
        or not np.isfinite(noise)
    ):
        raise DataError(f"teacher spec: noise must be a finite number >= 0, got {noise!r}")
    if full["activation"] not in ACTIVATIONS:
        raise DataError(
            f"teacher spec: activation must be one of {sorted(ACTIVATIONS)}, got {full['activation']!r}"
        )
    return full


def teacher_weights(spec: Mapping, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Kernels of widths [in_dim, *hidden, 1], entries N(0, 1/fan_in); no biases.

    Drawn first from default_rng(seed) (or `rng`), layer by layer, so the truth depends on the seed only.
    """
    spec = check_spec(spec)
    rng = np.random.default_rng(spec["seed"]) if rng is None else rng
    widths = [spec["in_dim"], *spec["hidden"], 1]
    return [
        rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(fan_in, fan_out))
        for fan_in, fan_out in itertools.pairwise(widths)
    ]


def teacher_forward(weights: list[np.ndarray], x: np.ndarray, activation: str = "relu") -> np.ndarray:
    """f(x) of the teacher: activation after every hidden layer, a linear output; shape (n,)."""
    act = ACTIVATIONS[activation]
    h = np.asarray(x, dtype=np.float64)
    for kernel in weights[:-1]:
        h = act(h @ kernel)
    return (h @ weights[-1])[:, 0]


def teacher_student_data(spec: Mapping) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(x, y, weights): x ~ N(0, I), y = f(x) + noise * N(0, 1); weights, x, noise drawn in that order."""
    spec = check_spec(spec)
    rng = np.random.default_rng(spec["seed"])
    weights = teacher_weights(spec, rng)
    x = rng.standard_normal((spec["n"], spec["in_dim"]))
    y = teacher_forward(weights, x, spec["activation"]) + spec["noise"] * rng.standard_normal(spec["n"])
    return x, y, weights


def make_teacher_student_table(spec: Mapping, out_path: str | Path) -> Path:
    """Write teacher-student data as a study-format table (shortest round-trip numbers, target last)."""
    x, y, _ = teacher_student_data(spec)
    rows = np.column_stack([x, y]).tolist()
    write_bytes_atomic(format_rows(rows, "repr").encode("ascii"), out_path)
    log.info("teacher-student table %s: %d rows, %d features", out_path, *x.shape)
    return Path(out_path)
