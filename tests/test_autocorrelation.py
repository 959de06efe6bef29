"""The streaming autocorrelation-time estimator against known answers and BlackJAX's full-trace ESS.

Gaussian AR(1) chains x_t = rho x_(t-1) + sqrt(1 - rho^2) e_t have tau = (1 + rho) / (1 - rho) exactly.
Tolerances: the mean tau over P independent parameters has a relative standard error of about
sd(tau_hat) / tau / sqrt(P) (a few tenths of a percent to 1.5% here: the full trace's per-parameter
spread is 5-30%), so 10% is many standard errors; the streamed and full-trace estimates use the same
data, so their difference is smaller still.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.diagnostics import effective_sample_size

from interplay.samplers import autocorrelation as ac

N_STEPS = 5000
N_PARAMS = 200


def ar1(rho, n=N_STEPS, dim=N_PARAMS, seed=0, offset=0.0):
    """(n, dim) float32 stationary Gaussian AR(1) chains, unit variance, around `offset`."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, dim)) * np.sqrt(1 - rho**2)
    x = np.empty((n, dim))
    x[0] = rng.normal(size=dim)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + noise[t]
    return (x + offset).astype(np.float32)


@jax.jit
def streamed(trace):
    """Run the estimator over a (steps, dim) trace inside lax.scan; reference: the first position."""
    state = ac.init(trace[0], ac.levels_for(trace.shape[0]))
    state, _ = jax.lax.scan(lambda s, x: (ac.update(s, x), None), state, trace)
    return state


full_trace_ess = jax.jit(lambda trace: effective_sample_size(trace[None]))
finalise = jax.jit(ac.finalise)
integrated_time = jax.jit(ac.integrated_time)
level_times = jax.jit(ac.level_times)
streamed_ess = jax.jit(lambda trace: ac.effective_sample_size(streamed(trace)))


def full_trace_tau(trace):
    return trace.shape[0] / np.asarray(full_trace_ess(jnp.asarray(trace)))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, 0.97])
def test_ar1_tau_matches_exact_and_full_trace(rho):
    trace = ar1(rho, offset=50.0)  # an offset far from 0: the sums are of x - reference
    tau, ess = finalise(streamed(jnp.asarray(trace)))
    tau, ess = np.asarray(tau), np.asarray(ess)
    exact = (1 + rho) / (1 - rho)
    full = full_trace_tau(trace)
    assert abs(tau.mean() / exact - 1) < 0.1, (tau.mean(), exact)
    assert abs(tau.mean() / full.mean() - 1) < 0.1, (tau.mean(), full.mean())
    np.testing.assert_allclose(ess, N_STEPS / tau, rtol=1e-6)


def test_oscillating_and_long_correlations_match_full_trace():
    """AR(2) with a damped oscillation (period ~21 steps) and AR(1) with tau ~ 200 (25 ESS in 5000)."""
    rng = np.random.default_rng(3)
    r, theta = 0.95, 0.3
    x = np.zeros((N_STEPS + 500, 100))
    noise = rng.normal(size=x.shape)
    for t in range(2, x.shape[0]):
        x[t] = 2 * r * np.cos(theta) * x[t - 1] - r * r * x[t - 2] + noise[t]
    for trace in (x[500:].astype(np.float32), ar1(0.99, dim=100, seed=4)):
        tau = np.asarray(integrated_time(streamed(jnp.asarray(trace))))
        full = full_trace_tau(trace)
        assert abs(tau.mean() / full.mean() - 1) < 0.1, (tau.mean(), full.mean())


def test_level_zero_is_geyers_estimator():
    """Uncorrelated chains: the finest level is BlackJAX's estimator (up to its -1/(n-1) shift)."""
    trace = ar1(0.0, seed=1)
    tau, usable = level_times(streamed(jnp.asarray(trace)))
    difference = np.asarray(tau[0]) - full_trace_tau(trace)
    assert bool(usable[0])
    assert np.median(np.abs(difference)) < 0.01 and np.quantile(np.abs(difference), 0.9) < 0.05


def test_memory_does_not_depend_on_the_number_of_positions():
    levels = ac.levels_for(1000)
    short = jax.eval_shape(lambda: streamed(jnp.zeros((1000, 7))))
    assert [leaf.shape for leaf in jax.tree.leaves(short)] == [
        leaf.shape for leaf in jax.tree.leaves(ac.init(jnp.zeros(7), levels))]
    assert ac.state_floats(7, levels) == sum(
        int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(short) if leaf.dtype == jnp.float32)
    # The ladder grows by one level per doubling of the chain: log, not linear, in its length.
    assert ac.levels_for(5000) == 9 and ac.levels_for(10_000) == 10 and ac.levels_for(2) == 1


def test_vmapped_chains_are_independent_and_reproducible():
    traces = jnp.stack([jnp.asarray(ar1(0.8, n=600, dim=5, seed=s)) for s in range(3)])
    vmapped = jax.jit(jax.vmap(streamed_ess))
    together = vmapped(traces)
    alone = streamed_ess(traces[1])
    np.testing.assert_array_equal(np.asarray(together[1]), np.asarray(alone))
    again = vmapped(traces)
    np.testing.assert_array_equal(np.asarray(together), np.asarray(again))


def test_degenerate_parameters_as_blackjax():
    """A parameter that never moves has ESS 0, a NaN position gives NaN (as BlackJAX), others are unaffected."""
    trace = np.asarray(ar1(0.5, n=300, dim=3, seed=2))
    trace[:, 0] = 1.5
    trace[100, 2] = np.nan
    ess = np.asarray(streamed_ess(jnp.asarray(trace)))
    expected = np.asarray(full_trace_ess(jnp.asarray(trace)))
    assert ess[0] == 0 and expected[0] == 0
    assert np.isnan(ess[2]) and np.isnan(expected[2])
    assert abs(ess[1] / expected[1] - 1) < 0.1


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="lags"):
        ac.init(jnp.zeros(3), 2, lags=3)
    with pytest.raises(ValueError, match="levels"):
        ac.init(jnp.zeros(3), 0)
    with pytest.raises(ValueError, match="flat"):
        ac.init(jnp.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="at least 2 positions"):
        ac.levels_for(1)
