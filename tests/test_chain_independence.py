"""A chain is the same whichever block ran it (DESIGN.md), bit for bit, on the paper's airfoil net and
likelihood and the full airfoil training split (1,052 points).

- The warm start: members train in groups of a fixed width.
- MCLMC: draws, tuned step size and L and energy variance, for block sizes 1, 2, 4 and 7 and for one or
  two CPU devices. Every per-chain computation (gradients, the kernel's reductions, the tuning's
  estimates) runs in chain groups of a fixed width (`interplay.samplers.map_chains`); without them XLA CPU
  picks a matmul's blocking, hence its summation order over the training points, from the number of
  chains vectorised together, and the chaotic sampler amplifies the rounding (step sizes 0.137 / 0.147 /
  0.179 for chain 0 in blocks of 1 / 2 / 7 after 100 warmup steps).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

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
# Short, but all three tuning phases (80 / 10 / 10 steps) and sampling; before the fixed groups every
# chain but one differed between block sizes after these steps.
MCLMC = {"warmup_steps": 100, "steps": 20, "thin": 5}
STATS = ("step_size", "L", "energy_variance", "diverged")


def load_airfoil(prepared: Path):
    (x, y), (x_valid, y_valid) = load_split(prepared, "train"), load_split(prepared, "valid")
    model = ModelSpec.from_run(RUN, in_dim=x.shape[1])
    prior = PriorSpec.from_run(RUN, model)
    return model, prior, np.asarray(x, np.float32), np.asarray(y, np.float32), x_valid, y_valid


@pytest.fixture(scope="module")
def prepared(mirror_dir, tmp_path_factory):
    return prepare_split(mirror_dir / "airfoil.data", tmp_path_factory.mktemp("airfoil") / "prepared.nc",
                         dataset="airfoil", seed=0, standardise="full")


@pytest.fixture(scope="module")
def airfoil(prepared):
    return load_airfoil(prepared)


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


def sampler_blocks(airfoil, members, block_sizes, run_fn, cfg, stats, n_chains=N_CHAINS):
    """{(block size, chain): {name: array}}: chain c's draws and `stats`, sampled by `run_fn` in blocks of
    each size."""
    model, prior, x, y, *_ = airfoil
    logdensity = make_logdensity(model, prior, x, y)
    result = {}
    for block_size in block_sizes:
        for start in range(0, n_chains, block_size):
            chains = np.arange(start, min(start + block_size, n_chains))
            draws, chain_stats = run_fn(logdensity, {k: v[chains] for k, v in members.items()},
                                        _stream(chain_keys(0, chains), SAMPLER_STREAM), cfg)
            for i, chain in enumerate(chains):
                result[block_size, int(chain)] = ({name: np.asarray(v[i]) for name, v in draws.items()}
                                                  | {name: np.asarray(chain_stats[name][i]) for name in stats})
    return result


def mclmc_blocks(airfoil, members, block_sizes):
    return sampler_blocks(airfoil, members, block_sizes, run_mclmc, MCLMC, STATS)


def assert_identical(got, expected, where):
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), (
            f"{where}: {name} differs (max {np.max(np.abs(got[name].astype(float) - value.astype(float)))})")


def test_warm_start_is_bit_identical_for_every_block_size(airfoil):
    reference = warm_start_blocks(airfoil, 1)
    for block_size in BLOCK_SIZES[1:]:
        got = warm_start_blocks(airfoil, block_size)
        for chain, expected in reference.items():
            assert_identical(got[chain], expected, f"block size {block_size}: chain {chain}'s warm start")


@pytest.fixture(scope="module")
def members(airfoil):
    model, prior, x, y, x_valid, y_valid = airfoil
    params, _ = train_ensemble(model, prior, x, y, x_valid, y_valid,
                               _stream(chain_keys(0, range(N_CHAINS)), WARMSTART_STREAM), WARMSTART)
    return {name: np.asarray(value) for name, value in params.items()}


def test_mclmc_chains_are_bit_identical_for_every_block_size_and_device_count(airfoil, members, prepared,
                                                                              tmp_path):
    np.savez(tmp_path / "members.npz", **members)
    # Two CPU devices (a block's chains split over them, padded to equal shares) in a fresh process.
    script = textwrap.dedent(f"""
        import sys
        from interplay.samplers import use_cpu_cores
        use_cpu_cores(2)
        import jax, numpy as np
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_chain_independence import load_airfoil, mclmc_blocks
        assert len(jax.devices()) == 2
        members = dict(np.load({str(tmp_path / 'members.npz')!r}))
        result = mclmc_blocks(load_airfoil(Path({str(prepared)!r})), members, (2, 7))
        np.savez({str(tmp_path / 'two.npz')!r},
                 **{{f"{{b}}/{{c}}/{{name}}": v for (b, c), arrays in result.items() for name, v in arrays.items()}})
    """)
    log = tmp_path / "two_devices.log"
    with log.open("w") as log_file:  # runs alongside this process's own blocks
        two_devices = subprocess.Popen([sys.executable, "-c", script], stdout=log_file, stderr=subprocess.STDOUT)
        one_device = mclmc_blocks(airfoil, members, BLOCK_SIZES)
        two_devices.wait()
    assert two_devices.returncode == 0, log.read_text()[-4000:]
    with np.load(tmp_path / "two.npz") as saved:
        two = {}
        for key in saved.files:
            block_size, chain, name = key.split("/")
            two.setdefault((int(block_size), int(chain)), {})[name] = saved[key]

    for chain in range(N_CHAINS):
        expected = one_device[1, chain]
        assert not expected["diverged"]
        for block_size in BLOCK_SIZES[1:]:
            assert_identical(one_device[block_size, chain], expected,
                             f"chain {chain}, block size {block_size} vs 1")
        for block_size in (2, 7):
            assert_identical(two[block_size, chain], expected,
                             f"chain {chain}, block size {block_size} on 2 CPU devices vs block size 1 on one")


# MAMS: the MCLMC burn-in, the adjusted tuning and sampling, short (every phase runs).
MAMS = {"burn_in_steps": 50, "warmup_steps": 20, "steps": 10, "thin": 5, "max_integration_steps": 16}
MAMS_STATS = ("step_size", "L", "acceptance_rate", "n_integration_steps", "n_grad_evals", "diverged")


def test_mams_chains_are_bit_identical_for_every_block_size(airfoil, members):
    from interplay.samplers.mams import run_mams

    result = sampler_blocks(airfoil, members, (1, 3), run_mams, MAMS, MAMS_STATS, n_chains=3)
    for chain in range(3):
        assert_identical(result[3, chain], result[1, chain], f"MAMS chain {chain}, block size 3 vs 1")
