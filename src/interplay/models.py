"""Fully connected Bayesian neural networks as pure functions of a flat parameter dict.

Parameters are a dict of named leaves (a JAX pytree): ``conv_kernel_{k}`` (HWIO) and ``conv_bias_{k}`` for
the convolutions of a convolutional net (inputs: flattened images, row-major (height, width, channels);
stride 1, zero padding, the activation after each; their output flattened the same way), then ``kernel_{l}`` with shape
``(units_l, units_{l+1})``, ``bias_{l}`` with shape ``(units_{l+1},)`` when the model has
biases, and the scalar ``log_sigma`` for ``mean_regr`` with a sampled noise scale. Layer ``l``
runs from 0 to ``n_layers - 1``; the last one is the output layer. Sampled parameter draws
carry leading ``chain``/``draw`` axes; every function here takes ONE parameter set (vmap it).

Likelihoods (``ModelSpec.likelihood``):

- ``regr``: the network outputs (mean, log sigma) per point; sigma = exp(log sigma) clipped to
  ``[SIGMA_MIN, SIGMA_MAX]`` (heteroscedastic Gaussian).
- ``mean_regr``: the network outputs the mean; the noise scale is either a known constant
  (``sigma``) or one sampled scalar ``log_sigma`` (prior N(0, log_sigma_scale^2)), clipped alike.
- ``class``: the network outputs logits of a categorical (softmax) likelihood.

Priors (``PriorSpec``): weights of layer ``l`` are N(0, tau_l^2), biases N(0, bias_tau_l^2) or
flat (improper, contributes 0 to the log density), ``log_sigma`` N(0, log_sigma_scale^2).

``ModelSpec``, ``PriorSpec`` and the leaf shapes are defined in `interplay.specs` (no JAX there, for the
config, the posterior files and the analyses) and re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from interplay.specs import ModelSpec, PriorSpec, n_params, param_dims, param_shapes

# The network's API in one place (these are defined in interplay.specs, without JAX).
__all__ = [
    "JAX_ACTIVATIONS", "ModelSpec", "Params", "PriorSpec", "flops_per_gradient", "forward", "gaussian_log_density",
    "init_params", "log_prior", "make_logdensity", "n_params", "param_dims", "param_shapes",
    "pointwise_log_likelihood", "predictive_cdf", "predictive_mean", "sample_prior",
]

# The activations of interplay.specs.ACTIVATIONS as JAX functions (jax.nn.relu: gradient 0 at 0).
JAX_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "identity": lambda z: z,
}
SIGMA_MIN = 1e-6
SIGMA_MAX = 1e6
_LOG_SIGMA_MIN = math.log(SIGMA_MIN)
_LOG_SIGMA_MAX = math.log(SIGMA_MAX)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

Params = dict[str, jnp.ndarray]


# ----------------------------------------------------------------------------- cost


def flops_per_gradient(model: ModelSpec, n_points: int) -> int:
    """FLOPs of one full-batch log-density gradient, counted as 3x the forward matmul FLOPs.

    Counting rule: a (n x fan_in) @ (fan_in x fan_out) matmul costs 2 * n * fan_in * fan_out
    FLOPs (multiply + add); the backward pass needs two matmuls of the same size per layer
    (gradients w.r.t. the activations and the kernel), hence 3x. Activations, bias adds, the
    likelihood and the prior are O(n * width) and left out.
    """
    forward = sum(2 * n_points * fan_in * fan_out for fan_in, fan_out in model.layer_shapes)
    return 3 * (forward + conv_forward_flops(model, n_points))


def conv_forward_flops(model: ModelSpec, n_points: int) -> int:
    """Multiply-add FLOPs of the convolutions' forward pass: 2 * n * (output pixels) * k^2 * c_in * c_out each."""
    if not model.conv:
        return 0
    height, width, channels = model.image_shape
    total = 0
    for layer in model.conv:
        height, width = layer.output_size(height), layer.output_size(width)
        total += 2 * n_points * height * width * layer.kernel ** 2 * channels * layer.filters
        channels = layer.filters
    return total


# ----------------------------------------------------------------------------- parameters


def _check_params(model: ModelSpec, params: Mapping[str, jnp.ndarray]) -> None:
    expected = param_shapes(model)
    if set(params) != set(expected):
        raise ValueError(f"parameter leaves {sorted(params)} do not match the model's {sorted(expected)}")


def init_params(model: ModelSpec, key: jax.Array) -> Params:
    """Warm-start initialisation: He normal for ReLU, LeCun normal otherwise; zero biases.

    ``log_sigma`` starts at 0 (sigma = 1, the scale of standardised targets).
    """
    gain = 2.0 if model.activation == "relu" else 1.0
    keys = jax.random.split(key, model.n_layers)
    params: Params = {}
    if model.conv:  # keys of their own: the dense layers' initialisation is that of the same net without them
        conv_keys = jax.random.split(jax.random.fold_in(key, 1_000_003), model.n_conv)
        for index, shape in enumerate(shape for name, shape in param_shapes(model).items()
                                      if name.startswith("conv_kernel_")):
            std = math.sqrt(gain / (shape[0] * shape[1] * shape[2]))
            params[f"conv_kernel_{index}"] = std * jax.random.normal(conv_keys[index], shape)
            if model.bias:
                params[f"conv_bias_{index}"] = jnp.zeros((shape[3],))
    for layer, (fan_in, fan_out) in enumerate(model.layer_shapes):
        std = math.sqrt(gain / fan_in)
        params[f"kernel_{layer}"] = std * jax.random.normal(keys[layer], (fan_in, fan_out))
        if model.bias:
            params[f"bias_{layer}"] = jnp.zeros((fan_out,))
    if model.samples_log_sigma:
        params["log_sigma"] = jnp.zeros(())
    return params


def sample_prior(model: ModelSpec, prior: PriorSpec, key: jax.Array) -> Params:
    """An exact draw from the prior. A flat (improper) leaf has no draw: ValueError."""
    shapes = param_shapes(model)
    scales = prior.scales
    if set(scales) != set(shapes):
        raise ValueError(f"prior leaves {sorted(scales)} do not match the model's {sorted(shapes)}")
    flat = [name for name, scale in scales.items() if scale is None]
    if flat:
        raise ValueError(f"cannot draw from the improper flat prior of {flat}")
    names = sorted(shapes)
    keys = jax.random.split(key, len(names))
    return {name: scales[name] * jax.random.normal(k, shapes[name]) for name, k in zip(names, keys)}


# ----------------------------------------------------------------------------- network


def forward(model: ModelSpec, params: Mapping[str, jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
    """Raw network output, shape (n, out_dim): activation on hidden layers, none on the output."""
    return _forward_units_first(model, params, x).T


def _forward_units_first(model: ModelSpec, params, x) -> jnp.ndarray:
    """Raw network output as (out_dim, n)."""
    return jnp.stack(_output_rows(model, params, x))


def _output_rows(model: ModelSpec, params, x) -> list[jnp.ndarray]:
    """The network's outputs, one (n,) array per output unit.

    Activations are held as (units, n), the data axis last: vmapped over chains, the batched matmuls
    and elementwise ops then stream along the long, contiguous data axis, which made the CPU gradient
    ~1.5x faster than the (n, units) layout (benchmarks/bench_sampling.py). Each output row is its
    own matrix-vector product, so the likelihood's gradient needs no pad-and-add of rows (which XLA
    fused into a slow scalar loop).
    """
    activation = JAX_ACTIVATIONS[model.activation]
    hidden = (conv_features(model, params, x) if model.conv else jnp.asarray(x)).T
    last = model.n_layers - 1
    for layer in range(last):
        hidden = params[f"kernel_{layer}"].T @ hidden
        if model.bias:
            hidden = hidden + params[f"bias_{layer}"][:, None]
        hidden = activation(hidden)
    rows = []
    for unit in range(model.out_dim):
        row = params[f"kernel_{last}"][:, unit] @ hidden
        rows.append(row + params[f"bias_{last}"][unit] if model.bias else row)
    return rows


def conv_features(model: ModelSpec, params, x) -> jnp.ndarray:
    """The convolutions' output, flattened row-major (height, width, channels): (n, units_0).

    `x` holds flattened images (n, height * width * channels); each convolution is XLA's (NHWC inputs, HWIO
    kernels, stride 1, `padding` zeros on every side; a cross-correlation, as in every deep-learning library),
    plus its bias, then the activation."""
    activation = JAX_ACTIVATIONS[model.activation]
    images = jnp.asarray(x).reshape(-1, *model.image_shape)
    for index, layer in enumerate(model.conv):
        pad = ((layer.padding, layer.padding), (layer.padding, layer.padding))
        images = jax.lax.conv_general_dilated(images, params[f"conv_kernel_{index}"], window_strides=(1, 1),
                                              padding=pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if model.bias:
            images = images + params[f"conv_bias_{index}"]
        images = activation(images)
    return images.reshape(images.shape[0], -1)


def _mean_and_log_sigma(model: ModelSpec, params, x) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Regression mean (n,) and clipped log sigma (n,) or scalar."""
    rows = _output_rows(model, params, x)
    if model.likelihood == "regr":
        log_sigma = rows[1]
    elif model.likelihood == "mean_regr":
        log_sigma = jnp.log(model.sigma) if model.sigma is not None else params["log_sigma"]
    else:
        raise ValueError(f"likelihood {model.likelihood!r} is not a regression")
    # Clipping log sigma is clipping sigma = exp(.) to [SIGMA_MIN, SIGMA_MAX], without overflow.
    return rows[0], jnp.clip(log_sigma, _LOG_SIGMA_MIN, _LOG_SIGMA_MAX)


def gaussian_log_density(y, mean, log_sigma) -> jnp.ndarray:
    """log N(y | mean, exp(log_sigma)^2), written with one exp (its gradient reuses it)."""
    z = (y - mean) * jnp.exp(-log_sigma)
    return -0.5 * jnp.square(z) - log_sigma - _HALF_LOG_2PI


def pointwise_log_likelihood(model: ModelSpec, params, x, y) -> jnp.ndarray:
    """log p(y_i | x_i, params) for each point, shape (n,)."""
    if model.likelihood == "class":
        log_probs = jax.nn.log_softmax(_forward_units_first(model, params, x), axis=0)
        labels = jnp.asarray(y).astype(jnp.int32)
        return jnp.take_along_axis(log_probs, labels[None, :], axis=0)[0]
    mean, log_sigma = _mean_and_log_sigma(model, params, x)
    return gaussian_log_density(jnp.asarray(y), mean, log_sigma)


def log_prior(prior: PriorSpec, params: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    """Normalised Gaussian log prior density summed over leaves; flat leaves add 0."""
    scales = prior.scales
    if set(scales) != set(params):
        raise ValueError(f"parameter leaves {sorted(params)} do not match the prior's {sorted(scales)}")
    total = jnp.zeros(())
    for name, scale in scales.items():
        if scale is not None:
            total = total + jnp.sum(norm.logpdf(params[name], loc=0.0, scale=scale))
    return total


def make_logdensity(model: ModelSpec, prior: PriorSpec, x, y) -> Callable[[Params], jnp.ndarray]:
    """Unnormalised full-batch log posterior: sum of pointwise log likelihoods + log prior."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2 or x.shape[1] != model.in_dim:
        raise ValueError(f"x must have shape (n, {model.in_dim}), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {y.shape}")
    if model.likelihood == "class":
        labels = np.asarray(y)
        if labels.size and (labels.min() < 0 or labels.max() >= model.out_dim):
            raise ValueError(f"class labels must lie in [0, {model.out_dim}), got [{labels.min()}, {labels.max()}]")
    expected = param_shapes(model)
    if set(prior.scales) != set(expected):
        raise ValueError(f"prior leaves {sorted(prior.scales)} do not match the model's {sorted(expected)}")

    def logdensity(params: Params) -> jnp.ndarray:
        return jnp.sum(pointwise_log_likelihood(model, params, x, y)) + log_prior(prior, params)

    return logdensity


# ----------------------------------------------------------------------------- predictions


def predictive_mean(model: ModelSpec, params, x) -> jnp.ndarray:
    """Regression: predicted mean (n,). Classification: class probabilities (n, classes)."""
    if model.likelihood == "class":
        return jax.nn.softmax(forward(model, params, x), axis=-1)
    return _mean_and_log_sigma(model, params, x)[0]


def predictive_cdf(model: ModelSpec, params, x, y) -> jnp.ndarray:
    """Gaussian predictive CDF at y_i, shape (n,) (regression only; the PIT of one draw)."""
    if model.likelihood == "class":
        raise ValueError("predictive_cdf is defined for regression likelihoods only")
    mean, log_sigma = _mean_and_log_sigma(model, params, x)
    return norm.cdf(jnp.asarray(y), loc=mean, scale=jnp.exp(log_sigma))
