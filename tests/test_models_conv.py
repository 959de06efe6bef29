"""Convolutional nets (model.conv): the forward pass against a NumPy/SciPy reference convolution, the
per-filter rescaling symmetry of ReLU convolutions, leaves and dims, and the config's checks."""

import jax
import numpy as np
import pytest
from scipy.signal import correlate2d

from interplay.config import ConfigError, n_parameters, resolve_runs, sampling_run
from interplay.models import ModelSpec, PriorSpec, forward, init_params, make_logdensity, param_shapes
from interplay.specs import ConvLayer, leaf_dims, leaf_layer, n_params

RNG = np.random.default_rng(0)


def conv_model(conv, image_shape=(6, 5, 2), hidden=(4,), out_dim=3, activation="relu", bias=True):
    return ModelSpec(in_dim=int(np.prod(image_shape)), hidden=hidden, out_dim=out_dim, activation=activation,
                     bias=bias, likelihood="class", conv=tuple(conv), image_shape=image_shape)


def random_params(model, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in param_shapes(model).items()}


def reference_forward(model, params, x):
    """Zero padding, cross-correlation per (input channel, filter) with SciPy, bias, ReLU; then the dense net."""
    images = x.reshape(-1, *model.image_shape).astype(np.float64)
    for k, layer in enumerate(model.conv):
        kernel = params[f"conv_kernel_{k}"].astype(np.float64)
        p = layer.padding
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        out = []
        for image in padded:
            maps = [sum(correlate2d(image[:, :, c], kernel[:, :, c, f], mode="valid") for c in range(image.shape[2]))
                    for f in range(layer.filters)]
            out.append(np.stack(maps, axis=-1))
        images = np.maximum(np.stack(out) + params[f"conv_bias_{k}"], 0.0)
    h = images.reshape(images.shape[0], -1)
    for layer in range(model.n_layers):
        h = h @ params[f"kernel_{layer}"] + params[f"bias_{layer}"]
        if layer < model.n_layers - 1:
            h = np.maximum(h, 0.0)
    return h


def test_conv_forward_matches_scipy_reference():
    model = conv_model([ConvLayer(3, 3, 2), ConvLayer(2, 2, 0)])
    params = random_params(model)
    x = RNG.normal(size=(7, model.in_dim)).astype(np.float32)
    got = np.asarray(forward(model, params, x))
    np.testing.assert_allclose(got, reference_forward(model, params, x), rtol=2e-4, atol=2e-3)
    # the authors' FMNIST net: 28x28 with 3x3 and padding 2 gives 30x30 maps
    fmnist = conv_model([ConvLayer(1, 3, 2)], image_shape=(28, 28, 1), hidden=(8, 8, 8), out_dim=10)
    assert fmnist.units == (900, 8, 8, 8, 10)
    assert n_params(fmnist) == 10 + 900 * 8 + 8 + 2 * (8 * 8 + 8) + 8 * 10 + 10


def test_per_filter_rescaling_leaves_the_function_unchanged():
    """Filter k's kernel and bias times a > 0, the next layer's weights reading channel k divided by a."""
    model = conv_model([ConvLayer(3, 3, 1), ConvLayer(2, 3, 1)])
    params = random_params(model, seed=1)
    x = RNG.normal(size=(5, model.in_dim)).astype(np.float32)
    before = np.asarray(forward(model, params, x))
    scaled = dict(params)
    a = np.array([0.3, 2.5, 7.0], np.float32)
    scaled["conv_kernel_0"] = params["conv_kernel_0"] * a
    scaled["conv_bias_0"] = params["conv_bias_0"] * a
    scaled["conv_kernel_1"] = params["conv_kernel_1"] / a[None, None, :, None]
    b = np.array([4.0, 0.2], np.float32)  # last convolution: the dense weights of channel k's pixels
    scaled["conv_kernel_1"] = scaled["conv_kernel_1"] * b
    scaled["conv_bias_1"] = params["conv_bias_1"] * b
    channel_of_unit = np.tile(np.arange(2), model.units[0] // 2)
    scaled["kernel_0"] = params["kernel_0"] / b[channel_of_unit][:, None]
    np.testing.assert_allclose(np.asarray(forward(model, scaled, x)), before, rtol=1e-4, atol=1e-4)


def test_conv_leaves_dims_and_prior_scales():
    model = conv_model([ConvLayer(3, 3, 1)])
    shapes = param_shapes(model)
    assert shapes["conv_kernel_0"] == (3, 3, 2, 3) and shapes["conv_bias_0"] == (3,)
    assert leaf_dims("conv_kernel_0") == ("conv_height_0", "conv_width_0", "channels_0", "channels_1")
    assert leaf_dims("conv_bias_0") == ("channels_1",)
    assert leaf_layer("conv_kernel_0") == -1
    prior = PriorSpec.build(model, scale=[2.0, 0.5], conv_scale=3.0)
    assert prior.scale("conv_kernel_0") == 3.0 and prior.scale("kernel_0") == 2.0
    assert PriorSpec.build(model, scale=[2.0, 0.5]).scale("conv_bias_0") == 2.0
    params = init_params(model, jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in params.items()} == shapes
    x = RNG.normal(size=(4, model.in_dim)).astype(np.float32)
    assert np.isfinite(float(make_logdensity(model, prior, x, np.array([0, 1, 2, 0]))(params)))


def test_conv_needs_pixels_and_an_image_shape():
    with pytest.raises(ValueError, match="leaves no pixels"):
        conv_model([ConvLayer(1, 9, 0)])
    with pytest.raises(ValueError, match="image_shape"):
        ModelSpec(in_dim=4, hidden=(), out_dim=2, activation="relu", bias=True, likelihood="class",
                  conv=(ConvLayer(1, 2),))


def digits_run(**model):
    return {"runs": {"r": {"dataset": "digits", "model": {"likelihood": "class", **model}}}}


def test_config_derives_the_image_shape_and_counts_conv_parameters():
    run = resolve_runs(digits_run(conv=[{"filters": 1, "kernel": 3, "padding": 2}], hidden=[8, 8, 8]))["r"]
    assert run["model"]["image_shape"] == [8, 8, 1]
    assert n_parameters(run, 64, 10) == 10 + 100 * 8 + 8 + 2 * 72 + 90
    assert sampling_run(run)["model"]["conv"] == [{"filters": 1, "kernel": 3, "padding": 2}]


def test_config_refuses_bad_conv_settings():
    with pytest.raises(ConfigError, match=r"runs\.r\.model\.conv: convolutions need an image data set"):
        resolve_runs({"runs": {"r": {"dataset": "airfoil", "model": {"conv": [{"filters": 1, "kernel": 3}]}}}})
    with pytest.raises(ConfigError, match=r"runs\.r\.model\.conv: .*leaves no pixels"):
        resolve_runs(digits_run(conv=[{"filters": 1, "kernel": 9}]))
    with pytest.raises(ConfigError, match=r"runs\.r\.model\.image_shape"):
        resolve_runs(digits_run(image_shape=[4, 4, 4]))
    with pytest.raises(ConfigError, match=r"prior\.conv_scale"):
        resolve_runs({"runs": {"r": {"dataset": "digits", "model": {"likelihood": "class", "conv": [
            {"filters": 1, "kernel": 3}]}, "prior": {"conv_scale": [1.0, 2.0]}}}})
    with pytest.raises(ConfigError, match=r"data\.split"):
        resolve_runs({"runs": {"r": {"dataset": "digits", "model": {"likelihood": "class"},
                                     "data": {"split": "authors"}}}})


def test_tabular_runs_keep_their_sampling_settings():
    """The new keys at their defaults are not part of a tabular run's sampling settings (no resampling)."""
    settings = sampling_run(resolve_runs({"runs": {"r": {"dataset": "airfoil"}}})["r"])
    assert "conv" not in settings["model"] and "image_shape" not in settings["model"]
    assert "conv_scale" not in settings["prior"]


def test_conv_runs_skip_the_reallocation_analysis():
    from interplay.config import applicable_analyses

    run = resolve_runs(digits_run(conv=[{"filters": 1, "kernel": 3, "padding": 2}], hidden=[8, 8]))["r"]
    assert "reallocation" not in applicable_analyses(run) and "balancedness" in applicable_analyses(run)


def test_the_memory_model_knows_image_runs():
    from interplay.resources import block_memory, data_shape, sample_resources

    run = resolve_runs({"runs": {"r": {"dataset": "fashion_mnist", "model": {
        "likelihood": "class", "conv": [{"filters": 1, "kernel": 3, "padding": 2}], "hidden": [8, 8, 8]},
        "sampler": {"kind": "sghmc", "chains": 10, "block_size": 10}}}})["r"]
    shape = data_shape(run)
    assert (shape.n_inputs, shape.n_outputs, shape.n_train, shape.n_valid, shape.n_test) == (784, 10, 49000,
                                                                                            11000, 10000)
    memory = block_memory(run, shape, "gpu")
    # the block writer holds the largest leaf (kernel_0, 900 x 8) of 1,000 draws per chain, twice
    assert memory.host["block writer"] >= 2 * 4 * 10 * 1000 * 900 * 8
    assert sample_resources(run, {}, "gpu")["mem_mb"] > 0
