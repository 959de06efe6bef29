"""Preemption-safe sampling jobs (interplay.samplers.checkpoint): chunked stages give the same bits as one
chunk; a job stopped (signal) or killed at any chunk boundary of warm start, tuning or sampling resumes
to the same arrays; checkpoints are atomic, refused for other settings, removed with a finished block."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from interplay.models import ModelSpec, PriorSpec
from interplay.samplers.checkpoint import (
    STATE_FILE,
    Checkpoint,
    CheckpointMismatch,
    Interrupted,
    run_stage,
)
from interplay.samplers.mclmc import run_mclmc
from interplay.samplers.warmstart import train_ensemble_with_info
from interplay.sampling import block_checkpoint, block_fingerprint, sample_block
from test_sampling_blocks import RUN, comparable, write_prepared

MCLMC = {"warmup_steps": 200, "steps": 100, "thin": 5}  # phases 160 / 20 / 20 steps, 20 draws


def logdensity(params):
    return -0.5 * jnp.sum(jnp.square(params["theta"] / jnp.array([1.0, 3.0]))) + jnp.sum(jnp.sin(params["phi"]))


def start_positions(n=5):
    return {"theta": jnp.ones((n, 2)), "phi": jnp.linspace(-1, 1, 3 * n).reshape(n, 3)}


class StopAt(Checkpoint):
    """Gets SIGTERM (as Slurm sends it) at its `stop_at`-th chunk boundary: what a preempted job sees."""

    def __init__(self, *args, stop_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at, self.boundaries = stop_at, 0

    def at_boundary(self, stage, step, carry):
        self.boundaries += 1
        if self.boundaries == self.stop_at:
            self.signal = signal.SIGTERM
        super().at_boundary(stage, step, carry)


def same_arrays(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def mclmc_reference():
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    return keys, run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=Checkpoint(chunk_steps=10**6))


# ----------------------------------------------------------------------------- chunks


def test_run_stage_chunks_resumes_and_stops_early(tmp_path):
    def program(carry, first, count):  # steps [first, first + count): add each step's index
        return carry + sum(range(first, first + count))

    checkpoint = Checkpoint(chunk_steps=3)
    seen = []
    assert run_stage(checkpoint, "s", program, 0, 10, progress=seen.append) == sum(range(10))
    assert seen == [0, 3, 6, 9, 10]
    checkpoint.position = ("s", 6, 15)  # resumed after step 6
    assert run_stage(checkpoint, "s", program, None, 10) == sum(range(10))
    assert run_stage(Checkpoint(chunk_steps=3), "s", program, 0, 10, finished=lambda c: c > 10) == sum(range(6))


def test_checkpoint_round_trip_refusal_and_removal(tmp_path):
    directory = tmp_path / "ck"
    saved = Checkpoint(directory, {"settings": "a", "block": 0})
    carry = {"x": np.arange(6.0).reshape(3, 2), "n": (np.int32(4), np.array([True, False, True]))}
    saved.finish("first", {"members": np.ones((3, 2), np.float32)})
    saved.add_draws("sample", 0, {"w": np.ones((3, 2, 4))}, 5)
    saved.save("sample", 2, carry)
    assert sorted(p.name for p in directory.iterdir()) == ["draws-sample-000000000.npz", STATE_FILE]  # no temp

    loaded = Checkpoint(directory, {"settings": "a", "block": 0})
    assert loaded.load() and loaded.resumed_from == ("sample", 2)
    step, got = loaded.resume("sample")
    assert step == 2 and same_arrays(got, carry) and got["n"][1].dtype == bool
    assert same_arrays(loaded.output("first"), {"members": np.ones((3, 2), np.float32)})
    loaded.add_draws("sample", 2, {"w": np.full((3, 3, 4), 2.0)}, 5)
    np.testing.assert_array_equal(loaded.stage_draws("sample", 5)["w"][0, :, 0], [1, 1, 2, 2, 2])

    other = Checkpoint(directory, {"settings": "b", "block": 0})
    with pytest.raises(CheckpointMismatch, match=r"other settings \(settings: saved 'a', now 'b'\).*Delete"):
        other.load()
    loaded.remove()
    assert not directory.exists()
    with pytest.raises(ValueError, match="chunk_steps"):
        Checkpoint(chunk_steps=0)


def test_mclmc_chunks_of_any_length_give_the_same_bits(mclmc_reference):
    keys, (reference, stats) = mclmc_reference
    for chunk in (1, 7, 33):
        draws, chunked = run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=Checkpoint(chunk_steps=chunk))
        assert same_arrays(draws, reference), chunk
        for name in ("step_size", "L", "energy_variance", "diverged"):
            np.testing.assert_array_equal(chunked[name], stats[name], err_msg=f"{name}, chunks of {chunk}")


# Chunks of 15 steps: boundaries 1-11 inside phases 1-2 (180 steps), 12 after them, 13 inside phase 3 (20
# steps), 14 after it, 15-20 inside sampling (20 draws, 3 a chunk).
@pytest.mark.parametrize("stop_at", [3, 12, 13, 14, 17])
def test_mclmc_stopped_at_any_boundary_resumes_to_the_same_bits(mclmc_reference, tmp_path, stop_at):
    keys, (reference, stats) = mclmc_reference
    stopping = StopAt(tmp_path, {"k": 1}, chunk_steps=15, stop_at=stop_at)
    with pytest.raises(Interrupted, match="SIGTERM: state saved at .*rerun the job to resume"):
        run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=stopping)
    resumed = Checkpoint(tmp_path, {"k": 1}, chunk_steps=15)
    assert resumed.load()
    expected = {3: ("mclmc/tune12", 45), 12: None, 13: ("mclmc/tune3", 15), 14: None, 17: ("mclmc/sample", 9)}
    assert resumed.resumed_from == expected[stop_at]
    draws, got = run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=resumed)
    assert same_arrays(draws, reference)
    for name in ("step_size", "L", "energy_variance"):
        np.testing.assert_array_equal(got[name], stats[name])


def test_a_signal_during_a_chunk_saves_the_boundary_before_it(mclmc_reference, tmp_path):
    keys, (reference, _) = mclmc_reference

    class SignalWhileWaiting(Checkpoint):
        def wait(self, result, stage, step, carry):
            if stage.endswith("tune3"):  # the signal arrives while phase 3's first chunk computes
                self.signal = signal.SIGUSR1
            super().wait(result, stage, step, carry)

    with pytest.raises(Interrupted, match="SIGUSR1: state saved at mclmc/tune3 step 0"):
        run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=SignalWhileWaiting(tmp_path, chunk_steps=50))
    resumed = Checkpoint(tmp_path, chunk_steps=50)
    assert resumed.load() and resumed.resumed_from == ("mclmc/tune3", 0)
    assert same_arrays(run_mclmc(logdensity, start_positions(), keys, MCLMC, checkpoint=resumed)[0], reference)


def test_warm_start_in_chunks_and_resumed_gives_the_same_members(tmp_path):
    rng = np.random.default_rng(0)
    x, x_valid = rng.normal(size=(40, 2)), rng.normal(size=(10, 2))
    y, y_valid = np.sin(x[:, 0]), np.sin(x_valid[:, 0])
    run = {**RUN, "model": {**RUN["model"], "hidden": [4]}}
    model = ModelSpec.from_run(run, in_dim=2)
    prior = PriorSpec.from_run(run, model)
    cfg = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 8, "max_epochs": 40, "patience": 3}
    keys = jax.random.split(jax.random.PRNGKey(2), 5)

    def train(checkpoint):
        return train_ensemble_with_info(model, prior, x, y, x_valid, y_valid, keys, cfg, checkpoint=checkpoint)

    reference = train(Checkpoint(chunk_steps=10**6))
    assert reference[2].min() < 40 and reference[2].max() > 4  # a member stopped early; one trained past chunk 2
    assert same_arrays(train(Checkpoint(chunk_steps=5)), reference)  # chunks of one epoch (5 batches)
    with pytest.raises(Interrupted):
        train(StopAt(tmp_path, chunk_steps=10, stop_at=2))
    resumed = Checkpoint(tmp_path, chunk_steps=10)
    assert resumed.load() and resumed.resumed_from == ("warmstart", 4)
    assert same_arrays(train(resumed), reference)


# ----------------------------------------------------------------------------- a real job, killed


JOB = textwrap.dedent("""
    import json, sys
    from interplay.sampling import block_checkpoint, sample_block
    run, data, out, settings = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    checkpoint = block_checkpoint(run, 0, data, settings, log=out + ".log")
    with checkpoint.signals():
        sample_block(run, 0, data, out, log=out + ".log", checkpoint=checkpoint)
""")


def _job(run, data, out, settings):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(run), str(data), str(out), json.dumps(settings)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_saves(log, count, process, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("checkpoint saved") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the job saved fewer than {count} checkpoints: {log.read_text() if log.exists() else ''}")


@pytest.fixture(scope="module")
def job_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    data = write_prepared(root / "prepared.nc")
    run = json.loads(json.dumps(RUN))
    run["sampler"]["mclmc"].update(phases=[0.5, 0.3, 0.2])
    reference = root / "reference.nc"
    sample_block(run, 0, data, reference)
    return root, data, run, reference


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_job_stopped_or_killed_mid_run_resumes_to_the_same_block(job_setup, how):
    root, data, run, reference = job_setup
    out = root / f"{how}.nc"
    settings = {"enabled": True, "dir": str(root / f"checkpoints-{how}"), "every_minutes": 1e-9, "chunk_steps": 20}
    directory = root / f"checkpoints-{how}" / run["name"] / "block-0"
    first = _job(run, data, out, settings)
    _wait_for_saves(root / f"{how}.nc.log", 6, first)  # in the tuning (the warm start saves 3 times)
    first.send_signal(getattr(signal, how))
    output, _ = first.communicate(timeout=300)
    assert first.returncode != 0 and not out.exists()
    if how == "SIGTERM":  # in a stage it saves the boundary; between stages the last save stands
        assert "Interrupted: stopped by SIGTERM" in output
    assert (directory / STATE_FILE).exists()
    second = _job(run, data, out, settings)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    assert "resuming from checkpoint" in (root / f"{how}.nc.log").read_text()
    got, expected = comparable(out), comparable(reference)
    for group in expected:
        xr.testing.assert_identical(got[group], expected[group])
    assert not directory.exists()  # the finished block removed its checkpoint


def test_a_checkpoint_of_other_settings_is_refused_before_sampling(job_setup, tmp_path):
    _, data, run, _ = job_setup
    settings = {"enabled": True, "dir": str(tmp_path), "every_minutes": None, "chunk_steps": 20}
    saved = block_checkpoint(run, 0, data, settings)
    saved.save(None, 0, None)
    changed = json.loads(json.dumps(run))
    changed["sampler"]["mclmc"]["steps"] = 200
    with pytest.raises(CheckpointMismatch, match=f"{saved.state_path}.*other settings.*settings"):
        block_checkpoint(changed, 0, data, settings)
    assert block_fingerprint(run, 0, data) == saved.fingerprint  # the same job: accepted
    assert block_checkpoint(run, 0, data, settings).resumed_from is None
    shutil.rmtree(tmp_path)


def test_mams_with_burn_in_stopped_anywhere_resumes_to_the_same_bits(tmp_path):
    from interplay.samplers.mams import run_mams

    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    # burn-in 100 MCLMC steps, then 20 adjusted warmup transitions and 20 sampling transitions (4 draws)
    cfg = {"warmup_steps": 20, "steps": 20, "thin": 5, "burn_in_steps": 100, "max_integration_steps": 8}
    reference, stats = run_mams(logdensity, start_positions(3), keys, cfg, checkpoint=Checkpoint(chunk_steps=10**6))
    # chunks of 40 steps: 5 adjusted transitions of at most 8 steps, one draw
    chunked, chunked_stats = run_mams(logdensity, start_positions(3), keys, cfg, checkpoint=Checkpoint(chunk_steps=40))
    assert same_arrays(chunked, reference)
    np.testing.assert_array_equal(chunked_stats["L"], stats["L"])
    boundaries = StopAt(tmp_path / "count", chunk_steps=40, stop_at=10**6)
    run_mams(logdensity, start_positions(3), keys, cfg, checkpoint=boundaries)
    for stop_at in (2, boundaries.boundaries - 6, boundaries.boundaries - 1):  # burn-in, tuning, sampling
        directory = tmp_path / str(stop_at)
        with pytest.raises(Interrupted):
            run_mams(logdensity, start_positions(3), keys, cfg,
                     checkpoint=StopAt(directory, chunk_steps=40, stop_at=stop_at))
        resumed = Checkpoint(directory, chunk_steps=40)
        assert resumed.load()
        draws, resumed_stats = run_mams(logdensity, start_positions(3), keys, cfg, checkpoint=resumed)
        assert same_arrays(draws, reference), resumed.resumed_from
        for name in ("step_size", "L", "acceptance_rate", "n_grad_evals"):
            np.testing.assert_array_equal(resumed_stats[name], stats[name])


def test_a_signal_outside_a_chunked_stage_stops_the_job_at_once(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    with checkpoint.signals(), pytest.raises(Interrupted, match="outside a chunked stage"):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)  # never reached: the handler raises
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the job's handlers are gone again
