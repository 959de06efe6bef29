"""What a network and its prior are, without JAX: architecture, parameter leaves, prior scales.

Shared by the sampler (`interplay.models` adds the JAX functions), the posterior files
(`interplay.posterior_io`), the analyses, the study config (`interplay.config`, read when the workflow
is parsed, so nothing here may import JAX) and the data stage (the teacher network).

Parameter leaves: ``kernel_{l}`` of shape ``(units_l, units_{l+1})``, ``bias_{l}`` of shape
``(units_{l+1},)`` when the model has biases, and the scalar ``log_sigma`` for ``mean_regr`` with a
sampled noise scale; layer ``l`` runs from 0 to ``n_layers - 1``. A convolutional net (``ModelSpec.conv``)
adds ``conv_kernel_{k}`` of shape ``(kernel, kernel, channels_k, channels_{k+1})`` (HWIO) and
``conv_bias_{k}`` of shape ``(channels_{k+1},)`` for its convolution ``k`` (0 .. n_conv - 1), run before the
dense layers; ``units_0`` is then the flattened output of the last convolution.
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


def conv_leaf_layer(name: str) -> int | None:
    """The convolution of a conv leaf (``conv_kernel_1`` -> 1); None for any other leaf."""
    kind, _, layer = name.rpartition("_")
    if kind in ("conv_kernel", "conv_bias") and layer.isdigit():
        return int(layer)
    return None


def leaf_layer(name: str) -> int:
    """The dense layer of a leaf (``kernel_2`` -> 2); -1 for ``log_sigma`` and the convolutions' leaves
    (`conv_leaf_layer` gives theirs)."""
    kind, _, layer = name.rpartition("_")
    if kind in ("kernel", "bias") and layer.isdigit():
        return int(layer)
    if name == "log_sigma" or conv_leaf_layer(name) is not None:
        return -1
    raise ValueError(f"unknown parameter leaf {name!r}")


def leaf_dims(name: str) -> tuple[str, ...]:
    """Dimension names of one leaf (DESIGN.md: ``units_l`` shared between adjacent dense layers,
    ``channels_k`` between adjacent convolutions)."""
    conv = conv_leaf_layer(name)
    if conv is not None:
        if name.startswith("conv_kernel_"):
            return (f"conv_height_{conv}", f"conv_width_{conv}", f"channels_{conv}", f"channels_{conv + 1}")
        return (f"channels_{conv + 1}",)
    layer = leaf_layer(name)
    if name.startswith("kernel_"):
        return (f"units_{layer}", f"units_{layer + 1}")
    if name.startswith("bias_"):
        return (f"units_{layer + 1}",)
    return ()


@dataclass(frozen=True)
class ConvLayer:
    """One convolution: `filters` output channels, a square `kernel` x `kernel` window, stride 1 and
    `padding` zeros on every side of the image (the authors' FMNIST net: 1 filter, 3 x 3, padding 2),
    followed by the model's activation."""

    filters: int
    kernel: int
    padding: int = 0

    def __post_init__(self) -> None:
        for key in ("filters", "kernel"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"model conv {key} must be a positive integer, got {value!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, Integral) or self.padding < 0:
            raise ValueError(f"model conv padding must be a non-negative integer, got {self.padding!r}")

    def output_size(self, size: int) -> int:
        """Height (or width) of the output of an input of height (width) `size`."""
        return size + 2 * self.padding - self.kernel + 1


def conv_output_shape(image_shape: Sequence[int], conv: Sequence[ConvLayer]) -> tuple[int, int, int]:
    """(height, width, channels) after the convolutions; ValueError when an output would be empty."""
    height, width, channels = (int(n) for n in image_shape)
    for index, layer in enumerate(conv):
        height, width, channels = layer.output_size(height), layer.output_size(width), layer.filters
        if height < 1 or width < 1:
            raise ValueError(f"model conv layer {index} ({layer.kernel}x{layer.kernel}, padding {layer.padding}) "
                             f"leaves no pixels of the {tuple(image_shape)} image")
    return height, width, channels


def conv_leaf_shapes(image_shape: Sequence[int], conv: Sequence[ConvLayer], *,
                     bias: bool) -> dict[str, tuple[int, ...]]:
    """Shapes of the convolutions' leaves: conv_kernel_k (k, k, c_in, c_out) and conv_bias_k (c_out,)."""
    shapes: dict[str, tuple[int, ...]] = {}
    channels = int(image_shape[2])
    for index, layer in enumerate(conv):
        shapes[f"conv_kernel_{index}"] = (layer.kernel, layer.kernel, channels, layer.filters)
        if bias:
            shapes[f"conv_bias_{index}"] = (layer.filters,)
        channels = layer.filters
    return shapes


def conv_layers(specs) -> tuple[ConvLayer, ...]:
    """ConvLayers from config entries ({filters, kernel, padding} mappings) or ConvLayers."""
    layers = []
    for spec in specs or ():
        if isinstance(spec, ConvLayer):
            layers.append(spec)
        else:
            layers.append(ConvLayer(int(spec["filters"]), int(spec["kernel"]), int(spec.get("padding", 0))))
    return tuple(layers)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and likelihood of a network (hashable: usable as a jit static): optional convolutions
    (`conv`, on inputs that are flattened images of `image_shape` (height, width, channels), row-major), then
    fully connected layers."""

    in_dim: int
    hidden: tuple[int, ...]
    out_dim: int
    activation: str
    bias: bool
    likelihood: str
    sigma: float | None = None
    conv: tuple[ConvLayer, ...] = ()
    image_shape: tuple[int, int, int] | None = None

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
        if not all(isinstance(layer, ConvLayer) for layer in self.conv):
            raise ValueError(f"model conv must hold ConvLayer entries, got {self.conv!r}")
        if self.conv and self.image_shape is None:
            raise ValueError("model conv layers need the inputs' image_shape (height, width, channels)")
        if self.image_shape is not None:
            if len(self.image_shape) != 3 or not all(isinstance(n, Integral) and n >= 1 for n in self.image_shape):
                raise ValueError(f"model image_shape must be three positive integers, got {self.image_shape!r}")
            if math.prod(self.image_shape) != self.in_dim:
                raise ValueError(f"model image_shape {tuple(self.image_shape)} has {math.prod(self.image_shape)} "
                                 f"values, but the inputs have {self.in_dim} features")
            conv_output_shape(self.image_shape, self.conv)

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
        image_shape = model.get("image_shape")
        return cls(
            in_dim=int(in_dim),
            hidden=hidden,
            out_dim=out_dim,
            activation=activation,
            bias=bool(model.get("bias", True)),
            likelihood=likelihood,
            sigma=None if sigma is None else float(sigma),
            conv=conv_layers(model.get("conv")),
            image_shape=None if image_shape is None else tuple(int(n) for n in image_shape),
        )

    @property
    def n_layers(self) -> int:
        """Number of dense weight layers (hidden layers + output layer)."""
        return len(self.hidden) + 1

    @property
    def n_conv(self) -> int:
        """Number of convolutions (before the dense layers)."""
        return len(self.conv)

    @property
    def conv_output_shape(self) -> tuple[int, int, int] | None:
        """(height, width, channels) of the last convolution's output; None without convolutions."""
        return conv_output_shape(self.image_shape, self.conv) if self.conv else None

    @property
    def dense_in_dim(self) -> int:
        """Inputs of the first dense layer: the features, or the flattened output of the convolutions."""
        return math.prod(self.conv_output_shape) if self.conv else self.in_dim

    @property
    def units(self) -> tuple[int, ...]:
        """Widths ``units_0`` (the dense part's inputs) ... ``units_{n_layers}`` (outputs)."""
        return (self.dense_in_dim, *self.hidden, self.out_dim)

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
            conv_scale=prior.get("conv_scale"),
        )

    @classmethod
    def build(cls, model: ModelSpec, scale, bias_scale=None, bias: str = "gaussian",
              log_sigma_scale: float = 1.0, conv_scale=None) -> PriorSpec:
        """Per-leaf scales from tau (scalar or per layer) and the bias settings; the convolutions' leaves
        (kernel and bias alike) take `conv_scale` (scalar or one per convolution; default: the first dense
        layer's kernel tau), placed first."""
        scales = leaf_prior_scales(model.n_layers, bias=model.bias, scale=scale, bias_scale=bias_scale,
                                   bias_prior=bias,
                                   log_sigma_scale=log_sigma_scale if model.samples_log_sigma else None)
        conv: dict[str, float | None] = {}
        if model.conv:
            taus = per_layer_values(scales["kernel_0"] if conv_scale is None else conv_scale, model.n_conv,
                                    "conv_scale")
            for index in range(model.n_conv):
                conv[f"conv_kernel_{index}"] = taus[index]
                if model.bias:
                    conv[f"conv_bias_{index}"] = None if bias == "flat" else taus[index]
        return cls(tuple({**conv, **scales}.items()))


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
    """Shape of each parameter leaf (one parameter set, no chain/draw axes): convolutions first."""
    conv = conv_leaf_shapes(model.image_shape, model.conv, bias=model.bias) if model.conv else {}
    return {**conv, **leaf_shapes(model.units, bias=model.bias, log_sigma=model.samples_log_sigma)}


def param_dims(model: ModelSpec) -> dict[str, tuple[str, ...]]:
    """Dimension names of each leaf (DESIGN.md: ``units_l`` shared between adjacent layers)."""
    return {name: leaf_dims(name) for name in param_shapes(model)}


def n_params(model: ModelSpec) -> int:
    return count_params(param_shapes(model))
