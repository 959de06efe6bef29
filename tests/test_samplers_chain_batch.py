"""Chains advanced in vectorised groups (sampler.mclmc.chain_batch) give the same chains as all at once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplay.samplers import chain_batch_size, map_chains
from interplay.samplers.mclmc import resolve_config, run_mclmc


def test_map_chains_equals_vmap():
    x = jnp.arange(10.0).reshape(5, 2)
    for batch in [1, 2, 3, 5, 8]:
        np.testing.assert_allclose(map_chains(lambda row: row.sum() * 2, (x,), batch), x.sum(axis=1) * 2)


def test_chain_batch_size_and_validation():
    assert chain_batch_size(None, 64) == 64
    assert chain_batch_size(8, 64) == 8 and chain_batch_size(100, 64) == 64
    with pytest.raises(ValueError, match="chain_batch"):
        resolve_config({"warmup_steps": 10, "steps": 10, "thin": 1, "chain_batch": 0})


def test_grouped_chains_match_all_at_once():
    def logdensity(params):
        return -0.5 * jnp.sum(jnp.square(params["theta"] / jnp.array([1.0, 3.0])))

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(4))
    start = {"theta": jax.random.normal(jax.random.PRNGKey(1), (4, 2))}
    cfg = {"warmup_steps": 60, "steps": 40, "thin": 4}
    together, stats_together = run_mclmc(logdensity, start, keys, cfg)
    grouped, stats_grouped = run_mclmc(logdensity, start, keys, {**cfg, "chain_batch": 3})
    # float32 rounding differs between group sizes and grows along a chain; mixed-up keys or states would
    # give entirely different chains
    np.testing.assert_allclose(grouped["theta"], together["theta"], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(stats_grouped["step_size"], stats_together["step_size"], rtol=1e-3)
