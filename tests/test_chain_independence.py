"""What a chain keeps whichever block ran it (DESIGN.md), on the paper's airfoil net and likelihood and the
full airfoil training split.

- The warm start is bit-identical for every block size: members train in groups of a fixed width.
- MCLMC is not: XLA CPU picks a matmul's blocking, hence its summation order over the 1,052 training
  points, from the number of chains vectorised together, so a chain's gradient differs by float32 rounding
  between block sizes (tested here: within 1e-4 relative), and a chaotic sampler amplifies that over many
  steps. Chains of different block sizes are draws of the same law; the same block (same config and seed)
  gives identical arrays.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplay.data import load_split, prepare_split
from interplay.models import ModelSpec, PriorSpec, make_logdensity
from interplay.samplers.mclmc import run_mclmc
from interplay.samplers.warmstart import train_ensemble
from interplay.sampling import SAMPLER_STREAM, WARMSTART_STREAM, _stream, chain_keys

N_CHAINS = 7
BLOCK_SIZES = (1, 2, 4, 7)
RUN = {"model": {"hidden": [16, 16, 16, 16], "activation": "relu", "bias": True, "likelihood": "regr",
                 "sigma": None},
       "prior": {"scale": 1.0, "bias_scale": None, "bias": "gaussian", "log_sigma_scale": 1.0}}
WARMSTART = {"lr": 0.01, "weight_decay": 0.005, "batch_size": 64, "max_epochs": 3, "patience": 10}


@pytest.fixture(scope="module")
def airfoil(mirror_dir, tmp_path_factory):
    path = prepare_split(mirror_dir / "airfoil.data", tmp_path_factory.mktemp("airfoil") / "prepared.nc",
                         dataset="airfoil", seed=0, standardise="full")
    (x, y), (x_valid, y_valid) = load_split(path, "train"), load_split(path, "valid")
    model = ModelSpec.from_run(RUN, in_dim=x.shape[1])
    prior = PriorSpec.from_run(RUN, model)
    return model, prior, np.asarray(x, np.float32), np.asarray(y, np.float32), x_valid, y_valid


def warm_start_blocks(airfoil, block_size):
    model, prior, x, y, x_valid, y_valid = airfoil
    result = {}
    for start in range(0, N_CHAINS, block_size):
        chains = range(start, min(start + block_size, N_CHAINS))
        members, val_loss = train_ensemble(model, prior, x, y, x_valid, y_valid,
                                           _stream(chain_keys(0, chains), WARMSTART_STREAM), WARMSTART)
        for i, chain in enumerate(chains):
            result[chain] = {k: np.asarray(v[i]) for k, v in members.items()} | {"val_loss": np.asarray(val_loss[i])}
    return result


def test_warm_start_is_bit_identical_for_every_block_size(airfoil):
    reference = warm_start_blocks(airfoil, 1)
    for block_size in BLOCK_SIZES[1:]:
        got = warm_start_blocks(airfoil, block_size)
        for chain, expected in reference.items():
            for name, value in expected.items():
                assert np.array_equal(got[chain][name], value), (
                    f"block size {block_size}: chain {chain}'s warm-start {name} differs "
                    f"(max {np.max(np.abs(got[chain][name] - value))})")


def test_gradients_differ_between_block_sizes_by_rounding_only(airfoil):
    model, prior, x, y, *_ = airfoil
    logdensity = jax.jit(jax.vmap(jax.value_and_grad(make_logdensity(model, prior, x, y))))
    from interplay.models import init_params

    positions = jax.vmap(lambda k: init_params(model, k))(chain_keys(0, range(N_CHAINS)))
    value_1, grad_1 = logdensity(jax.tree.map(lambda leaf: leaf[:1], positions))
    for width in BLOCK_SIZES[1:]:
        value, grad = logdensity(jax.tree.map(lambda leaf, n=width: leaf[:n], positions))
        np.testing.assert_allclose(value[0], value_1[0], rtol=1e-5)
        for name in grad:
            scale = float(jnp.max(jnp.abs(grad_1[name][0])))
            np.testing.assert_allclose(grad[name][0], grad_1[name][0], rtol=0, atol=1e-4 * scale + 1e-6)


def test_the_same_block_gives_identical_arrays(airfoil):
    model, prior, x, y, x_valid, y_valid = airfoil
    keys = chain_keys(0, range(3, 5))
    members, _ = train_ensemble(model, prior, x, y, x_valid, y_valid, _stream(keys, WARMSTART_STREAM), WARMSTART)
    cfg = {"warmup_steps": 60, "steps": 20, "thin": 5}
    logdensity = make_logdensity(model, prior, x, y)
    first = run_mclmc(logdensity, members, _stream(keys, SAMPLER_STREAM), cfg)
    again = run_mclmc(make_logdensity(model, prior, x, y), members, _stream(keys, SAMPLER_STREAM), cfg)
    for name in first[0]:
        assert np.array_equal(first[0][name], again[0][name])
    for name in ("step_size", "L", "energy_variance"):
        assert np.array_equal(first[1][name], again[1][name])
