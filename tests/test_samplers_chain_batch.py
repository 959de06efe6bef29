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

from interplay.samplers import grouped_gradients, kernel_group_width, map_chains, pad_chains
from interplay.samplers.mclmc import resolve_config, run_mclmc
from interplay.samplers.prng import unroll_threefry_on_cpu


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


def test_kernel_group_width_defaults_and_validation():
    # CPU: 4 whatever the number of chains (a block of 1 runs in a padded group of 4); GPU: all chains
    assert kernel_group_width(None, "cpu") == 4 and kernel_group_width(None, "gpu") is None
    assert kernel_group_width(8, "gpu") == 8 and kernel_group_width(100, "cpu") == 100
    with pytest.raises(ValueError, match="chain_batch"):
        resolve_config({"warmup_steps": 10, "steps": 10, "thin": 1, "chain_batch": 0})


def test_a_chains_bits_do_not_depend_on_the_number_of_chains_in_fixed_groups():
    # BlackJAX's ESS of a chain's trace, one group of 4 chains or several: the same bits. With a plain loop
    # over groups (lax.map) XLA treated a single group differently (loop removed, slice hoisted) and 93 of
    # chain 0's 929 values moved by an ulp.
    from blackjax.diagnostics import effective_sample_size

    trace = np.cumsum(np.random.default_rng(0).normal(size=(9, 10, 929)).astype(np.float32), axis=1)
    ess = {n: np.asarray(jax.jit(lambda t: map_chains(lambda c: effective_sample_size(c[None]), 4, t))(trace[:n]))
           for n in (1, 3, 4, 5, 9)}
    for n, got in ess.items():
        np.testing.assert_array_equal(got, ess[9][:n], err_msg=f"{n} chains")
    # and equal (to rounding) to the plain vmap
    np.testing.assert_allclose(ess[9], jax.vmap(lambda c: effective_sample_size(c[None]))(trace), rtol=1e-5)


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


def test_threefry_lowering_is_left_alone_for_an_unchecked_jax(caplog, monkeypatch):
    # a JAX whose internals were not checked keeps its own lowering, and the job's log says why
    with caplog.at_level("INFO", logger="interplay.samplers.prng"):
        assert not unroll_threefry_on_cpu("0.99.0")
    assert "JAX 0.99.0: threefry keeps JAX's own CPU lowering" in caplog.text
    assert not unroll_threefry_on_cpu("nightly")
    monkeypatch.setenv("INTERPLAY_THREEFRY", "jax")  # asked for JAX's own lowering
    assert not unroll_threefry_on_cpu()


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
    """5 chains on 2 CPU devices (padded to 6, reports from one device only) = the same 5 on one device,
    bit for bit."""
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
    # the same groups of 4 chains on each device: the same bits (tests/test_chain_independence.py)
    np.testing.assert_array_equal(two["theta"], draws["theta"])
    np.testing.assert_array_equal(two["step_size"], stats["step_size"])
    assert n_sampling_reports == sum(1 for r in reports if r[0] == "sampling")
