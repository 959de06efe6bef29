"""Laplace (`sampler.kind: laplace`): known answers on Bayesian linear regression (last layer, full GGN;
and the diagonal GGN), the diagonal GGN and its linearised predictive against full Jacobians, the block
format through `sample_block`, and its configuration errors."""

import copy
import math
import re

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.stats import norm

from interplay.config import ConfigError, deep_merge, resolve_runs
from interplay.data import load_split
from interplay.models import ModelSpec, PriorSpec, forward, init_params
from interplay.posterior_io import GROUPS, merge_blocks, open_posterior
from interplay.samplers.laplace import (
    check_cfg,
    check_model,
    covariance,
    diagonal_ggn,
    diagonal_linearised_predictive,
    draw_last_layer,
    gaussian_output_hessian,
    jacobian_chunk,
    laplace_predictive,
    last_layer_posterior,
    linearised_predictive,
    run_laplace,
    softmax_output_hessian,
)
from interplay.sampling import chain_keys, sample_block
from test_sampling_blocks import RUN, write_prepared

SIGMA, TAU, BIAS_TAU = 0.5, 0.7, 2.0
CFG = {"lr": 0.02, "weight_decay": 0.0, "epochs": 3000, "draws": 50, "objective": "posterior",
       "ggn_noise_var": None, "subset": "last_layer", "hessian": "full"}
DIAG_CFG = {**CFG, "subset": "all", "hessian": "diagonal"}


@pytest.fixture(scope="module")
def linear_problem():
    """Bayesian linear regression y = x w + b + N(0, sigma^2), w ~ N(0, tau^2), b ~ N(0, bias_tau^2), and
    its exact conjugate posterior (float64)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    x[:, 1] += 0.6 * x[:, 0]  # correlated features: a full (non-diagonal) posterior covariance
    y = x @ np.array([0.8, -0.5]) + 0.3 + SIGMA * rng.normal(size=40)
    x_test = rng.normal(size=(7, 2))
    y_test = x_test @ np.array([0.8, -0.5]) + 0.3 + SIGMA * rng.normal(size=7)
    design = np.column_stack([x, np.ones(len(x))])
    precision = design.T @ design / SIGMA**2 + np.diag([TAU**-2, TAU**-2, BIAS_TAU**-2])
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ y / SIGMA**2
    test_design = np.column_stack([x_test, np.ones(len(x_test))])
    pred_var = np.einsum("ij,jk,ik->i", test_design, cov, test_design) + SIGMA**2
    model = ModelSpec(in_dim=2, hidden=(), out_dim=1, activation="relu", bias=True, likelihood="mean_regr",
                      sigma=SIGMA)
    prior = PriorSpec.build(model, scale=TAU, bias_scale=BIAS_TAU)
    draws, stats, fits = run_laplace(model, prior, x.astype(np.float32), y.astype(np.float32),
                                     chain_keys(0, range(2)), CFG)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test, "mean": mean, "cov": cov,
            "pred_mean": test_design @ mean, "pred_var": pred_var, "model": model, "prior": prior,
            "draws": draws, "stats": stats, "fits": fits, "design": design}


def test_laplace_of_linear_regression_is_the_exact_posterior(linear_problem):
    p = linear_problem
    sd = np.sqrt(np.diag(p["cov"]))
    assert not p["stats"]["diverged"].any() and np.all(p["stats"]["n_grad_evals"] == CFG["epochs"])
    for chain in range(2):
        # the MAP found by AdamW is the posterior mode, to a small fraction of a posterior sd
        np.testing.assert_allclose(np.asarray(p["fits"]["mean"][chain]), p["mean"], atol=1e-3 * sd.min())
        # the precision of a linear-Gaussian model does not depend on the mode: float32 tolerance
        np.testing.assert_allclose(np.asarray(covariance(p["fits"]["chol"][chain])), p["cov"], rtol=2e-5,
                                   atol=2e-5 * sd.max() ** 2)


def test_laplace_predictive_of_linear_regression_is_the_exact_predictive(linear_problem):
    p = linear_problem
    predictive = laplace_predictive(p["model"], p["fits"], p["x_test"], p["y_test"])
    sd = np.sqrt(p["pred_var"])
    z = np.abs(p["y_test"] - p["pred_mean"]) / sd
    for chain in range(2):
        # the mode is found to 1e-3 posterior sds: the mean to 1e-3 predictive sds, log densities to 1e-3 |z|
        np.testing.assert_allclose(predictive["pred_mean"][chain], p["pred_mean"], atol=1e-3 * sd.min())
        assert np.all(np.abs(predictive["log_pred_density"][chain] - norm.logpdf(p["y_test"], p["pred_mean"], sd))
                      < 1e-3 * (z + 0.1))
        np.testing.assert_allclose(predictive["pit"][chain], norm.cdf(p["y_test"], p["pred_mean"], sd), atol=1e-3)


def test_laplace_is_exact_from_the_exact_mode_in_float32():
    """The pure pieces, from the exact mode: the covariance and the predictive variance to float tolerance."""
    rng = np.random.default_rng(2)
    design = np.column_stack([rng.normal(size=(30, 3)), np.ones(30)])
    prior_precision = np.array([1.0, 4.0, 0.25, 0.0])  # a flat bias prior: precision 0
    precision = design.T @ design / SIGMA**2 + np.diag(prior_precision)
    _, chol = last_layer_posterior(design.astype(np.float32), np.zeros(4, np.float32),
                                      prior_precision.astype(np.float32), SIGMA**2)
    cov = np.linalg.inv(precision)
    np.testing.assert_allclose(np.asarray(covariance(chol)), cov, rtol=1e-5, atol=1e-8)
    test = np.column_stack([rng.normal(size=(5, 3)), np.ones(5)])
    mode = rng.normal(size=4)
    pred_mean, pred_var = linearised_predictive(test.astype(np.float32), mode.astype(np.float32), chol, SIGMA**2)
    np.testing.assert_allclose(np.asarray(pred_mean), test @ mode, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pred_var), np.einsum("ij,jk,ik->i", test, cov, test) + SIGMA**2, rtol=1e-5)


def test_draws_follow_the_laplace_gaussian(linear_problem):
    """Sample mean and covariance of many draws match N(mean, cov): each entry within 5 Monte Carlo sds."""
    p = linear_problem
    n = 20000
    mean, chol = p["fits"]["mean"][0], p["fits"]["chol"][0]
    draws = np.asarray(draw_last_layer(chain_keys(5, [0])[0], mean, chol, n), np.float64)
    cov = np.asarray(covariance(chol), np.float64)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(draws.mean(axis=0) - np.asarray(mean)) < 5 * se_mean)
    sd = np.sqrt(np.diag(cov))
    se_cov = np.sqrt((np.outer(sd, sd) ** 2 + cov**2) / n)  # Gaussian sampling sd of a covariance entry
    assert np.all(np.abs(np.cov(draws.T) - cov) < 5 * se_cov)
    # the stored draws: the last layer from the Gaussian, its shapes those of the posterior group
    assert p["draws"]["kernel_0"].shape == (2, CFG["draws"], 2, 1) and p["draws"]["bias_0"].shape == (2, CFG["draws"], 1)


# ----------------------------------------------------------------------------- the diagonal GGN


@pytest.mark.parametrize("subset", ["all", "last_layer"])
def test_diagonal_ggn_of_linear_regression_is_the_diagonal_of_the_exact_precision(linear_problem, subset):
    """No hidden layer: the GGN is X^T X / sigma^2 exactly, so the diagonal variant's precisions are the
    diagonal of the exact posterior precision X^T X / sigma^2 + diag(1 / tau^2), its mean the posterior mode
    and its predictive variance sum_j x_j^2 var_j + sigma^2."""
    p = linear_problem
    precision = p["design"].T @ p["design"] / SIGMA**2 + np.diag([TAU**-2, TAU**-2, BIAS_TAU**-2])
    expected_var = 1.0 / np.diag(precision)
    cfg = {**DIAG_CFG, "subset": subset}
    draws, stats, fits = run_laplace(p["model"], p["prior"], p["x"].astype(np.float32), p["y"].astype(np.float32),
                                     chain_keys(0, range(1)), cfg)
    assert not stats["diverged"].any() and set(fits["var"]) == {"kernel_0", "bias_0"}
    var = np.concatenate([np.asarray(fits["var"]["kernel_0"][0])[:, 0], np.asarray(fits["var"]["bias_0"][0])])
    np.testing.assert_allclose(var, expected_var, rtol=2e-5)
    sd = np.sqrt(np.diag(p["cov"]))
    mode = np.concatenate([np.asarray(fits["map"]["kernel_0"][0])[:, 0], np.asarray(fits["map"]["bias_0"][0])])
    np.testing.assert_allclose(mode, p["mean"], atol=1e-3 * sd.min())

    predictive = laplace_predictive(p["model"], fits, p["x_test"], p["y_test"])
    test_design = np.column_stack([p["x_test"], np.ones(len(p["x_test"]))])
    pred_var = test_design**2 @ expected_var + SIGMA**2
    pred_mean = test_design @ mode
    np.testing.assert_allclose(predictive["pred_mean"][0], pred_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predictive["log_pred_density"][0], norm.logpdf(p["y_test"], pred_mean, np.sqrt(pred_var)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(predictive["pit"][0], norm.cdf(p["y_test"], pred_mean, np.sqrt(pred_var)), atol=1e-5)
    # the draws: every covered leaf from N(mode, var), shapes those of the posterior group
    assert draws["kernel_0"].shape == (1, CFG["draws"], 2, 1) and draws["bias_0"].shape == (1, CFG["draws"], 1)
    assert np.all(np.asarray(draws["kernel_0"]).std(axis=1) > 0)


@pytest.fixture(scope="module")
def small_net():
    """A two-hidden-layer tanh net at random parameters, its inputs, and its flat full Jacobian (jacfwd)."""
    model = ModelSpec(in_dim=2, hidden=(5, 3), out_dim=1, activation="tanh", bias=True, likelihood="mean_regr",
                      sigma=SIGMA)
    params = init_params(model, jax.random.key(3))
    flat, unravel = ravel_pytree(params)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
    x_test = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)

    def flat_jacobian(points):  # (n, P): d f(x_i) / d theta by forward mode, independent of the vjp path
        return np.asarray(jax.jacfwd(lambda theta: forward(model, unravel(theta), points)[:, 0])(flat), np.float64)

    return {"model": model, "params": params, "unravel": unravel, "n_params": flat.shape[0], "x": x,
            "x_test": x_test, "jac": flat_jacobian(x), "jac_test": flat_jacobian(x_test)}


def _apply(model, params):
    return lambda sub, x_point: forward(model, {**params, **sub}, x_point[None])[0]


@pytest.mark.parametrize("chunk", [1, 4, 10])  # 4: the last chunk padded
def test_diagonal_ggn_is_the_diagonal_of_the_full_jacobian_ggn(small_net, chunk):
    net = small_net
    ggn = diagonal_ggn(_apply(net["model"], net["params"]), net["params"], net["x"], gaussian_output_hessian(0.3),
                       chunk)
    flat, _ = ravel_pytree(ggn)
    np.testing.assert_allclose(np.asarray(flat), np.sum(net["jac"] ** 2, axis=0) / 0.3, rtol=1e-4, atol=1e-6)


def test_softmax_ggn_is_the_diagonal_of_jt_h_j():
    model = ModelSpec(in_dim=2, hidden=(4,), out_dim=3, activation="relu", bias=True, likelihood="class")
    params = init_params(model, jax.random.key(5))
    flat, unravel = ravel_pytree(params)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(9, 2)), jnp.float32)
    logits = np.asarray(forward(model, params, x), np.float64)
    jac = np.asarray(jax.jacfwd(lambda theta: forward(model, unravel(theta), x))(flat), np.float64)  # (n, 3, P)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    h = np.einsum("ia,ab->iab", p, np.eye(3)) - np.einsum("ia,ib->iab", p, p)
    ggn = diagonal_ggn(_apply(model, params), params, x, softmax_output_hessian, 4)
    np.testing.assert_allclose(np.asarray(ravel_pytree(ggn)[0]), np.einsum("iap,iab,ibp->p", jac, h, jac),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [3, 7])
def test_diagonal_predictive_variance_is_the_full_jacobian_formula(small_net, chunk):
    """sum_j J_j(x)^2 var_j + sigma^2 over every leaf, J by jacfwd; the mean is the net at the MAP."""
    net = small_net
    var = net["unravel"](jnp.asarray(np.random.default_rng(7).uniform(0.01, 0.5, net["n_params"]), jnp.float32))
    mean, pred_var = diagonal_linearised_predictive(_apply(net["model"], net["params"]), net["params"], var,
                                                    net["x_test"], SIGMA**2, chunk)
    var_flat = np.asarray(ravel_pytree(var)[0], np.float64)
    np.testing.assert_allclose(np.asarray(pred_var), net["jac_test"] ** 2 @ var_flat + SIGMA**2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(forward(net["model"], net["params"], net["x_test"]))[:, 0],
                               rtol=1e-6, atol=1e-6)


def test_jacobian_chunk_bounds_the_jacobians_held():
    assert jacobian_chunk(1000, 50, budget=10_000) == 10
    assert jacobian_chunk(10**8, 50, budget=10_000) == 1  # at least one point
    assert jacobian_chunk(10, 50, budget=10_000) == 50  # at most n


# ----------------------------------------------------------------------------- the block format


LAPLACE_RUN = deep_merge(copy.deepcopy(RUN), {
    "name": "tiny-laplace",
    "model": {"hidden": [4, 4], "sigma": math.sqrt(0.1)},
    "sampler": {"kind": "laplace", "chains": 3, "block_size": 3,
                "laplace": {"lr": 0.005, "weight_decay": 0.0001, "epochs": 300, "draws": 40,
                            "objective": "likelihood", "ggn_noise_var": 1.0, "aleatoric_var": 0.1,
                            "subset": "last_layer", "hessian": "full"}},
})


@pytest.fixture(scope="module")
def laplace_block(tmp_path_factory):
    out = tmp_path_factory.mktemp("laplace")
    data = write_prepared(out / "prepared.nc")
    sample_block(LAPLACE_RUN, 0, data, out / "block.nc")
    return {"data": data, "block": out / "block.nc", "dir": out}


def test_laplace_block_has_the_block_format_and_its_closed_form_predictive(laplace_block):
    groups = open_posterior(laplace_block["block"])
    posterior, predictive, stats = groups["posterior"], groups["predictive"], groups["sample_stats"]
    assert set(GROUPS) <= set(groups)
    assert posterior.sizes["chain"] == 3 and posterior.sizes["draw"] == 40
    assert set(posterior.data_vars) == {"kernel_0", "bias_0", "kernel_1", "bias_1", "kernel_2", "bias_2"}
    assert (stats["diverged"].values == 0).all() and np.isfinite(stats["map_loss"].values).all()
    # every leaf but the last layer's stays at the MAP; the last layer varies over draws
    for name in ("kernel_0", "bias_0", "kernel_1", "bias_1"):
        values = posterior[name].values
        assert np.all(values == values[:, :1]), name
    assert np.all(posterior["kernel_2"].values.std(axis=1) > 0)

    # the closed-form predictive, recomputed in float64 from the stored MAP and the training data
    x_train, _ = load_split(laplace_block["data"], "train")
    x_test, y_test = load_split(laplace_block["data"], "test")
    for chain in range(3):
        leaf = {name: posterior[name].values[chain, 0].astype(np.float64) for name in posterior.data_vars}

        def features(x, leaf=leaf):
            h = np.maximum(x @ leaf["kernel_0"] + leaf["bias_0"], 0)
            h = np.maximum(h @ leaf["kernel_1"] + leaf["bias_1"], 0)
            return np.column_stack([h, np.ones(len(h))])

        phi = features(x_train)
        cov = np.linalg.inv(phi.T @ phi / 1.0 + np.eye(5))  # ggn_noise_var 1.0, N(0, 1) prior
        phi_test = features(x_test)
        pred_var = np.einsum("ij,jk,ik->i", phi_test, cov, phi_test) + 0.1
        mean = predictive["pred_mean"].values[chain]
        np.testing.assert_allclose(predictive["log_pred_density"].values[chain],
                                   norm.logpdf(y_test, mean, np.sqrt(pred_var)), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(predictive["pit"].values[chain], norm.cdf(y_test, mean, np.sqrt(pred_var)),
                                   atol=1e-4)
        # the net is linear in its last layer: the draws' mean prediction is the closed-form mean (5 MC sds)
        draws_pred = predictive["pred_draws"].values[chain]  # (draw, diag_point)
        se = np.sqrt((pred_var[:draws_pred.shape[1]] - 0.1) / draws_pred.shape[0])
        assert np.all(np.abs(draws_pred.mean(axis=0) - mean[:draws_pred.shape[1]]) < 5 * se + 1e-5)

    merge_blocks([laplace_block["block"]], laplace_block["dir"] / "merged.nc")
    idata = arviz.from_netcdf(laplace_block["dir"] / "merged.nc")
    assert idata.posterior.sizes["chain"] == 3


def test_diagonal_laplace_of_the_whole_net_through_sample_block(tmp_path):
    """subset all, hessian diagonal through `sample_block`: every leaf varies over the draws, and the scored
    predictive is one Gaussian per point (its log density and PIT give one sd) wider than the noise."""
    run = deep_merge(LAPLACE_RUN, {"name": "tiny-laplace-diag",
                                   "sampler": {"chains": 2, "block_size": 2,
                                               "laplace": {"subset": "all", "hessian": "diagonal"}}})
    data = write_prepared(tmp_path / "prepared.nc")
    sample_block(run, 0, data, tmp_path / "block.nc")
    groups = open_posterior(tmp_path / "block.nc")
    posterior, predictive = groups["posterior"], groups["predictive"]
    assert (groups["sample_stats"]["diverged"].values == 0).all()
    for name in posterior.data_vars:
        assert np.all(posterior[name].values.std(axis=1) > 0), name
    _, y_test = load_split(data, "test")
    mean, pit = predictive["pred_mean"].values, predictive["pit"].values
    z = norm.ppf(pit)
    keep = np.abs(z) > 0.05  # the sd is ill-determined from a PIT near 1/2
    sd = (y_test - mean)[keep] / z[keep]
    assert np.all(sd**2 > 0.1)  # aleatoric 0.1 plus a positive epistemic part
    np.testing.assert_allclose(predictive["log_pred_density"].values[keep], norm.logpdf(z[keep]) - np.log(sd),
                               rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- configuration


BASE = {"runs": {"r1": {"dataset": "airfoil", "model": {"hidden": [16, 16, 16], "likelihood": "mean_regr"},
                        "sampler": {"kind": "laplace", "chains": 1, "block_size": 1}}}}


def resolve(override):
    config = copy.deepcopy(BASE)
    config["runs"]["r1"] = deep_merge(config["runs"]["r1"], override)
    return resolve_runs(config)["r1"]


def test_laplace_defaults_are_the_papers_and_fix_the_noise_in_the_model():
    run = resolve({})
    assert run["sampler"]["laplace"] == {"lr": 0.005, "weight_decay": 0.0001, "epochs": 10000, "draws": 100,
                                         "objective": "likelihood", "ggn_noise_var": 1.0, "aleatoric_var": 0.1,
                                         "subset": "last_layer", "hessian": "full"}
    assert run["model"]["sigma"] == pytest.approx(math.sqrt(0.1))
    mfvi = resolve({"sampler": {"kind": "mfvi", "mfvi": {"sigma": 0.1}}})
    assert mfvi["model"]["sigma"] == 0.1
    assert resolve({"sampler": {"kind": "mfvi"}})["model"]["sigma"] is None  # the model's own noise


@pytest.mark.parametrize("override, key", [
    ({"model": {"likelihood": "regr"}}, "sampler.laplace.aleatoric_var"),
    ({"sampler": {"laplace": {"aleatoric_var": None}}}, "sampler.laplace.aleatoric_var"),
    ({"model": {"sigma": 0.5}}, "sampler.laplace.aleatoric_var"),
    ({"sampler": {"laplace": {"epochs": 0}}}, "sampler.laplace.epochs"),
    ({"sampler": {"laplace": {"objective": "elbo"}}}, "sampler.laplace.objective"),
    ({"sampler": {"laplace": {"ggn_noise_var": 0}}}, "sampler.laplace.ggn_noise_var"),
    ({"sampler": {"laplace": {"subset": "first_layer"}}}, "sampler.laplace.subset"),
    ({"sampler": {"laplace": {"hessian": "kron"}}}, "sampler.laplace.hessian"),
    ({"sampler": {"laplace": {"subset": "all"}}}, "sampler.laplace.hessian"),  # all needs diagonal
    ({"sampler": {"kind": "mfvi", "mfvi": {"sigma": 0.1}}, "model": {"likelihood": "regr"}}, "sampler.mfvi.sigma"),
])
def test_bad_laplace_config_fails_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"runs\.r1\.{re.escape(key)}\b"):
        resolve(override)


def test_sampler_side_checks_name_the_problem():
    with pytest.raises(ValueError, match="model.sigma"):
        check_model(ModelSpec(in_dim=2, hidden=(4,), out_dim=1, activation="relu", bias=True,
                              likelihood="mean_regr"))
    with pytest.raises(ValueError, match="objective"):
        check_cfg({**CFG, "objective": "elbo"})
    with pytest.raises(KeyError, match="draws"):
        check_cfg({k: v for k, v in CFG.items() if k != "draws"})
    with pytest.raises(ValueError, match="subset"):
        check_cfg({**CFG, "subset": "first_layer"})
    with pytest.raises(ValueError, match="hessian 'full' needs subset 'last_layer'"):
        check_cfg({**CFG, "subset": "all"})
    check_cfg(DIAG_CFG)
    check_cfg({**CFG, "hessian": "diagonal"})  # the last layer's diagonal


# ----------------------------------------------------------------------------- the UCI table


def test_uci_table_names_single_fit_and_pooled_baselines():
    from interplay.figures.uci_benchmark import method_label, method_order

    def run(kind, chains):
        return {"sampler": {"kind": kind, "chains": chains}}

    assert [method_label(run(k, c)) for k, c in (("mfvi", 1), ("laplace", 1), ("mile", 4), ("de", 4))] == \
        ["MFVI", "LA", "MILE", "DE"]
    assert method_label(run("mfvi", 4)) == "MFVI pooled x4" and method_label(run("laplace", 3)) == "LA pooled x3"
    assert method_order(["LA", "MFVI pooled x4", "MILE", "MFVI", "DE", "LA"]) == \
        ["MILE", "DE", "MFVI", "MFVI pooled x4", "LA"]
    # the Laplace variants say so; the paper's (last layer, full GGN) stays "LA"
    resolved = resolve({"sampler": {"laplace": {"subset": "all", "hessian": "diagonal"}}})
    assert method_label(resolved) == "LA (all, diag)"
    assert method_label(resolve({"sampler": {"laplace": {"hessian": "diagonal"}}})) == "LA (last layer, diag)"
    assert method_label(resolve({})) == "LA"
    pooled = resolve({"sampler": {"chains": 3, "laplace": {"subset": "all", "hessian": "diagonal"}}})
    assert method_label(pooled) == "LA (all, diag) pooled x3"
    assert method_order(["LA (all, diag)", "LA pooled x3", "LA", "MILE", "LA (all, diag) pooled x3"]) == \
        ["MILE", "LA", "LA pooled x3", "LA (all, diag)", "LA (all, diag) pooled x3"]


def test_the_uci_figure_pools_the_runs_of_several_sweeps(project_root):
    from interplay.config import load_config, sweep_members
    from interplay.figures.plan import figure_plans

    config = load_config(project_root / "config.yaml")
    runs = resolve_runs(copy.deepcopy(config))
    sweeps = sweep_members(config)
    plan = figure_plans({"uci_benchmark": {"sweep": ["uci", "uci-single"]}}, runs, sweeps)["uci_benchmark"]
    kinds = {runs[m]["sampler"]["kind"] for m in plan.members}
    assert kinds == {"mile", "de", "mfvi", "laplace"}
    assert all(runs[m]["sampler"]["chains"] == 1 for m in plan.members if runs[m]["sampler"]["kind"] == "laplace")
    with pytest.raises(ConfigError, match=r"figures\.uci_benchmark\.sweep: sweep 'nosuch' is not in the study"):
        figure_plans({"uci_benchmark": {"sweep": ["uci", "nosuch"]}}, runs, sweeps)
