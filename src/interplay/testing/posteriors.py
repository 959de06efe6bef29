"""Synthetic posterior files in the DESIGN.md layout, for tests and benchmarks of the analyses.

`prior_draws` samples exact prior draws (N(0, tau_l^2) per layer) so that identities that hold
under any posterior of the symmetric model hold here exactly in expectation; `write_posterior`
writes a small file through xarray (one call per group); `write_streaming_posterior` writes an
arbitrarily large one chain block at a time through netCDF4, chunked and zlib-compressed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from interplay.specs import leaf_dims, leaf_layer, leaf_prior_scales


def layer_widths(n_in: int, hidden: Sequence[int], n_out: int) -> list[int]:
    return [int(n_in), *[int(h) for h in hidden], int(n_out)]


def make_run(name: str = "synthetic", *, hidden: Sequence[int] = (8, 8), activation: str = "relu",
             bias: bool = True, likelihood: str = "regr", scale=1.0, bias_scale=None,
             bias_prior: str = "gaussian", chains: int = 8, kind: str = "mile", dataset: str = "synthetic"
             ) -> dict:
    """A resolved-run dict with the fields the analyses read (DESIGN.md)."""
    return {
        "name": name, "dataset": dataset,
        "data": {"seed": 0, "standardise": "full", "max_train_points": None},
        "model": {"hidden": list(hidden), "activation": activation, "bias": bias, "likelihood": likelihood,
                  "sigma": None},
        "prior": {"scale": scale, "bias_scale": bias_scale, "bias": bias_prior, "log_sigma_scale": 1.0},
        "sampler": {"kind": kind, "chains": chains, "block_size": chains, "seed": 0},
        "diagnostics": {"pred_draw_points": 4},
    }


def prior_scales(widths: Sequence[int], scale=1.0, bias_scale=None, bias: bool = True,
                 bias_prior: str = "gaussian") -> dict[str, float | None]:
    """Per-variable prior scale as the sampler writes it (None: flat bias prior)."""
    return leaf_prior_scales(len(widths) - 1, bias=bias, scale=scale, bias_scale=bias_scale, bias_prior=bias_prior)


def prior_draws(rng: np.random.Generator, widths: Sequence[int], scales: Mapping[str, float | None],
                n_chains: int, n_draws: int, *, inflate: Mapping[str, float] | None = None,
                autocorrelation: float = 0.0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Exact draws from the Gaussian prior, (chain, draw, ...) per variable.

    `inflate` multiplies a variable's scale (a deliberately wrong sampler); `autocorrelation` > 0 makes
    each chain a stationary AR(1) process with the prior as marginal (draws still exact marginally).
    A flat bias prior has no distribution; its "draws" are N(0, 1) (any law works for the identities).
    """
    inflate = dict(inflate or {})
    draws = {}
    for layer in range(len(widths) - 1):
        for kind, shape in (("kernel", (widths[layer], widths[layer + 1])), ("bias", (widths[layer + 1],))):
            name = f"{kind}_{layer}"
            if name not in scales:
                continue
            tau = (1.0 if scales[name] is None else scales[name]) * inflate.get(name, 1.0)
            noise = rng.standard_normal((n_chains, n_draws, *shape))
            if autocorrelation > 0:
                innovation = np.sqrt(1 - autocorrelation**2)
                for d in range(1, n_draws):
                    noise[:, d] = autocorrelation * noise[:, d - 1] + innovation * noise[:, d]
            draws[name] = (tau * noise).astype(dtype)
    return draws


def _param_dims(name: str) -> tuple[str, ...]:
    return ("chain", "draw", *leaf_dims(name))


def write_posterior(path, params: Mapping[str, np.ndarray], run: Mapping, *,
                    scales: Mapping[str, float | None] | None = None,
                    predictive: Mapping[str, np.ndarray] | None = None,
                    sample_stats: Mapping[str, np.ndarray] | None = None,
                    chain_ids: Sequence[int] | None = None) -> Path:
    """Write a small posterior file (groups posterior / sample_stats / predictive) with xarray.

    `predictive` maps DESIGN.md names to arrays (pred_mean with a trailing class dim for
    classification); `scales` are the prior_scale attrs (None or missing: attr left out).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_chains = next(iter(params.values())).shape[0]
    chains = np.arange(n_chains) if chain_ids is None else np.asarray(chain_ids)
    scales = dict(scales or {})
    variables = {}
    for name, array in params.items():
        attrs = {"layer": leaf_layer(name)}
        if scales.get(name) is not None:
            attrs["prior_scale"] = float(scales[name])
        variables[name] = xr.Variable(_param_dims(name), np.asarray(array, dtype=np.float32), attrs)
    posterior = xr.Dataset(variables, coords={"chain": chains})
    encoding = {name: {"zlib": True, "complevel": 1} for name in variables}
    root = xr.Dataset(attrs={"run": run.get("name", "synthetic"), "config": json.dumps(dict(run)), "seed": 0,
                             "versions": "{}", "git_commit": "synthetic", "blocks": 1,
                             "n_diverged_dropped": 0})
    root.to_netcdf(path, mode="w", engine="netcdf4")
    posterior.to_netcdf(path, group="posterior", mode="a", encoding=encoding, engine="netcdf4")
    stats = dict(sample_stats or {"step_size": np.full(n_chains, 0.1), "L": np.full(n_chains, 1.0),
                                  "diverged": np.zeros(n_chains, dtype=np.int8)})
    xr.Dataset({k: ("chain", np.asarray(v)) for k, v in stats.items()}, coords={"chain": chains}).to_netcdf(
        path, group="sample_stats", mode="a", engine="netcdf4")
    if predictive:
        pred_vars = {}
        for name, value in predictive.items():
            value = np.asarray(value)
            dims = {"log_pred_density": ("chain", "test_point"), "pit": ("chain", "test_point"),
                    "pred_draws": ("chain", "draw", "diag_point"), "y_test": ("test_point",)}.get(name)
            if name == "pred_mean":
                dims = ("chain", "test_point", "class")[:value.ndim]
            if dims is None:
                raise ValueError(f"unknown predictive variable {name!r}")
            pred_vars[name] = (dims, value if name == "y_test" else value.astype(np.float64))
        xr.Dataset(pred_vars, coords={"chain": chains}).to_netcdf(path, group="predictive", mode="a",
                                                                   engine="netcdf4")
    return path


def write_streaming_posterior(path, run: Mapping, widths: Sequence[int], n_chains: int, n_draws: int,
                              block_draws: Callable[[int, int], dict[str, np.ndarray]], *,
                              block_chains: int = 16, n_test: int = 100, n_diag: int = 4,
                              predictive_block: Callable[[int, int], dict[str, np.ndarray]] | None = None,
                              complevel: int = 1) -> Path:
    """Write a large posterior file one chain block at a time (peak memory: one block).

    ``block_draws(first_chain, n)`` returns the posterior variables of chains [first, first+n);
    ``predictive_block(first_chain, n)`` the chain-dimensioned predictive variables.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scales = prior_scales(widths, run["prior"]["scale"], run["prior"].get("bias_scale"),
                          run["model"]["bias"], run["prior"].get("bias", "gaussian"))
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({"run": run["name"], "config": json.dumps(dict(run)), "seed": 0, "versions": "{}",
                      "git_commit": "synthetic", "blocks": 1, "n_diverged_dropped": 0})
        post = nc.createGroup("posterior")
        post.createDimension("chain", n_chains)
        post.createDimension("draw", n_draws)
        for i, width in enumerate(widths):
            post.createDimension(f"units_{i}", width)
        post.createVariable("chain", "i8", ("chain",))[:] = np.arange(n_chains)
        for name, tau in scales.items():
            dims = _param_dims(name)
            chunks = tuple(block_chains if d == "chain" else len(post.dimensions[d]) for d in dims)
            var = post.createVariable(name, "f4", dims, zlib=complevel > 0, complevel=max(complevel, 1),
                                      shuffle=True, chunksizes=chunks, fill_value=False)
            var.setncatts({"layer": leaf_layer(name), **({} if tau is None else {"prior_scale": tau})})
        stats = nc.createGroup("sample_stats")
        stats.createDimension("chain", n_chains)
        stats.createVariable("chain", "i8", ("chain",))[:] = np.arange(n_chains)
        for name, dtype in (("step_size", "f8"), ("L", "f8"), ("diverged", "i1")):
            stats.createVariable(name, dtype, ("chain",))
        pred = nc.createGroup("predictive")
        pred.createDimension("chain", n_chains)
        pred.createDimension("test_point", n_test)
        pred.createDimension("draw", n_draws)
        pred.createDimension("diag_point", n_diag)
        pred.createVariable("chain", "i8", ("chain",))[:] = np.arange(n_chains)
        for name, dims in (("log_pred_density", ("chain", "test_point")), ("pred_mean", ("chain", "test_point")),
                           ("pit", ("chain", "test_point")), ("pred_draws", ("chain", "draw", "diag_point"))):
            chunks = tuple(block_chains if d == "chain" else len(pred.dimensions[d]) for d in dims)
            pred.createVariable(name, "f8", dims, zlib=complevel > 0, complevel=max(complevel, 1), chunksizes=chunks)
        pred.createVariable("y_test", "f8", ("test_point",))
        for start in range(0, n_chains, block_chains):
            n = min(block_chains, n_chains - start)
            for name, value in block_draws(start, n).items():
                post[name][start:start + n] = value
            stats["step_size"][start:start + n] = 0.05 + 0.01 * np.arange(n)
            stats["L"][start:start + n] = 1.0
            stats["diverged"][start:start + n] = 0
            if predictive_block is not None:
                for name, value in predictive_block(start, n).items():
                    pred[name][start:start + n] = value
        pred["y_test"][:] = np.zeros(n_test)
    return path
