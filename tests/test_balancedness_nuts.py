"""NUTS and MAMS (both Metropolis-adjusted) on a small ReLU net satisfy the layer-wise balancedness identity of the posterior.

A ReLU neuron can be rescaled (incoming weights and bias times a, outgoing weights over a)
without changing the network function, so the likelihood is invariant along that flow. Stein's
identity for the flow's generator v (v = +theta on the incoming, -theta on the outgoing
parameters) gives E[v . grad log prior + div v] = 0 under the posterior, i.e. for hidden layer l

    tau_l^-2 E||K_l||^2 + beta_l^-2 E||b_l||^2 - tau_{l+1}^-2 E||K_{l+1}||^2 = d_l - d_{l+1}

with d_l the number of weights and biases of layer l and d_{l+1} the number of weights of layer
l + 1; per neuron j the right-hand side is (fan_in + 1) - fan_out. Standard errors come from the
spread of the chain means (independent chains).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplay import models
from interplay.samplers.mams import run_mams
from interplay.samplers.nuts import run_nuts

Z_MAX = 5.0
N_CHAINS = 8
TAUS = (1.0, 0.7, 1.3)  # per layer; biases share their layer's scale


SAMPLERS = {
    "nuts": (run_nuts, {"warmup": 300, "draws": 700, "target_accept": 0.8}),
    "mams": (run_mams, {"warmup_steps": 600, "steps": 2800, "thin": 4, "burn_in_steps": 2000}),
}


@pytest.fixture(scope="module", params=sorted(SAMPLERS))
def posterior(request):
    """NUTS or MAMS draws from a 2-3-3-1 ReLU net with biases on a small regression problem."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 2))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.5 * rng.normal(size=10)
    model = models.ModelSpec(in_dim=2, hidden=(3, 3), out_dim=1, activation="relu", bias=True,
                             likelihood="mean_regr", sigma=1.0)
    prior = models.PriorSpec.build(model, scale=list(TAUS))
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.PRNGKey(0), c))(jnp.arange(N_CHAINS))
    init = jax.vmap(lambda k: models.sample_prior(model, prior, k))(keys)
    run, cfg = SAMPLERS[request.param]
    draws, stats = run(models.make_logdensity(model, prior, x, y), init, keys, cfg)
    assert np.all(np.isfinite(stats["step_size"]))
    return model, {name: np.asarray(leaf, np.float64) for name, leaf in draws.items()}


def neuron_statistic(draws, layer, taus):
    """Per draw and neuron of hidden layer `layer`: scaled incoming minus outgoing squared norms."""
    incoming = (draws[f"kernel_{layer}"] ** 2).sum(axis=-2) + draws[f"bias_{layer}"] ** 2
    outgoing = (draws[f"kernel_{layer + 1}"] ** 2).sum(axis=-1)
    return incoming / taus[layer] ** 2 - outgoing / taus[layer + 1] ** 2  # (chain, draw, neuron)


def z_score(values, expected):
    """z of the grand mean of values (chain, draw, ...) from the spread of chain means."""
    chain_means = values.mean(axis=1)
    se = chain_means.std(axis=0, ddof=1) / np.sqrt(chain_means.shape[0])
    return (chain_means.mean(axis=0) - expected) / se


@pytest.mark.parametrize("layer", [0, 1])
def test_layerwise_balancedness(posterior, layer):
    model, draws = posterior
    fan_in, fan_out = model.layer_shapes[layer]
    d_layer = fan_in * fan_out + fan_out
    d_next = model.layer_shapes[layer + 1][0] * model.layer_shapes[layer + 1][1]
    statistic = neuron_statistic(draws, layer, TAUS).sum(axis=-1)
    z = z_score(statistic, d_layer - d_next)
    assert abs(z) < Z_MAX, f"layer {layer}: z = {z}"


@pytest.mark.parametrize("layer", [0, 1])
def test_neuronwise_balancedness(posterior, layer):
    model, draws = posterior
    fan_in, _ = model.layer_shapes[layer]
    fan_out = model.layer_shapes[layer + 1][1]
    z = z_score(neuron_statistic(draws, layer, TAUS), (fan_in + 1) - fan_out)
    assert np.all(np.abs(z) < Z_MAX), f"layer {layer}: z = {z}"


@pytest.mark.parametrize("layer", [0, 1])
def test_balancedness_check_detects_a_misscaled_prior(posterior, layer):
    """The check has power: draws from the target with tau_l, tested as if the prior scale
    were 10% smaller, violate the identity by far more than Monte Carlo error."""
    model, draws = posterior
    wrong = list(TAUS)
    wrong[layer] *= 0.9
    fan_in, fan_out = model.layer_shapes[layer]
    d_layer = fan_in * fan_out + fan_out
    d_next = model.layer_shapes[layer + 1][0] * model.layer_shapes[layer + 1][1]
    z = z_score(neuron_statistic(draws, layer, wrong).sum(axis=-1), d_layer - d_next)
    assert abs(z) > 3 * Z_MAX, f"layer {layer}: a misscaled prior went unnoticed (z = {z})"
