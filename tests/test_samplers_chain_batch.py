"""Chains split over devices and gradient groups (sampler.mclmc.chain_batch) give the same chains as
all at once on one device."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplay.samplers import chain_batch_size, grouped_gradients, pad_chains, unroll_threefry_on_cpu
from interplay.samplers.mclmc import resolve_config, run_mclmc


def logdensity(params):
    return -0.5 * jnp.sum(jnp.square(params["theta"] / jnp.array([1.0, 3.0]))) + jnp.sum(jnp.sin(params["phi"]))


def test_grouped_gradients_equal_plain_value_and_grad():
    positions = {"theta": jnp.arange(14.0).reshape(7, 2) / 7, "phi": jnp.linspace(-2, 2, 21).reshape(7, 3)}
    expected = jax.vmap(jax.value_and_grad(logdensity))(positions)
    for group in [1, 2, 3, 7, 10]:
        grouped = grouped_gradients(logdensity, group)
        got = jax.jit(jax.vmap(jax.value_and_grad(grouped)))(positions)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)
    # one chain (no vmap) and a scaled cotangent
    one = jax.tree.map(lambda leaf: leaf[2], positions)
    grad_twice = jax.grad(lambda p: 2.0 * grouped_gradients(logdensity, 2)(p))(one)
    np.testing.assert_allclose(grad_twice["phi"], 2 * jnp.cos(one["phi"]), rtol=1e-6)


def test_chain_batch_size_defaults_and_validation():
    assert chain_batch_size(None, 64, "gpu") == 64
    assert chain_batch_size(None, 64, "cpu") == 4 and chain_batch_size(None, 3, "cpu") == 3
    assert chain_batch_size(8, 64, "gpu") == 8 and chain_batch_size(100, 64, "cpu") == 64
    with pytest.raises(ValueError, match="chain_batch"):
        resolve_config({"warmup_steps": 10, "steps": 10, "thin": 1, "chain_batch": 0})


def test_pad_chains_repeats_chain_zero():
    tree = {"a": jnp.arange(3.0), "keys": jax.random.split(jax.random.PRNGKey(0), 3)}
    padded = pad_chains(tree, 5)
    np.testing.assert_array_equal(padded["a"], [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(padded["keys"][4], tree["keys"][0])


def test_threefry_unrolled_on_cpu_gives_reference_bits():
    # Random123's known answer for threefry2x32 (also in JAX's own tests), now from the unrolled lowering.
    from jax._src.random.threefry2x32 import threefry_2x32

    assert unroll_threefry_on_cpu()
    key = jnp.array([0x13198A2E, 0x03707344], dtype=jnp.uint32)
    count = jnp.array([0x243F6A88, 0x85A308D3], dtype=jnp.uint32)
    compiled = jax.jit(threefry_2x32).lower(key, count).compile()
    assert "while" not in compiled.as_text()
    np.testing.assert_array_equal(np.asarray(compiled(key, count)),
                                  np.array([0xC4923A9C, 0x483DF7A0], dtype=np.uint32))


CFG = {"warmup_steps": 60, "steps": 40, "thin": 4}


def _start(n_chains):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(n_chains))
    start = {"theta": jax.random.normal(jax.random.PRNGKey(1), (n_chains, 2)),
             "phi": jax.random.normal(jax.random.PRNGKey(2), (n_chains, 3))}
    return start, keys


def test_grouped_chains_match_all_at_once():
    start, keys = _start(5)
    together, stats_together = run_mclmc(logdensity, start, keys, {**CFG, "chain_batch": 5})
    grouped, stats_grouped = run_mclmc(logdensity, start, keys, {**CFG, "chain_batch": 2})
    # float32 rounding differs between group sizes and grows along a chain; mixed-up keys or states would
    # give entirely different chains
    np.testing.assert_allclose(grouped["theta"], together["theta"], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(stats_grouped["step_size"], stats_together["step_size"], rtol=1e-3)


def test_chains_split_over_two_cpu_devices_match_one_device(tmp_path):
    """5 chains on 2 CPU devices (padded to 6, reports from one device only) = the same 5 on one device."""
    script = textwrap.dedent(f"""
        import json, sys
        from interplay.samplers import use_cpu_cores
        use_cpu_cores(2)
        import jax, numpy as np
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_samplers_chain_batch import CFG, _start, logdensity
        from interplay.samplers.mclmc import run_mclmc
        assert len(jax.devices()) == 2
        reports = []
        start, keys = _start(5)
        draws, stats = run_mclmc(logdensity, start, keys, CFG, progress=lambda *r: reports.append(r))
        np.savez({str(tmp_path / 'two.npz')!r}, theta=draws["theta"], step_size=stats["step_size"])
        print(json.dumps(sum(1 for r in reports if r[0] == "sampling")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    n_sampling_reports = json.loads(out.stdout.strip().splitlines()[-1])
    reports = []
    start, keys = _start(5)
    draws, stats = run_mclmc(logdensity, start, keys, CFG, progress=lambda *r: reports.append(r))
    two = np.load(tmp_path / "two.npz")
    assert two["theta"].shape == draws["theta"].shape == (5, 10, 2)
    np.testing.assert_allclose(two["theta"], draws["theta"], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(two["step_size"], stats["step_size"], rtol=1e-3)
    assert n_sampling_reports == sum(1 for r in reports if r[0] == "sampling")
