"""A small synthetic study in the pipeline's formats, to draw every figure without sampling.

`write_demo_study(root)` writes posterior files (interplay.testing.posteriors) and runs the real
analyses on them, then returns the `FigureData` of every figure. The draws have known structure:
- prior draws (N(0, tau^2)) for the under/overparametrized nets, so balancedness holds exactly in
  expectation and the marginals conform to the prior;
- 1-M-1 nets whose shares |w_j v_j| / sum_k |w_k v_k| are exact Dirichlet(1/2) draws (alpha = 1/2);
- "MILE" correlation runs whose parameters share one latent factor per chain (within-chain
  correlation `CORRELATION` between every pair) against "MFVI" runs with independent parameters.
Used by tests/test_figures*.py and handy for restyling figures quickly:
``python -c "from interplay.testing import demo; demo.render_all('/tmp/demo')"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from interplay.analysis import (
    analyse_balancedness,
    analyse_bias_marginals,
    analyse_conformity,
    analyse_cumulative_lppd,
    analyse_diagnostics,
    analyse_flat_likelihood,
    analyse_jacobian,
    analyse_predictive,
    analyse_reallocation,
)
from interplay.figures.data import FigureData
from interplay.testing import posteriors as syn

CORRELATION = 0.6
N_TEST = 40
N_IN = 5


def _run(name: str, dataset: str = "airfoil", *, hidden=(8, 8), activation="relu", bias=True,
         likelihood="regr", scale=1.0, kind="mile", chains=6, seed=0) -> dict:
    run = syn.make_run(name, hidden=hidden, activation=activation, bias=bias, likelihood=likelihood, scale=scale,
                       chains=chains, kind=kind, dataset=dataset)
    run["data"]["seed"] = seed
    run["sampler"]["seed"] = seed
    return run


def predictive_group(rng, n_chains: int, n_draws: int, quality: float = -1.0) -> dict[str, np.ndarray]:
    """Per-chain predictive quantities of a regression run whose chains differ (so pooling chains helps)."""
    y = rng.standard_normal(N_TEST)
    offsets = 0.4 * rng.standard_normal((n_chains, N_TEST))
    pred_mean = y[None] * 0.8 + offsets
    sigma = 0.6
    log_pred_density = -0.5 * np.log(2 * np.pi * sigma**2) - (y[None] - pred_mean) ** 2 / (2 * sigma**2) + quality + 1
    from scipy import stats

    pit = stats.norm.cdf((y[None] - pred_mean) / sigma)
    pred_draws = pred_mean[:, None, :4] + 0.1 * rng.standard_normal((n_chains, n_draws, 4))
    return {"log_pred_density": log_pred_density, "pred_mean": pred_mean, "pit": pit, "pred_draws": pred_draws,
            "y_test": y}


def toy_draws(rng, width: int, tau: float, n_chains: int, n_draws: int, beta: float = 1.2) -> dict[str, np.ndarray]:
    """1-M-1 draws with sum_j w_j v_j = beta and |w_j v_j| shares ~ Dirichlet(1/2) exactly."""
    shares = rng.dirichlet(np.full(width, 0.5), size=(n_chains, n_draws))
    products = beta * shares
    w = np.sqrt(products) * np.exp(0.4 * rng.standard_normal(products.shape)) * np.sign(rng.standard_normal())
    v = products / w
    w *= np.sqrt(tau)  # rescaling (w, v) -> (c w, v / c) keeps every product
    v /= np.sqrt(tau)
    return {"kernel_0": w[:, :, None, :].astype(np.float32), "kernel_1": v[:, :, :, None].astype(np.float32)}


def correlated_draws(rng, widths: Sequence[int], scales: dict, n_chains: int, n_draws: int, rho: float
                     ) -> dict[str, np.ndarray]:
    """Gaussian draws in which every pair of parameters has within-chain correlation `rho`."""
    draws = syn.prior_draws(rng, widths, scales, n_chains, n_draws, dtype=np.float64)
    latent = rng.standard_normal((n_chains, n_draws))
    out = {}
    for name, values in draws.items():
        tau = scales[name] or 1.0
        shape = (n_chains, n_draws) + (1,) * (values.ndim - 2)
        out[name] = (np.sqrt(1 - rho) * values + np.sqrt(rho) * tau * latent.reshape(shape)).astype(np.float32)
    return out


def _write(root: Path, run: dict, draws: dict, scales: dict, rng, *, predictive: bool = True,
           sample_stats: dict | None = None) -> str:
    n_chains, n_draws = next(iter(draws.values())).shape[:2]
    pred = predictive_group(rng, n_chains, n_draws) if predictive else None
    path = root / "posteriors" / f"{run['name']}.nc"
    syn.write_posterior(path, draws, run, scales=scales, predictive=pred, sample_stats=sample_stats)
    return str(path)


def posterior_inputs(posterior: str) -> tuple[int]:
    """(input width,) of a posterior file's network."""
    from interplay.analysis.posterior_files import group_variables

    return (group_variables(posterior, "posterior")["kernel_0"].shape[2],)


def _analyse(root: Path, run: dict, posterior: str, analyses: Sequence[str]) -> dict[tuple[str, str], str]:
    functions = {"balancedness": analyse_balancedness, "conformity": analyse_conformity,
                 "predictive": analyse_predictive, "cumulative_lppd": analyse_cumulative_lppd,
                 "reallocation": analyse_reallocation, "diagnostics": analyse_diagnostics,
                 "bias_marginals": analyse_bias_marginals, "flat_likelihood": analyse_flat_likelihood,
                 "jacobian": analyse_jacobian}
    tables = {}
    n_in = next(iter(posterior_inputs(posterior)))
    x_train = np.random.default_rng(0).standard_normal((100, n_in))
    for analysis in analyses:
        out = root / "analysis" / run["name"] / f"{analysis}.csv"
        extra = {"x_train": x_train, "max_draws": 100} if analysis in ("flat_likelihood", "jacobian") else {}
        if analysis == "flat_likelihood":
            extra["threshold"] = 0.5  # prior draws have few redundant units at the calibrated threshold
        functions[analysis](posterior, out, run, **extra)
        tables[(run["name"], analysis)] = str(out)
    return tables


def write_demo_study(root, *, chains: int = 12, draws: int = 150, seed: int = 0) -> dict[str, FigureData]:
    """Write the demo study under `root` and return each figure's FigureData."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    runs, posteriors, tables = {}, {}, {}

    def add(run, draws_, scales, analyses, predictive=True, sample_stats=None):
        runs[run["name"]] = run
        posteriors[run["name"]] = _write(root, run, draws_, scales, rng, predictive=predictive,
                                         sample_stats=sample_stats)
        tables.update(_analyse(root, run, posteriors[run["name"]], analyses))

    # under/overparametrized nets: exact prior draws
    for name, hidden, activation, likelihood in (("demo-under", (3,), "tanh", "mean_regr"),
                                                 ("demo-over", (8, 8, 8), "relu", "regr")):
        run = _run(name, hidden=hidden, activation=activation, likelihood=likelihood, chains=chains)
        widths = syn.layer_widths(N_IN, hidden, 1 if likelihood == "mean_regr" else 2)
        scales = syn.prior_scales(widths, 1.0)
        add(run, syn.prior_draws(rng, widths, scales, chains, draws, autocorrelation=0.3), scales,
            ["balancedness", "conformity", "predictive", "cumulative_lppd"]
            + (["bias_marginals"] if name == "demo-over" else []))
    # width/depth set for conformity
    depth_runs = []
    for hidden in ((4,), (4, 4), (8, 8)):
        name = "demo-arch-" + "x".join(map(str, hidden))
        run = _run(name, dataset="concrete", hidden=hidden, likelihood="mean_regr", chains=chains)
        widths = syn.layer_widths(8, hidden, 1)
        scales = syn.prior_scales(widths, 1.0)
        add(run, syn.prior_draws(rng, widths, scales, chains, draws), scales,
            ["conformity"] + (["flat_likelihood", "jacobian"] if hidden == (4,) else []))
        depth_runs.append(name)
    # 1-M-1 toy grid
    toy_runs = []
    for width in (1, 3, 6):
        for tau in (1.0, 0.3):
            name = f"demo-toy-M{width}-tau{tau:g}"
            run = _run(name, dataset="synthetic_regression_1x", hidden=(width,), activation="identity", bias=False,
                       likelihood="mean_regr", scale=tau, kind="nuts", chains=4)
            scales = syn.prior_scales([1, width, 1], tau, bias=False)
            add(run, toy_draws(rng, width, tau, 4, draws), scales, ["reallocation"] if width >= 2 else [],
                predictive=False)
            toy_runs.append(name)
    # correlations: sampling (one shared latent factor per chain) vs MFVI (independent)
    corr_runs = []
    for hidden in ((4,), (4, 4)):
        for kind, rho in (("mile", CORRELATION), ("mfvi", 0.0)):
            name = f"demo-corr-{kind}-depth{len(hidden)}"
            run = _run(name, hidden=hidden, likelihood="mean_regr", kind=kind, chains=4)
            widths = syn.layer_widths(N_IN, hidden, 1)
            scales = syn.prior_scales(widths, 1.0)
            add(run, correlated_draws(rng, widths, scales, 4, draws, rho), scales, [], predictive=False)
            corr_runs.append(name)
    # prior-scale x depth grid and the UCI benchmark: predictive tables only matter
    grid_runs, uci_runs = [], []
    for dataset in ("airfoil", "energy"):
        for tau in (2.0, 1.0, 0.3):
            for hidden in ((4,), (4, 4)):
                name = f"demo-grid-{dataset}-tau{tau:g}-depth{len(hidden)}"
                run = _run(name, dataset=dataset, hidden=hidden, scale=tau, chains=4)
                widths = syn.layer_widths(N_IN, hidden, 2)
                scales = syn.prior_scales(widths, tau)
                add(run, syn.prior_draws(rng, widths, scales, 4, 20), scales, ["predictive"])
                grid_runs.append(name)
        for kind in ("mile", "de", "mfvi", "laplace"):
            n_chains = 1 if kind in ("mfvi", "laplace") else 4  # the paper's baselines: one fit per seed
            for s in (1, 2, 3):
                name = f"demo-uci-{dataset}-{kind}-seed{s}"
                run = _run(name, dataset=dataset, hidden=(4,), likelihood="mean_regr", kind=kind, chains=n_chains,
                           seed=s)
                widths = syn.layer_widths(N_IN, (4,), 1)
                scales = syn.prior_scales(widths, 1.0)
                add(run, syn.prior_draws(rng, widths, scales, n_chains, 1 if kind == "de" else 20), scales,
                    ["predictive"])
                uci_runs.append(name)

    # sampler bias: exact draws (adjusted samplers) and draws with an inflated kernel (a biased one)
    bias_runs = []
    for kind, inflate, grads in (("mile", {"kernel_1": 1.1}, 4e4), ("mams", None, 3e5), ("nuts", None, 1e6)):
        name = f"demo-bias-{kind}"
        run = _run(name, hidden=(6, 6), likelihood="regr", kind=kind, chains=chains)
        widths = syn.layer_widths(N_IN, (6, 6), 2)
        scales = syn.prior_scales(widths, 1.0)
        stats = {"n_grad_evals": np.full(chains, grads), "warmstart_grad_evals": np.full(chains, 1e4),
                 "sampling_seconds": np.full(chains, grads / 1e4), "diverged": np.zeros(chains, np.int8)}
        add(run, syn.prior_draws(rng, widths, scales, chains, draws, inflate=inflate), scales,
            ["balancedness", "predictive", "diagnostics"], sample_stats=stats)
        bias_runs.append(name)

    def data(spec=None, roles=None, members=()):
        involved = set((roles or {}).values()) | set(members)
        return FigureData(spec=spec or {}, roles=roles or {}, members=tuple(members),
                          runs={n: runs[n] for n in involved},
                          posteriors={n: posteriors[n] for n in involved},
                          tables={k: v for k, v in tables.items() if k[0] in involved})

    pair = {"under": "demo-under", "over": "demo-over"}
    return {
        "bivariate": data({"bins": 40}, pair),
        "toy_grid": data({"bins": 40}, members=toy_runs),
        "conformity": data({"chains_shown": 6}, pair, depth_runs),
        "correlations": data({}, members=corr_runs),
        "cumulative_lppd": data({}, members=["demo-under", "demo-over"]),
        "balancedness": data({}, members=["demo-over", "demo-under"]),
        "dirichlet": data({}, members=toy_runs),
        "lppd_grid": data({}, members=grid_runs),
        "uci_benchmark": data({}, members=uci_runs),
        "sampler_bias": data({}, members=bias_runs),
        "bias_marginals": data({}, members=["demo-over"]),
        "flat_likelihood": data({}, members=[depth_runs[0]]),
        "jacobian": data({}, members=[depth_runs[0]]),
    }


def render_all(root, **kwargs) -> dict[str, dict[str, str]]:
    """Write the demo study under `root` and draw every figure into root/figures/; returns the outputs."""
    from interplay.figures import figure_outputs, render

    root = Path(root)
    figures = write_demo_study(root, **kwargs)
    written = {}
    for name, data in figures.items():
        outputs = {k: str(root / "figures" / Path(v).name) for k, v in figure_outputs(name).items()}
        render(name, data, outputs)
        written[name] = outputs
    return written
