"""Sampling jobs end to end on tiny problems: determinism, key independence, formats, known answers."""

import copy

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy.special import logsumexp
from scipy.stats import norm

from interplay.data import sha256_file
from interplay.models import ModelSpec, PriorSpec
from interplay.posterior_io import GROUPS, merge_blocks, open_posterior, read_root_attrs
from interplay.samplers.mfvi import run_mfvi
from interplay.samplers.warmstart import train_ensemble
from interplay.sampling import (
    ProgressLog,
    block_chains,
    chain_keys,
    n_blocks,
    predictive_quantities,
    sample_block,
)

SPLIT_SIZES = {"train": 20, "valid": 10, "test": 8}
RUN = {
    "name": "tiny-mile",
    "dataset": "tiny",
    "data": {"seed": 0, "standardise": "full", "max_train_points": None},
    "model": {"hidden": [4], "activation": "relu", "bias": True, "likelihood": "mean_regr", "sigma": None},
    "prior": {"scale": 1.0, "bias_scale": None, "bias": "gaussian", "log_sigma_scale": 1.0},
    "sampler": {
        "kind": "mile", "chains": 4, "block_size": 4, "seed": 3,
        "warmstart": {"lr": 0.01, "weight_decay": 0.005, "batch_size": 8, "max_epochs": 30, "patience": 5},
        # No phase 3 (L from the ESS): its compilation alone would double the test's time.
        "mclmc": {"warmup_steps": 200, "phases": [0.9, 0.1, 0.0], "energy_var_start": 0.5,
                  "energy_var_end": 0.1, "n_eff": 100, "trust": 1.5, "initial_step_size": 0.01, "steps": 100,
                  "thin": 10},
        "mfvi": {"steps": 200, "lr": 0.01, "draws": 6},
    },
    "diagnostics": {"pred_draw_points": 3},
}
TIMING_STATS = ("warmstart_seconds", "warmup_seconds", "sampling_seconds", "predictive_seconds")


def write_prepared(path, y_fn=None, seed=0):
    """A prepared-data file in DESIGN.md's layout: 1 feature, y = sin(2x) + noise, shuffled splits."""
    rng = np.random.default_rng(seed)
    n = sum(SPLIT_SIZES.values())
    x = rng.normal(size=(n, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n) if y_fn is None else y_fn(x)
    split = np.repeat(list(SPLIT_SIZES), list(SPLIT_SIZES.values()))
    ds = xr.Dataset(
        {"x": (("row", "feature"), x), "y": ("row", y), "split": ("row", split),
         "x_mean": ("feature", [0.0]), "x_std": ("feature", [1.0]), "y_mean": 0.0, "y_std": 1.0},
        coords={"row": np.arange(n), "feature": ["x0"]},
        attrs={"dataset": "tiny", "task": "regression", "seed": seed, "standardise": "full",
               "table_sha256": "-"},
    )
    ds.to_netcdf(path)
    return path


def with_sampler(run, **changes):
    run = copy.deepcopy(run)
    run["sampler"].update(changes)
    return run


def comparable(path, chains=None):
    """All groups of a block, without wall-clock timings, optionally restricted to `chains`."""
    groups = open_posterior(path)
    result = {}
    for group in GROUPS:
        ds = groups[group].load().drop_attrs()
        ds = ds.drop_vars([v for v in TIMING_STATS if v in ds])
        result[group] = ds.sel(chain=list(chains)) if chains is not None else ds
    return result


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("data") / "prepared.nc")


@pytest.fixture(scope="module")
def mile_blocks(tmp_path_factory, data_path):
    """Block 0 of a 4-chain run twice, and block 1 (chains 2, 3) of the same run with block_size 2."""
    out = tmp_path_factory.mktemp("mile")
    log = out / "sample.log"
    sample_block(RUN, 0, data_path, out / "a.nc", log=log)
    sample_block(RUN, 0, data_path, out / "a_again.nc")
    sample_block(with_sampler(RUN, block_size=2), 1, data_path, out / "b1.nc")
    return {"a": out / "a.nc", "a_again": out / "a_again.nc", "b1": out / "b1.nc", "log": log}


def test_blocks_and_keys():
    run = with_sampler(RUN, chains=10, block_size=4)
    assert n_blocks(run) == 3
    assert [block_chains(run, b) for b in range(3)] == [range(4), range(4, 8), range(8, 10)]
    with pytest.raises(ValueError, match="blocks 0..2"):
        block_chains(run, 3)
    keys = chain_keys(7, range(2, 5))
    expected = [jax.random.fold_in(jax.random.PRNGKey(7), c) for c in (2, 3, 4)]
    np.testing.assert_array_equal(keys, np.stack(expected))


def test_same_config_and_seed_give_identical_blocks(mile_blocks):
    a, again = comparable(mile_blocks["a"]), comparable(mile_blocks["a_again"])
    for group in GROUPS:
        xr.testing.assert_identical(a[group], again[group])
    assert np.isfinite(a["posterior"]["kernel_0"]).all()


def test_chain_draws_do_not_depend_on_the_block(mile_blocks):
    in_block_0 = comparable(mile_blocks["a"], chains=[2, 3])
    in_block_1 = comparable(mile_blocks["b1"])
    for group in GROUPS:
        xr.testing.assert_identical(in_block_0[group], in_block_1[group])


def test_mile_block_contents(mile_blocks, data_path):
    groups = open_posterior(mile_blocks["a"])
    post, stats = groups["posterior"], groups["sample_stats"]
    assert post.sizes["draw"] == 10 and post["log_sigma"].dims == ("chain", "draw")
    assert (stats["n_grad_evals"] > 0).all() and (stats["step_size"] > 0).all() and (stats["L"] > 0).all()
    assert np.isfinite(stats["warmstart_val_loss"]).all() and (stats["warmstart_epochs"] >= 1).all()
    attrs = read_root_attrs(mile_blocks["a"])
    assert attrs["run"] == "tiny-mile" and attrs["seed"] == 3 and attrs["config"]["sampler"]["chains"] == 4
    assert {"jax", "blackjax", "numpyro", "interplay", "python"} <= set(attrs["versions"])
    assert attrs["device"].startswith("cpu") and attrs["git_commit"]
    # what the block was sampled on: the prepared file and the data behind it, by sha256
    assert attrs["data"] == {"dataset": "tiny", "table_sha256": "-", "seed": 0, "standardise": "full",
                             "split_order": "shuffle", "prepared_sha256": sha256_file(data_path)}
    log = mile_blocks["log"].read_text()
    for phase in ("warmstart", "warmup", "sampling"):
        assert f"{phase}: step" in log
    assert "steps/s" in log and "ETA" in log


def test_predictive_group_matches_direct_computation(mile_blocks, data_path):
    """Recompute the predictive group in NumPy from the stored draws (float32 forward pass)."""
    from interplay.data import load_split

    x, y = load_split(data_path, "test")
    groups = open_posterior(mile_blocks["a"])
    post = {k: v.values for k, v in groups["posterior"].data_vars.items()}
    hidden = np.maximum(np.einsum("nf,cdfu->cdnu", x, post["kernel_0"]) + post["bias_0"][:, :, None], 0)
    mean = (np.einsum("cdnu,cduo->cdno", hidden, post["kernel_1"]) + post["bias_1"][:, :, None])[..., 0]
    sigma = np.exp(post["log_sigma"])[:, :, None]
    log_lik = norm.logpdf(y, mean, sigma)
    pred = groups["predictive"]
    n_draw = mean.shape[1]
    expected_lpd = logsumexp(log_lik, axis=1) - np.log(n_draw)
    np.testing.assert_allclose(pred["log_pred_density"], expected_lpd, rtol=1e-4)
    np.testing.assert_allclose(pred["pred_mean"], mean.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred["pit"], norm.cdf(y, mean, sigma).mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred["pred_draws"], mean[:, :, :3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred["y_test"], y)


def test_predictive_classification_in_small_chunks():
    """Class probabilities, and pred_draws = probability of the observed class; chunking is exact."""
    model = ModelSpec(in_dim=2, hidden=(), out_dim=3, activation="identity", bias=False, likelihood="class")
    rng = np.random.default_rng(0)
    kernels = rng.normal(size=(5, 4, 2, 3)).astype(np.float32)
    x = rng.normal(size=(6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    logits = np.einsum("nf,cdfk->cdnk", x, kernels)
    probs = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    observed = np.take_along_axis(probs, y[None, None, :, None], axis=-1)[..., 0]
    whole = predictive_quantities(model, {"kernel_0": kernels}, x, y, n_diag=2)
    chunked = predictive_quantities(model, {"kernel_0": kernels}, x, y, n_diag=2, max_elements=6 * 3 * 2)
    for result in (whole, chunked):
        assert "pit" not in result
        np.testing.assert_allclose(result["pred_mean"], probs.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(result["log_pred_density"], np.log(observed.mean(axis=1)), rtol=1e-5)
        np.testing.assert_allclose(result["pred_draws"], observed[:, :, :2], rtol=1e-5)


@pytest.mark.parametrize("kind", ["de", "mfvi"])
def test_baselines_write_the_same_format(kind, mile_blocks, data_path, tmp_path):
    run = with_sampler({**RUN, "name": f"tiny-{kind}"}, kind=kind)
    sample_block(run, 0, data_path, tmp_path / "block.nc")
    mile, other = open_posterior(mile_blocks["a"]), open_posterior(tmp_path / "block.nc")
    for group in GROUPS:
        for name, var in mile[group].data_vars.items():
            if group == "sample_stats" and name.startswith("warmstart") and kind == "mfvi":
                continue
            same = other[group][name].dims == var.dims and other[group][name].dtype == var.dtype
            assert same, (group, name)
    expected_draws = {"de": 1, "mfvi": RUN["sampler"]["mfvi"]["draws"]}[kind]
    assert other["posterior"].sizes["draw"] == expected_draws
    assert np.isfinite(other["predictive"]["log_pred_density"]).all()
    merge_blocks([tmp_path / "block.nc"], tmp_path / "merged.nc")
    idata = arviz.from_netcdf(tmp_path / "merged.nc")
    assert idata.posterior.sizes["chain"] == 4


def test_an_all_diverged_block_is_written_and_merge_keeps_the_other_blocks(tmp_path, data_path):
    """One block whose chains all diverged must not lose the run: it is written with its flags and causes,
    merge drops its chains and keeps the healthy blocks; only a run with no chain left fails to merge."""
    fitted = SPLIT_SIZES["train"] + SPLIT_SIZES["valid"]  # rows before the test split
    good = write_prepared(tmp_path / "good.nc", y_fn=lambda x: np.sin(2 * x[:, 0]))
    bad = write_prepared(tmp_path / "bad.nc",  # the same test split, NaN targets to fit
                         y_fn=lambda x: np.where(np.arange(len(x)) < fitted, np.nan, np.sin(2 * x[:, 0])))
    run = with_sampler({**RUN, "name": "doomed"}, kind="de", chains=6, block_size=3)
    blocks = [tmp_path / "block-0000.nc", tmp_path / "block-0001.nc"]
    sample_block(run, 0, good, blocks[0])
    sample_block(run, 1, bad, blocks[1])  # every chain's warm-start loss is NaN
    groups = open_posterior(blocks[1])
    assert groups["sample_stats"]["diverged"].values.tolist() == [1, 1, 1]
    assert read_root_attrs(blocks[1])["diverged_causes"] == {
        str(c): "non-finite warm-start validation loss" for c in (3, 4, 5)}
    assert groups["predictive"]["log_pred_density"].shape == (3, SPLIT_SIZES["test"])

    summary = merge_blocks(blocks, tmp_path / "merged.nc")
    assert summary["kept"] == 3 and summary["n_diverged_dropped"] == 3 and summary["dropped_chains"] == [3, 4, 5]
    merged = open_posterior(tmp_path / "merged.nc")
    assert merged["posterior"]["chain"].values.tolist() == [0, 1, 2]
    assert np.isfinite(merged["predictive"]["log_pred_density"]).all()
    assert read_root_attrs(tmp_path / "merged.nc")["n_diverged_dropped"] == 3
    with pytest.raises(RuntimeError, match=r"run 'doomed': no chain left.*block-0001\.nc: chains \[3, 4, 5\] "
                                           r"\(non-finite warm-start validation loss: 3\)"):
        merge_blocks(blocks[1:], tmp_path / "none.nc")


def test_an_absurd_learning_rate_diverges_every_chain_and_the_block_is_written(tmp_path, data_path):
    run = with_sampler({**RUN, "name": "doomed"}, kind="mfvi", chains=4, block_size=2,
                       mfvi={"steps": 20, "lr": 1e30, "draws": 3})
    sample_block(run, 1, data_path, tmp_path / "block-0001.nc")
    groups = open_posterior(tmp_path / "block-0001.nc")
    assert groups["sample_stats"]["diverged"].values.tolist() == [1, 1]
    causes = read_root_attrs(tmp_path / "block-0001.nc")["diverged_causes"]
    assert set(causes) == {"2", "3"} and all("non-finite ELBO" in cause for cause in causes.values())
    assert groups["predictive"]["log_pred_density"].shape == (2, SPLIT_SIZES["test"])


def test_warm_start_reaches_least_squares():
    """Linear model, fixed sigma, full batch, no decay: the members converge to the OLS solution."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0]) + 0.2 * rng.normal(size=40)).astype(np.float32)
    model = ModelSpec(in_dim=2, hidden=(), out_dim=1, activation="identity", bias=False,
                      likelihood="mean_regr", sigma=1.0)
    prior = PriorSpec.build(model, scale=1.0)
    cfg = {"lr": 0.05, "weight_decay": 0.0, "batch_size": 40, "max_epochs": 600, "patience": 600}
    params, val_loss = train_ensemble(model, prior, x, y, x, y, chain_keys(0, range(3)), cfg)
    ols = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(params["kernel_0"][:, :, 0], np.tile(ols, (3, 1)), atol=1e-3)
    residual = y - x @ ols
    np.testing.assert_allclose(val_loss, 0.5 * np.mean(residual**2) + 0.5 * np.log(2 * np.pi), rtol=1e-4)


def test_warm_start_early_stopping_keeps_best_members():
    """Validation data unrelated to training: members stop early; val_loss is their best, not last."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = rng.normal(size=32).astype(np.float32)
    x_valid, y_valid = rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=16).astype(np.float32)
    model = ModelSpec(in_dim=3, hidden=(8,), out_dim=2, activation="relu", bias=True, likelihood="regr")
    prior = PriorSpec.build(model, scale=1.0)
    cfg = {"lr": 0.05, "weight_decay": 0.0, "batch_size": 8, "max_epochs": 100, "patience": 3}
    from interplay.models import pointwise_log_likelihood
    from interplay.samplers.warmstart import train_ensemble_with_info

    params, val_loss, epochs = train_ensemble_with_info(model, prior, x, y, x_valid, y_valid,
                                                        chain_keys(0, range(4)), cfg)
    assert (np.asarray(epochs) < 100).all()
    recomputed = jax.vmap(lambda p: -jnp.mean(pointwise_log_likelihood(model, p, x_valid, y_valid)))(params)
    np.testing.assert_allclose(recomputed, val_loss, rtol=1e-5)


def test_mfvi_recovers_conjugate_gaussian_posterior():
    """Bayesian linear regression, known sigma: mean-field VI has the exact posterior mean and
    standard deviations 1 / sqrt(diag(precision))."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    x[:, 1] += 0.5 * x[:, 0]  # correlated features: mean-field sd differs from the marginal sd
    y = (x @ np.array([0.8, -0.4]) + 0.5 * rng.normal(size=20)).astype(np.float32)
    sigma, tau = 0.5, 0.3  # a prior strong enough to move the posterior mean away from OLS
    model = ModelSpec(in_dim=2, hidden=(), out_dim=1, activation="identity", bias=False,
                      likelihood="mean_regr", sigma=sigma)
    prior = PriorSpec.build(model, scale=tau)
    precision = x.T @ x / sigma**2 + np.eye(2) / tau**2
    exact_mean = np.linalg.solve(precision, x.T @ y / sigma**2)
    meanfield_sd = 1 / np.sqrt(np.diag(precision))
    draws, stats = run_mfvi(model, prior, x, y, chain_keys(0, range(2)),
                            {"steps": 4000, "lr": 0.005, "draws": 4000})
    kernel = np.asarray(draws["kernel_0"])[..., 0]  # (chain, draw, feature)
    assert kernel.shape == (2, 4000, 2) and not np.asarray(stats["diverged"]).any()
    np.testing.assert_allclose(kernel.mean(axis=1), np.tile(exact_mean, (2, 1)),
                               atol=0.3 * meanfield_sd.min())
    np.testing.assert_allclose(kernel.std(axis=1), np.tile(meanfield_sd, (2, 1)), rtol=0.15)
    assert np.all(np.asarray(stats["n_grad_evals"]) == 4000)


def test_progress_log_is_rate_limited(tmp_path):
    now = [0.0]
    log = tmp_path / "progress.log"
    progress = ProgressLog(log, prefix="[r b0] ", min_seconds=5.0, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] = step * 0.25  # 4 steps/s
        progress("sampling", step, 100)
    progress("sampling", 100, 100)  # a repeated final report is not logged twice
    lines = log.read_text().splitlines()
    # The first step, then one line per 5 s (20 steps), and the last step.
    assert [int(line.split("step ")[1].split("/")[0]) for line in lines] == [1, 21, 41, 61, 81, 100]
    assert lines[1].endswith("[r b0] sampling: step 21/100, 4.0 steps/s, ETA 20 s")
