"""Adaptive SGHMC (sampler.kind: sghmc): known answers on Gaussian targets.

- On N(mu, diag(sigma^2)) with exact gradients and a small step, the draws' mean and variance are the
  target's within their Monte Carlo error (independent chains: standard errors from the spread of chain means).
- With a large step the variance is predictably too small: the kernel subtracts the minibatch-noise estimate
  eps^2 s^2 from its injected noise, so with exact gradients the momentum runs at temperature
  1 - eps^2 s / (2 mdecay) and so does the position's variance (first order in eps^2).
- The adapted scale s is sqrt(E[grad^2]) = 1 / sigma; the minibatch gradient averages to the full one over an epoch.
- Through `run_sghmc` on Bayesian linear regression the draws match the conjugate posterior, and a chain's
  draws do not depend on the other chains of its block.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplay.models import ModelSpec, PriorSpec, make_logdensity
from interplay.samplers.sghmc import adapt_scale, init, minibatch_gradient, run_sghmc, sghmc_step

MU = jnp.array([1.0, -2.0, 0.5])
SIGMA = jnp.array([0.5, 1.0, 2.0])
N_CHAINS = 512


def gaussian_grad(position):
    return {"x": -(position["x"] - MU) / SIGMA**2}


def gaussian_chain_moments(step_size, mdecay, warmup, steps, reset=0.05, momentum_reset="draw"):
    """Per chain: the run's mean of x and x^2, and the adapted scale (chains start at exact draws)."""
    def run(key):
        start_key, step_key = jax.random.split(key)
        state = init({"x": MU + SIGMA * jax.random.normal(start_key, (3,))})

        def warm(state, t):
            state = adapt_scale(state)
            return sghmc_step(jax.random.fold_in(step_key, t), state, gaussian_grad(state.position), step_size,
                              mdecay, 0.0), None

        def sample(state, t):
            state = sghmc_step(jax.random.fold_in(step_key, t), state, gaussian_grad(state.position), step_size,
                               mdecay, reset, momentum_reset)
            return state, (state.position["x"], state.position["x"] ** 2)

        state, _ = jax.lax.scan(warm, state, jnp.arange(warmup))
        state, (x, x2) = jax.lax.scan(sample, state, warmup + jnp.arange(steps))
        return x.mean(0), x2.mean(0), state.scale["x"]

    keys = jax.random.split(jax.random.PRNGKey(0), N_CHAINS)
    return [np.asarray(a, np.float64) for a in jax.jit(jax.vmap(run))(keys)]


def moments_and_errors(m1, m2):
    """Mean and variance over chains with standard errors (delta method on the chain means of x, x^2)."""
    mean, mean_se = m1.mean(0), m1.std(0, ddof=1) / np.sqrt(len(m1))
    var = m2.mean(0) - mean**2
    var_se = (m2 - 2 * mean * m1).std(0, ddof=1) / np.sqrt(len(m1))
    return mean, mean_se, var, var_se


def test_small_steps_sample_the_gaussian():
    m1, m2, scale = gaussian_chain_moments(0.03, 0.2, 1000, 8000)
    mean, mean_se, var, var_se = moments_and_errors(m1, m2)
    sigma2 = np.asarray(SIGMA, np.float64) ** 2
    assert np.all(np.abs(mean - np.asarray(MU)) < 4 * mean_se), (mean, mean_se)
    assert np.all(np.abs(var - sigma2) < 4 * var_se), (var / sigma2, var_se / sigma2)
    # the adapted scale is sqrt(E[grad^2]) = 1 / sigma (a noisy running estimate: 15%)
    np.testing.assert_allclose(scale.mean(0), 1 / np.asarray(SIGMA), rtol=0.15)


def test_large_steps_shrink_the_variance_as_the_noise_estimate_predicts():
    step_size, mdecay = 0.1, 0.1
    m1, m2, scale = gaussian_chain_moments(step_size, mdecay, 1000, 4000)
    _, _, var, var_se = moments_and_errors(m1, m2)
    sigma2 = np.asarray(SIGMA, np.float64) ** 2
    predicted = 1 - step_size**2 * scale.mean(0) / (2 * mdecay)
    assert np.all(np.abs(var / sigma2 - predicted) < 4 * var_se / sigma2 + 0.01), (var / sigma2, predicted)
    assert (1 - var[0] / sigma2[0]) > 6 * var_se[0] / sigma2[0]  # the shrinkage is real, not noise


def test_resetting_the_momentum_to_zero_cools_the_chain():
    """The authors' reset (momentum set to 0 with probability p per step) loses kinetic energy: the variance
    comes out below the target's, by far more than its Monte Carlo error; a fresh draw does not (above)."""
    m1, m2, _ = gaussian_chain_moments(0.03, 0.2, 1000, 8000, reset=0.05, momentum_reset="zero")
    _, _, var, var_se = moments_and_errors(m1, m2)
    sigma2 = np.asarray(SIGMA, np.float64) ** 2
    assert np.all(sigma2 - var > 4 * var_se), (var / sigma2, var_se / sigma2)


def linear_regression(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x @ np.array([0.7, -0.4]) + 0.3 + 0.5 * rng.normal(size=n)).astype(np.float32)
    model = ModelSpec(in_dim=2, hidden=(), out_dim=1, activation="relu", bias=True, likelihood="mean_regr",
                      sigma=0.5)
    return model, PriorSpec.build(model, scale=1.0), x, y


def conjugate_posterior(x, y, sigma=0.5, tau=1.0):
    design = np.column_stack([x, np.ones(len(x))]).astype(np.float64)
    cov = np.linalg.inv(design.T @ design / sigma**2 + np.eye(3) / tau**2)
    return cov @ design.T @ y / sigma**2, cov


def test_minibatch_gradient_averages_to_the_full_gradient():
    model, prior, x, y = linear_regression()
    position = {"kernel_0": jnp.array([[0.2], [0.1]]), "bias_0": jnp.array([-0.3])}
    full = jax.grad(make_logdensity(model, prior, x, y))(position)
    gradient = minibatch_gradient(model, prior, len(x))
    batches = [gradient(position, (x[i:i + 10], y[i:i + 10])) for i in range(0, 40, 10)]
    for name in full:
        np.testing.assert_allclose(np.mean([b[name] for b in batches], axis=0), full[name], rtol=1e-5, atol=1e-4)


CFG = {"batch_size": 40, "warmup_steps": 500, "steps": 3000, "thin": 10, "step_size": 0.01, "mdecay": 0.2,
       "resample_momentum": 0.0, "chain_batch": 64}


def test_run_sghmc_samples_the_conjugate_posterior():
    """Chains start at exact posterior draws (a stationarity test of the whole sampler: gradient estimator,
    adaptation from a cold scale, vectorised groups)."""
    model, prior, x, y = linear_regression()
    n_chains = 128
    mean, cov = conjugate_posterior(x, y)
    exact = np.random.default_rng(3).multivariate_normal(mean, cov, size=n_chains).astype(np.float32)
    start = {"kernel_0": jnp.asarray(exact[:, :2, None]), "bias_0": jnp.asarray(exact[:, 2:])}
    keys = jax.random.split(jax.random.PRNGKey(1), n_chains)
    draws, stats = run_sghmc(model, prior, x, y, start, keys, CFG)
    assert draws["kernel_0"].shape == (n_chains, CFG["steps"] // CFG["thin"], 2, 1)
    assert not stats["diverged"].any() and (stats["n_grad_evals"] == 3500).all()
    theta = np.concatenate([draws["kernel_0"][..., 0], draws["bias_0"]], axis=-1).astype(np.float64)
    chain_means = theta.mean(axis=1)
    se = chain_means.std(0, ddof=1) / np.sqrt(n_chains)
    assert np.all(np.abs(chain_means.mean(0) - mean) < 4 * se), (chain_means.mean(0), mean, se)
    var = theta.reshape(-1, 3).var(axis=0)
    np.testing.assert_allclose(var, np.diag(cov), rtol=0.1)


def test_a_chain_does_not_depend_on_its_block():
    model, prior, x, y = linear_regression()
    cfg = {**CFG, "warmup_steps": 50, "steps": 100, "batch_size": 16, "chain_batch": None}
    start = {"kernel_0": jnp.zeros((5, 2, 1)), "bias_0": jnp.zeros((5, 1))}
    keys = jax.random.split(jax.random.PRNGKey(2), 5)
    all_five, _ = run_sghmc(model, prior, x, y, start, keys, cfg)
    last_two, _ = run_sghmc(model, prior, x, y, jax.tree.map(lambda a: a[3:], start), keys[3:], cfg)
    for name in all_five:
        np.testing.assert_array_equal(all_five[name][3:], last_two[name])


def test_bad_settings_name_the_key():
    model, prior, x, y = linear_regression()
    start = {"kernel_0": jnp.zeros((1, 2, 1)), "bias_0": jnp.zeros((1, 1))}
    with pytest.raises(ValueError, match=r"sampler\.sghmc\.steps"):
        run_sghmc(model, prior, x, y, start, jax.random.split(jax.random.PRNGKey(0), 1), {**CFG, "steps": 15})
