"""interplay.models against independent references: numpy forward passes, scipy densities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from interplay import models


def make_run(hidden=(4, 3), activation="relu", bias=True, likelihood="regr", sigma=None, scale=1.0,
             bias_scale=None, prior_bias="gaussian", log_sigma_scale=1.0):
    return {
        "model": {"hidden": list(hidden), "activation": activation, "bias": bias,
                  "likelihood": likelihood, "sigma": sigma},
        "prior": {"scale": scale, "bias_scale": bias_scale, "bias": prior_bias,
                  "log_sigma_scale": log_sigma_scale},
    }


def numpy_forward(model, params, x):
    """Reference forward pass in float64 numpy."""
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z}[model.activation]
    h = np.asarray(x, np.float64)
    for layer in range(model.n_layers):
        h = h @ np.asarray(params[f"kernel_{layer}"], np.float64)
        if model.bias:
            h = h + np.asarray(params[f"bias_{layer}"], np.float64)
        if layer < model.n_layers - 1:
            h = act(h)
    return h


def random_params(model, seed=0, scale=0.7):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
            for name, shape in models.param_shapes(model).items()}


# ----------------------------------------------------------------------------- specs and shapes


@pytest.mark.parametrize("likelihood, n_classes, out_dim", [("regr", None, 2), ("mean_regr", None, 1),
                                                            ("class", 3, 3)])
def test_out_dim_follows_the_likelihood(likelihood, n_classes, out_dim):
    model = models.ModelSpec.from_run(make_run(likelihood=likelihood), in_dim=5, n_classes=n_classes)
    assert model.out_dim == out_dim
    assert model.units == (5, 4, 3, out_dim)
    assert model.n_layers == 3
    assert model.layer_shapes == ((5, 4), (4, 3), (3, out_dim))


@pytest.mark.parametrize("change, message", [
    ({"activation": "gelu"}, "activation"),
    ({"likelihood": "poisson"}, "likelihood"),
    ({"sigma": 0.5}, "sigma"),  # sigma with the default likelihood regr
    ({"likelihood": "mean_regr", "sigma": -1.0}, "sigma"),
    ({"hidden": (4, 0)}, "hidden"),
])
def test_bad_model_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        models.ModelSpec.from_run(make_run(**change), in_dim=3)


def test_class_needs_n_classes():
    with pytest.raises(ValueError, match="n_classes"):
        models.ModelSpec.from_run(make_run(likelihood="class"), in_dim=3)


@pytest.mark.parametrize("bias, likelihood, sigma", [(True, "regr", None), (False, "mean_regr", None),
                                                     (True, "mean_regr", 0.3), (True, "class", None)])
def test_param_dims_agree_with_shapes_and_init(bias, likelihood, sigma):
    model = models.ModelSpec.from_run(make_run(bias=bias, likelihood=likelihood, sigma=sigma), in_dim=3,
                                      n_classes=4)
    shapes = models.param_shapes(model)
    dims = models.param_dims(model)
    assert set(shapes) == set(dims)
    dim_sizes = {}
    for name, shape in shapes.items():
        assert len(dims[name]) == len(shape)
        for dim, size in zip(dims[name], shape):
            assert dim_sizes.setdefault(dim, size) == size, f"{dim} has two sizes"
    assert dim_sizes == {f"units_{i}": size for i, size in enumerate(model.units)}
    assert ("log_sigma" in shapes) == (likelihood == "mean_regr" and sigma is None)
    assert any(name.startswith("bias_") for name in shapes) == bias
    params = models.init_params(model, jax.random.PRNGKey(0))
    assert {name: tuple(leaf.shape) for name, leaf in params.items()} == shapes
    assert models.n_params(model) == sum(math.prod(shape) for shape in shapes.values())


def test_jax_activations_are_the_specs_numpy_ones():
    # one list of activations (interplay.specs, numpy: data and analyses), its JAX twins for the sampler
    from interplay.specs import ACTIVATIONS

    assert set(models.JAX_ACTIVATIONS) == set(ACTIVATIONS)
    z = np.linspace(-3.0, 3.0, 25, dtype=np.float32)
    for name, numpy_fn in ACTIVATIONS.items():
        np.testing.assert_allclose(np.asarray(models.JAX_ACTIVATIONS[name](jnp.asarray(z))), numpy_fn(z), rtol=1e-6)
    assert jax.grad(models.JAX_ACTIVATIONS["relu"])(0.0) == 0.0  # jax.nn.relu: gradient 0 at the kink


def test_flops_count_is_three_forward_matmuls():
    model = models.ModelSpec(in_dim=2, hidden=(3,), out_dim=1, activation="relu", bias=True,
                             likelihood="mean_regr")
    # forward: 2 * n * (2*3 + 3*1) multiply-adds per point -> 2 * 10 * 9 = 180 FLOPs; gradient 3x.
    assert models.flops_per_gradient(model, 10) == 540


def test_model_spec_is_a_jit_static():
    model = models.ModelSpec.from_run(make_run(), in_dim=2)
    params = random_params(model)
    x = np.random.default_rng(1).normal(size=(4, 2))
    out = jax.jit(models.forward, static_argnums=0)(model, params, x)
    np.testing.assert_allclose(out, numpy_forward(model, params, x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- priors


def test_prior_scales_per_leaf():
    model = models.ModelSpec.from_run(make_run(likelihood="mean_regr"), in_dim=2)
    prior = models.PriorSpec.from_run(make_run(scale=[1.0, 0.5, 2.0], bias_scale=3.0), model)
    assert prior.scales == {"kernel_0": 1.0, "bias_0": 3.0, "kernel_1": 0.5, "bias_1": 3.0,
                            "kernel_2": 2.0, "bias_2": 3.0, "log_sigma": 1.0}
    flat = models.PriorSpec.from_run(make_run(scale=0.4, prior_bias="flat"), model)
    assert flat.scale("kernel_1") == 0.4 and flat.scale("bias_1") is None


@pytest.mark.parametrize("prior_change, message", [
    ({"scale": [1.0, 2.0]}, "scale"),  # 3 layers need 3 values
    ({"scale": -1.0}, "scale"),
    ({"bias_scale": [1.0]}, "bias_scale"),
    ({"prior_bias": "laplace"}, "bias"),
])
def test_bad_prior_settings_are_named(prior_change, message):
    model = models.ModelSpec.from_run(make_run(), in_dim=2)
    with pytest.raises(ValueError, match=message):
        models.PriorSpec.from_run(make_run(**prior_change), model)


def test_log_prior_equals_scipy():
    model = models.ModelSpec.from_run(make_run(likelihood="mean_regr"), in_dim=3)
    taus, bias_taus = [0.5, 1.5, 2.0], [1.0, 0.3, 4.0]
    prior = models.PriorSpec.from_run(make_run(scale=taus, bias_scale=bias_taus, log_sigma_scale=0.7), model)
    params = random_params(model, seed=3)
    expected = stats.norm.logpdf(np.asarray(params["log_sigma"], np.float64), scale=0.7)
    for layer in range(3):
        expected += stats.norm.logpdf(np.asarray(params[f"kernel_{layer}"], np.float64), scale=taus[layer]).sum()
        expected += stats.norm.logpdf(np.asarray(params[f"bias_{layer}"], np.float64),
                                      scale=bias_taus[layer]).sum()
    np.testing.assert_allclose(models.log_prior(prior, params), expected, rtol=1e-5)


def test_flat_bias_prior_ignores_biases():
    model = models.ModelSpec.from_run(make_run(), in_dim=3)
    prior = models.PriorSpec.from_run(make_run(scale=0.8, prior_bias="flat"), model)
    params = random_params(model, seed=4)
    shifted = {**params, "bias_1": params["bias_1"] + 100.0}
    expected = sum(stats.norm.logpdf(np.asarray(params[f"kernel_{layer}"], np.float64), scale=0.8).sum()
                   for layer in range(3))
    np.testing.assert_allclose(models.log_prior(prior, params), expected, rtol=1e-5)
    np.testing.assert_allclose(models.log_prior(prior, shifted), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="flat"):
        models.sample_prior(model, prior, jax.random.PRNGKey(0))


def test_sample_prior_moments():
    model = models.ModelSpec.from_run(make_run(hidden=(5,), likelihood="mean_regr"), in_dim=4)
    prior = models.PriorSpec.from_run(make_run(hidden=(5,), scale=[0.5, 2.0], bias_scale=[1.5, 0.2],
                                               log_sigma_scale=0.3), model)
    n = 20_000
    draws = jax.vmap(lambda k: models.sample_prior(model, prior, k))(jax.random.split(jax.random.PRNGKey(7), n))
    for name, scale in prior.scales.items():
        values = np.asarray(draws[name], np.float64).reshape(n, -1)
        # Means ~ N(0, scale^2 / n); sample variances ~ N(scale^2, 2 scale^4 / n): z-scores per leaf.
        z_mean = values.mean(axis=0) / (scale / math.sqrt(n))
        z_var = (values.var(axis=0) - scale**2) / (scale**2 * math.sqrt(2 / n))
        assert np.all(np.abs(z_mean) < 5), (name, z_mean)
        assert np.all(np.abs(z_var) < 5), (name, z_var)
        # Independent leaves: correlations between entries vanish.
        if values.shape[1] > 1:
            corr = np.corrcoef(values[:, 0], values[:, 1])[0, 1]
            assert abs(corr) < 5 / math.sqrt(n)


def test_same_key_same_draw():
    model = models.ModelSpec.from_run(make_run(), in_dim=3)
    prior = models.PriorSpec.from_run(make_run(), model)
    key = jax.random.PRNGKey(11)
    for draw in (lambda k: models.sample_prior(model, prior, k), lambda k: models.init_params(model, k)):
        first, second, other = draw(key), draw(key), draw(jax.random.PRNGKey(12))
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])
        assert not np.allclose(first["kernel_0"], other["kernel_0"])


def test_init_params_he_scale():
    model = models.ModelSpec(in_dim=400, hidden=(300,), out_dim=1, activation="relu", bias=True,
                             likelihood="mean_regr", sigma=1.0)
    params = models.init_params(model, jax.random.PRNGKey(0))
    std = float(np.std(np.asarray(params["kernel_0"])))
    assert abs(std / math.sqrt(2 / 400) - 1) < 0.01  # 120,000 entries: relative error ~ 0.2%
    assert np.all(np.asarray(params["bias_0"]) == 0)


# ----------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_regr_likelihood_equals_scipy(activation):
    model = models.ModelSpec.from_run(make_run(activation=activation), in_dim=3)
    params = random_params(model, seed=5)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=7)
    out = numpy_forward(model, params, x)
    expected = stats.norm.logpdf(y, loc=out[:, 0], scale=np.exp(out[:, 1]))
    np.testing.assert_allclose(models.pointwise_log_likelihood(model, params, x, y), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(models.predictive_mean(model, params, x), out[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(models.predictive_cdf(model, params, x, y),
                               stats.norm.cdf(y, loc=out[:, 0], scale=np.exp(out[:, 1])), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sigma", [None, 0.25])
def test_mean_regr_likelihood_equals_scipy(sigma):
    model = models.ModelSpec.from_run(make_run(likelihood="mean_regr", sigma=sigma, bias=False), in_dim=2)
    params = random_params(model, seed=8)
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    out = numpy_forward(model, params, x)
    scale = sigma if sigma is not None else math.exp(float(params["log_sigma"]))
    np.testing.assert_allclose(models.pointwise_log_likelihood(model, params, x, y),
                               stats.norm.logpdf(y, loc=out[:, 0], scale=scale), rtol=1e-4, atol=1e-4)


def test_class_likelihood_equals_scipy():
    model = models.ModelSpec.from_run(make_run(likelihood="class", activation="tanh"), in_dim=3, n_classes=4)
    params = random_params(model, seed=10)
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(9, 3)), rng.integers(0, 4, size=9)
    probs = special.softmax(numpy_forward(model, params, x), axis=1)
    expected = stats.multinomial.logpmf(np.eye(4)[y], n=1, p=probs)
    np.testing.assert_allclose(models.pointwise_log_likelihood(model, params, x, y), expected, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(models.predictive_mean(model, params, x), probs, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="regression"):
        models.predictive_cdf(model, params, x, y)


@pytest.mark.parametrize("raw_log_sigma, sigma", [(-60.0, models.SIGMA_MIN), (60.0, models.SIGMA_MAX)])
def test_sigma_is_clipped(raw_log_sigma, sigma):
    model = models.ModelSpec(in_dim=1, hidden=(), out_dim=2, activation="identity", bias=True, likelihood="regr")
    params = {"kernel_0": jnp.zeros((1, 2)), "bias_0": jnp.array([0.1, raw_log_sigma])}
    x, y = np.zeros((2, 1)), np.array([0.1, 0.1 + 1e-7])
    values = models.pointwise_log_likelihood(model, params, x, y)
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, stats.norm.logpdf(y, loc=0.1, scale=sigma), rtol=1e-4)
    # Its gradient stays finite too (the clip is on log sigma, exp never overflows).
    grad = jax.grad(lambda p: jnp.sum(models.pointwise_log_likelihood(model, p, x, y)))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_logdensity_is_likelihood_plus_prior():
    model = models.ModelSpec.from_run(make_run(likelihood="mean_regr"), in_dim=3)
    prior = models.PriorSpec.from_run(make_run(scale=[1.0, 0.5, 0.8]), model)
    params = random_params(model, seed=12)
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(11, 3)), rng.normal(size=11)
    logdensity = models.make_logdensity(model, prior, x, y)
    expected = np.sum(models.pointwise_log_likelihood(model, params, x, y)) + models.log_prior(prior, params)
    np.testing.assert_allclose(logdensity(params), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(logdensity)(params), expected, rtol=1e-5)


def test_logdensity_rejects_bad_data():
    model = models.ModelSpec.from_run(make_run(likelihood="class"), in_dim=3, n_classes=3)
    prior = models.PriorSpec.from_run(make_run(), model)
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        models.make_logdensity(model, prior, np.zeros((4, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="y must have shape"):
        models.make_logdensity(model, prior, x, np.zeros(5, int))
    with pytest.raises(ValueError, match="class labels"):
        models.make_logdensity(model, prior, x, np.array([0, 1, 2, 3]))
