"""What a network and its prior are, without JAX: architecture, parameter leaves, prior scales.

Shared by the sampler (`interplay.models` adds the JAX functions), the posterior files
(`interplay.posterior_io`), the analyses, the study config (`interplay.config`, read when the workflow
is parsed, so nothing here may import JAX) and the data stage (the teacher network).

Parameter leaves: ``kernel_{l}`` of shape ``(units_l, units_{l+1})``, ``bias_{l}`` of shape
``(units_{l+1},)`` when the model has biases, and the scalar ``log_sigma`` for ``mean_regr`` with a
sampled noise scale; layer ``l`` runs from 0 to ``n_layers - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

# Hidden-layer activations, on numpy arrays (the teacher network, the analyses' forward passes);
# `interplay.models.JAX_ACTIVATIONS` has the same functions for the sampler's differentiable network.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    "identity": lambda h: h,
}
# Positively homogeneous activations: the rescaling symmetry (balancedness, reallocation) holds.
HOMOGENEOUS_ACTIVATIONS = ("relu", "identity")
LIKELIHOODS = ("regr", "mean_regr", "class")
BIAS_PRIORS = ("gaussian", "flat")


def per_layer_values(value, n_layers: int, what: str) -> tuple[float, ...]:
    """A positive scalar or one positive value per layer (e.g. prior.scale) -> one float per layer."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n_layers
    if len(values) != n_layers:
        raise ValueError(f"prior {what} needs a scalar or {n_layers} values (one per layer), got {value!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"prior {what} values must be positive finite numbers, got {value!r}")
    return tuple(float(v) for v in values)


def leaf_prior_scales(n_layers: int, *, bias: bool, scale, bias_scale=None, bias_prior: str = "gaussian",
                      log_sigma_scale=None) -> dict[str, float | None]:
    """Prior scale of each leaf, in leaf order (kernel_0, bias_0, kernel_1, ..., log_sigma).

    Kernels of layer l: tau_l from `scale` (scalar or per layer); biases: `bias_scale` (default: the
    kernels' tau), or None for a flat (improper) `bias_prior`; ``log_sigma`` only where
    `log_sigma_scale` is given.
    """
    taus = per_layer_values(scale, n_layers, "scale")
    if bias_prior not in BIAS_PRIORS:
        raise ValueError(f"prior bias must be 'gaussian' or 'flat', got {bias_prior!r}")
    bias_taus = taus if bias_scale is None else per_layer_values(bias_scale, n_layers, "bias_scale")
    scales: dict[str, float | None] = {}
    for layer in range(n_layers):
        scales[f"kernel_{layer}"] = taus[layer]
        if bias:
            scales[f"bias_{layer}"] = None if bias_prior == "flat" else bias_taus[layer]
    if log_sigma_scale is not None:
        scales["log_sigma"] = per_layer_values(log_sigma_scale, 1, "log_sigma_scale")[0]
    return scales


def leaf_layer(name: str) -> int:
    """The layer of a leaf (``kernel_2`` -> 2); -1 for ``log_sigma``."""
    kind, _, layer = name.rpartition("_")
    if kind in ("kernel", "bias") and layer.isdigit():
        return int(layer)
    if name == "log_sigma":
        return -1
    raise ValueError(f"unknown parameter leaf {name!r}")


def leaf_dims(name: str) -> tuple[str, ...]:
    """Dimension names of one leaf (DESIGN.md: ``units_l`` shared between adjacent layers)."""
    layer = leaf_layer(name)
    if name.startswith("kernel_"):
        return (f"units_{layer}", f"units_{layer + 1}")
    if name.startswith("bias_"):
        return (f"units_{layer + 1}",)
    return ()


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and likelihood of a fully connected network (hashable: usable as a jit static)."""

    in_dim: int
    hidden: tuple[int, ...]
    out_dim: int
    activation: str
    bias: bool
    likelihood: str
    sigma: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.in_dim, bool) or not isinstance(self.in_dim, Integral) or self.in_dim < 1:
            raise ValueError(f"model in_dim must be a positive integer, got {self.in_dim!r}")
        if not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1 for w in self.hidden):
            raise ValueError(f"model hidden widths must be positive integers, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"model likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        expected_out = {"regr": 2, "mean_regr": 1}.get(self.likelihood)
        if expected_out is not None and self.out_dim != expected_out:
            raise ValueError(f"likelihood {self.likelihood!r} needs out_dim {expected_out}, got {self.out_dim}")
        if self.likelihood == "class" and self.out_dim < 2:
            raise ValueError(f"likelihood 'class' needs at least 2 classes (out_dim), got {self.out_dim}")
        if self.sigma is not None:
            if self.likelihood != "mean_regr":
                raise ValueError(f"model sigma (a fixed noise scale) is only valid for mean_regr, "
                                 f"not {self.likelihood!r}")
            if not (isinstance(self.sigma, Real) and self.sigma > 0 and math.isfinite(self.sigma)):
                raise ValueError(f"model sigma must be a positive finite number, got {self.sigma!r}")

    @classmethod
    def from_run(cls, run: Mapping, in_dim: int, n_classes: int | None = None) -> ModelSpec:
        """Build from a resolved run dict (``run["model"]``); ``n_classes`` is required for ``class``."""
        try:
            model = run["model"]
            hidden = tuple(int(w) for w in model["hidden"])
            activation = model["activation"]
            likelihood = model["likelihood"]
        except KeyError as err:
            raise KeyError(f"resolved run lacks model setting {err}") from None
        if likelihood == "class":
            if n_classes is None:
                raise ValueError("likelihood 'class' needs n_classes")
            out_dim = int(n_classes)
        else:
            out_dim = {"regr": 2, "mean_regr": 1}.get(likelihood, 1)
        sigma = model.get("sigma")
        return cls(
            in_dim=int(in_dim),
            hidden=hidden,
            out_dim=out_dim,
            activation=activation,
            bias=bool(model.get("bias", True)),
            likelihood=likelihood,
            sigma=None if sigma is None else float(sigma),
        )

    @property
    def n_layers(self) -> int:
        """Number of weight layers (hidden layers + output layer)."""
        return len(self.hidden) + 1

    @property
    def units(self) -> tuple[int, ...]:
        """Widths ``units_0`` (inputs) ... ``units_{n_layers}`` (outputs)."""
        return (self.in_dim, *self.hidden, self.out_dim)

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """(fan_in, fan_out) of each layer's kernel."""
        units = self.units
        return tuple((units[layer], units[layer + 1]) for layer in range(self.n_layers))

    @property
    def samples_log_sigma(self) -> bool:
        """Whether the parameters include a sampled scalar ``log_sigma``."""
        return self.likelihood == "mean_regr" and self.sigma is None


@dataclass(frozen=True)
class PriorSpec:
    """Prior scale of each leaf: ``(name, scale)`` pairs; scale None = flat (improper) prior."""

    leaf_scales: tuple[tuple[str, float | None], ...]

    @property
    def scales(self) -> dict[str, float | None]:
        return dict(self.leaf_scales)

    def scale(self, name: str) -> float | None:
        try:
            return self.scales[name]
        except KeyError:
            raise KeyError(f"prior has no leaf {name!r}; leaves: {list(self.scales)}") from None

    @classmethod
    def from_run(cls, run: Mapping, model: ModelSpec) -> PriorSpec:
        """Build from ``run["prior"]``: scale (tau), bias_scale, bias (gaussian|flat), log_sigma_scale."""
        prior = run.get("prior")
        if prior is None or "scale" not in prior:
            raise KeyError("resolved run lacks prior setting 'scale'")
        return cls.build(
            model,
            scale=prior["scale"],
            bias_scale=prior.get("bias_scale"),
            bias=prior.get("bias", "gaussian"),
            log_sigma_scale=prior.get("log_sigma_scale", 1.0),
        )

    @classmethod
    def build(cls, model: ModelSpec, scale, bias_scale=None, bias: str = "gaussian",
              log_sigma_scale: float = 1.0) -> PriorSpec:
        """Per-leaf scales from tau (scalar or per layer) and the bias settings."""
        scales = leaf_prior_scales(model.n_layers, bias=model.bias, scale=scale, bias_scale=bias_scale,
                                   bias_prior=bias,
                                   log_sigma_scale=log_sigma_scale if model.samples_log_sigma else None)
        return cls(tuple(scales.items()))


def leaf_shapes(units: Sequence[int], *, bias: bool, log_sigma: bool = False) -> dict[str, tuple[int, ...]]:
    """Shape of each leaf of a net with widths `units` (inputs, hidden..., outputs)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(len(units) - 1):
        shapes[f"kernel_{layer}"] = (int(units[layer]), int(units[layer + 1]))
        if bias:
            shapes[f"bias_{layer}"] = (int(units[layer + 1]),)
    if log_sigma:
        shapes["log_sigma"] = ()
    return shapes


def count_params(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Parameters in all leaves of `shapes` together."""
    return sum(math.prod(shape) for shape in shapes.values())


def param_shapes(model: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shape of each parameter leaf (one parameter set, no chain/draw axes)."""
    return leaf_shapes(model.units, bias=model.bias, log_sigma=model.samples_log_sigma)


def param_dims(model: ModelSpec) -> dict[str, tuple[str, ...]]:
    """Dimension names of each leaf (DESIGN.md: ``units_l`` shared between adjacent layers)."""
    return {name: leaf_dims(name) for name in param_shapes(model)}


def n_params(model: ModelSpec) -> int:
    return count_params(param_shapes(model))
