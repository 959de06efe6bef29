"""Streaming access to posterior files and the Monte Carlo error bookkeeping shared by the analyses.

Every analysis reads the posterior in blocks of whole chains (aligned with the file's chain chunks,
at most `max_bytes` of stored data per block), reduces each block to small per-group sums and drops
it, so the peak memory does not grow with the number of chains or draws.

Monte Carlo errors come from *groups* of draws that are (close to) independent of each other:
- with >= `min_chains` chains, a group is a chain or a contiguous set of chains (chains are
  independent, so the spread of group means gives the standard error directly);
- with fewer chains, each chain is cut into contiguous draw batches (batch means, the classical
  estimate of the asymptotic variance of an autocorrelated chain mean).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd

from interplay.config import per_layer_values

DEFAULT_BLOCK_BYTES = 64 * 2**20  # stored bytes read per block; float64 copies and temporaries add ~4x
MIN_CHAINS_FOR_CHAIN_SE = 10
TARGET_BATCH_GROUPS = 20


# ----------------------------------------------------------------------------- file metadata


def _check_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    return path


def read_run_config(path) -> dict:
    """The resolved run stored in the root attr ``config`` (JSON) of a posterior file."""
    with netCDF4.Dataset(_check_file(path)) as nc:
        if "config" not in nc.ncattrs():
            raise ValueError(f"{path}: root attr 'config' (JSON of the resolved run) is missing")
        text = nc.getncattr("config")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: root attr 'config' is not valid JSON ({error})") from None


def read_root_attr(path, name: str, default=None):
    with netCDF4.Dataset(_check_file(path)) as nc:
        return nc.getncattr(name) if name in nc.ncattrs() else default


@dataclass(frozen=True)
class VariableInfo:
    """One stored variable: dims and shape (chain/draw included) and its prior attrs."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    prior_scale: float | None
    layer: int | None

    @property
    def n_params(self) -> int:
        """Parameters per draw (product of the dims after chain and draw)."""
        return int(np.prod([n for d, n in zip(self.dims, self.shape) if d not in ("chain", "draw")],
                           dtype=np.int64))


def group_variables(path, group: str) -> dict[str, VariableInfo]:
    """Data variables (coordinates excluded) of `group` with their dims, shapes and prior attrs."""
    with netCDF4.Dataset(_check_file(path)) as nc:
        if group not in nc.groups:
            raise ValueError(f"{path}: no group {group!r} (it has {sorted(nc.groups)})")
        grp = nc[group]
        out = {}
        for name, var in grp.variables.items():
            if name in var.dimensions:  # a coordinate variable (chain, draw, test_point, ...)
                continue
            attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            scale = attrs.get("prior_scale")
            layer = attrs.get("layer")
            out[name] = VariableInfo(
                name=name, dims=tuple(var.dimensions), shape=tuple(int(n) for n in var.shape),
                prior_scale=None if scale is None or isinstance(scale, str) else float(scale),
                layer=None if layer is None or isinstance(layer, str) else int(layer),
            )
        return out


def chain_ids(path, group: str = "posterior") -> np.ndarray:
    """Global chain indices (the ``chain`` coordinate; 0..C-1 where it is absent)."""
    with netCDF4.Dataset(_check_file(path)) as nc:
        grp = nc[group]
        if "chain" in grp.variables:
            return np.asarray(grp["chain"][:], dtype=np.int64)
        return np.arange(len(grp.dimensions["chain"]), dtype=np.int64)


def group_dim_sizes(path, group: str) -> dict[str, int]:
    with netCDF4.Dataset(_check_file(path)) as nc:
        if group not in nc.groups:
            raise ValueError(f"{path}: no group {group!r} (it has {sorted(nc.groups)})")
        return {d: len(v) for d, v in nc[group].dimensions.items()}


# ----------------------------------------------------------------------------- network layout


@dataclass(frozen=True)
class LayerSpec:
    """Layer `index` maps units_{index} (fan_in) to units_{index+1} (fan_out)."""

    index: int
    kernel: str
    bias: str | None            # variable name, None without biases
    fan_in: int
    fan_out: int
    kernel_scale: float
    bias_scale: float | None    # None: no bias or a flat (improper) bias prior


def network_layout(path, run: Mapping | None = None) -> list[LayerSpec]:
    """The layers stored in `path` with their prior scales.

    Scales come from the variables' ``prior_scale`` attrs (what was sampled); where a kernel lacks
    it, from ``run["prior"]`` (same rules as interplay.models.PriorSpec). A bias without the attr
    has a flat prior unless the run says ``prior.bias: gaussian``.
    """
    variables = group_variables(path, "posterior")
    n_layers = sum(1 for name in variables if name.startswith("kernel_"))
    if n_layers == 0:
        raise ValueError(f"{path}: the posterior group has no kernel_* variables")
    prior = (run or {}).get("prior") or {}
    config_taus = per_layer_values(prior["scale"], n_layers, "scale") if "scale" in prior else None
    bias_prior = prior.get("bias", "gaussian")
    config_bias_taus = config_taus
    if prior.get("bias_scale") is not None:
        config_bias_taus = per_layer_values(prior["bias_scale"], n_layers, "bias_scale")
    layers = []
    for index in range(n_layers):
        kernel = variables.get(f"kernel_{index}")
        if kernel is None:
            raise ValueError(f"{path}: kernel_{index} is missing (have {sorted(variables)})")
        if kernel.dims[:2] != ("chain", "draw") or len(kernel.dims) != 4:
            raise ValueError(f"{path}: kernel_{index} has dims {kernel.dims}, expected (chain, draw, in, out)")
        tau = kernel.prior_scale
        if tau is None:
            if config_taus is None:
                raise ValueError(f"{path}: kernel_{index} has no prior_scale attr and no run config is given")
            tau = config_taus[index]
        bias = variables.get(f"bias_{index}")
        bias_tau = None
        if bias is not None:
            bias_tau = bias.prior_scale
            # A file whose kernels carry prior_scale marks a flat bias prior by leaving the attr out;
            # a file without any attrs takes the bias prior from the run.
            if bias_tau is None and kernel.prior_scale is None and bias_prior == "gaussian":
                bias_tau = config_bias_taus[index]
        layers.append(LayerSpec(index, kernel.name, None if bias is None else bias.name,
                                kernel.shape[2], kernel.shape[3], float(tau), bias_tau))
    for a, b in itertools.pairwise(layers):
        if a.fan_out != b.fan_in:
            raise ValueError(f"{path}: kernel_{a.index} has {a.fan_out} outputs, kernel_{b.index} {b.fan_in} inputs")
    return layers


def posterior_counts(path) -> tuple[int, int]:
    """(chains, draws) of the posterior group."""
    sizes = group_dim_sizes(path, "posterior")
    return sizes["chain"], sizes["draw"]


# ----------------------------------------------------------------------------- chain-block reading


def _chain_chunk(var) -> int:
    chunking = var.chunking()
    return int(chunking[0]) if isinstance(chunking, list) else 0


def _block_chains(grp, names: Sequence[str], max_bytes: int) -> int:
    """Chains per block: as many whole chain chunks as fit in `max_bytes` (at least one chain)."""
    per_chain = 0
    chunk = 1
    for name in names:
        var = grp[name]
        per_chain += int(np.prod(var.shape[1:], dtype=np.int64)) * var.dtype.itemsize
        chunk = max(chunk, _chain_chunk(var))
    chains = max(1, max_bytes // max(per_chain, 1))
    if chains >= chunk:
        chains = (chains // chunk) * chunk  # whole chunks: each is decompressed once
    return int(chains)


def _set_chunk_cache(var, block_chains: int) -> None:
    """HDF5 keeps up to its chunk-cache size (netCDF default: tens of MB) of decompressed chunks per
    variable. Blocks made of whole chunks read each chunk once, so no cache is needed; blocks that
    cut through a chunk need exactly that one chunk cached (else it is decompressed once per block)."""
    chunk = _chain_chunk(var)
    if chunk == 0:
        return
    aligned = block_chains % chunk == 0
    chunk_bytes = chunk * int(np.prod(var.shape[1:], dtype=np.int64)) * var.dtype.itemsize
    var.set_var_chunk_cache(size=0 if aligned else chunk_bytes + 1024, nelems=1 if aligned else 7,
                            preemption=1.0)


def iter_chain_blocks(path, group: str, names: Sequence[str], *, max_bytes: int = DEFAULT_BLOCK_BYTES,
                      dtype=np.float64) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(first_chain, {name: array})`` for consecutive blocks of whole chains.

    Arrays keep the stored dims (chain first) and are converted to `dtype` (None: as stored).
    """
    with netCDF4.Dataset(_check_file(path)) as nc:
        if group not in nc.groups:
            raise ValueError(f"{path}: no group {group!r} (it has {sorted(nc.groups)})")
        grp = nc[group]
        missing = [n for n in names if n not in grp.variables]
        if missing:
            raise KeyError(f"{path}/{group} has no variables {missing}; it has {sorted(grp.variables)}")
        for name in names:
            if grp[name].dimensions[:1] != ("chain",):
                raise ValueError(f"{path}/{group}/{name}: dims {grp[name].dimensions} do not start with chain")
            grp[name].set_auto_maskandscale(False)
        n_chains = len(grp.dimensions["chain"])
        step = _block_chains(grp, names, max_bytes)
        for name in names:
            _set_chunk_cache(grp[name], step)
        for start in range(0, n_chains, step):
            stop = min(start + step, n_chains)
            block = {}
            for name in names:
                data = grp[name][start:stop]
                block[name] = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
            yield start, block


def read_chain_subset(path, group: str, name: str, chains: np.ndarray) -> np.ndarray:
    """Rows `chains` (sorted positions along `chain`) of one variable, read chunk by chunk."""
    chains = np.unique(np.asarray(chains, dtype=np.int64))
    with netCDF4.Dataset(_check_file(path)) as nc:
        var = nc[group][name]
        var.set_auto_maskandscale(False)
        _set_chunk_cache(var, 1)  # runs may cut through chunks: keep one decompressed chunk
        parts = []
        # contiguous runs become slices (fast); netCDF4's fancy indexing reads element-wise.
        breaks = np.flatnonzero(np.diff(chains) != 1) + 1
        for run in np.split(chains, breaks):
            if run.size:
                parts.append(np.asarray(var[int(run[0]):int(run[-1]) + 1], dtype=np.float64))
        return np.concatenate(parts, axis=0) if parts else np.empty((0, *var.shape[1:]))


def read_variable(path, group: str, name: str) -> np.ndarray:
    """A whole (small) variable, e.g. predictive/y_test or a sample_stats entry."""
    with netCDF4.Dataset(_check_file(path)) as nc:
        if group not in nc.groups or name not in nc[group].variables:
            raise KeyError(f"{path}: no variable {group}/{name}")
        var = nc[group][name]
        var.set_auto_maskandscale(False)
        return np.asarray(var[...])


# ----------------------------------------------------------------------------- Monte Carlo groups


@dataclass(frozen=True)
class McGroups:
    """Assignment of (chain, draw) to independent groups for Monte Carlo standard errors.

    Group id of (chain c, draw d) = ``chain_group[c] * n_batches + batch(d)``.
    """

    n_chains: int
    n_draws: int
    chain_group: np.ndarray     # (n_chains,) chain -> chain group
    batch_starts: np.ndarray    # (n_batches,) first draw of each batch
    method: str                 # "chains" | "batch_means"

    @property
    def n_batches(self) -> int:
        return len(self.batch_starts)

    @property
    def n_groups(self) -> int:
        return int(self.chain_group.max() + 1) * self.n_batches

    @property
    def batch_sizes(self) -> np.ndarray:
        return np.diff(np.append(self.batch_starts, self.n_draws))

    def reduce_draws(self, values: np.ndarray) -> np.ndarray:
        """(c, D, ...) -> (c, n_batches, ...): sums over the draws of each batch."""
        if values.shape[1] != self.n_draws:
            raise ValueError(f"expected {self.n_draws} draws, got an array of shape {values.shape}")
        if self.n_batches == 1:
            return values.sum(axis=1, keepdims=True, dtype=np.float64)
        return np.add.reduceat(values, self.batch_starts, axis=1, dtype=np.float64)

    def group_ids(self, first_chain: int, n_chains: int) -> np.ndarray:
        """(c, n_batches) group ids of a block of chains."""
        groups = self.chain_group[first_chain:first_chain + n_chains]
        return groups[:, None] * self.n_batches + np.arange(self.n_batches)[None, :]


def mc_groups(n_chains: int, n_draws: int, *, min_chains: int = MIN_CHAINS_FOR_CHAIN_SE,
              max_groups: int | None = None, target_groups: int = TARGET_BATCH_GROUPS,
              min_batch: int = 5) -> McGroups:
    """Groups for standard errors: chains (merged into <= `max_groups` contiguous sets) when there are
    at least `min_chains`; otherwise batch means with ~`target_groups` batches over all chains."""
    if n_chains < 1 or n_draws < 1:
        raise ValueError(f"need at least one chain and one draw, got {n_chains} chains x {n_draws} draws")
    if n_chains >= min_chains:
        n = n_chains if max_groups is None else min(n_chains, max_groups)
        chain_group = (np.arange(n_chains) * n) // n_chains
        return McGroups(n_chains, n_draws, chain_group, np.zeros(1, dtype=np.int64), "chains")
    n_batches = max(1, min(math.ceil(target_groups / n_chains), n_draws // min_batch))
    starts = (np.arange(n_batches) * n_draws) // n_batches
    return McGroups(n_chains, n_draws, np.arange(n_chains), starts.astype(np.int64), "batch_means")


class GroupSums:
    """Per-group sums of a per-draw statistic of fixed shape, filled block by block."""

    def __init__(self, groups: McGroups, shape: tuple[int, ...] = ()):
        self.groups = groups
        self.sums = np.zeros((groups.n_groups, *shape))
        self.counts = np.zeros(groups.n_groups)

    def add(self, first_chain: int, values: np.ndarray) -> None:
        """Add the per-draw statistic of a chain block, `values` of shape (c, D, *shape)."""
        n = values.shape[0]
        batch_sums = self.groups.reduce_draws(values)
        ids = self.groups.group_ids(first_chain, n).ravel()
        np.add.at(self.sums, ids, batch_sums.reshape(len(ids), *self.sums.shape[1:]))
        np.add.at(self.counts, ids, np.tile(self.groups.batch_sizes, n))

    def mean(self) -> np.ndarray:
        return self.sums.sum(axis=0) / self.counts.sum()

    def se(self) -> np.ndarray:
        return ratio_se(self.sums, self.counts)


def ratio_se(group_sums: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Standard error of a pooled mean from independent groups: sqrt(G/(G-1) sum_g w_g^2 (m_g - m)^2)
    with weights w_g = n_g / N (for equal groups: sd of the group means / sqrt(G))."""
    used = group_counts > 0
    sums, counts = group_sums[used], group_counts[used]
    n_groups = len(counts)
    if n_groups < 2:
        return np.full(group_sums.shape[1:], np.nan)
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    group_means = sums / counts.reshape(-1, *[1] * (sums.ndim - 1))
    weights = (counts / total).reshape(-1, *[1] * (sums.ndim - 1))
    return np.sqrt(n_groups / (n_groups - 1) * np.sum(weights**2 * (group_means - mean) ** 2, axis=0))


def mean_covariance(group_sums: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Covariance matrix of the pooled mean vector (group_sums (G, K)), the multivariate ratio_se."""
    used = group_counts > 0
    sums, counts = group_sums[used], group_counts[used]
    n_groups = len(counts)
    k = sums.shape[1]
    if n_groups < 2:
        return np.full((k, k), np.nan)
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    residual = (sums / counts[:, None] - mean) * (counts / total)[:, None]
    return n_groups / (n_groups - 1) * residual.T @ residual


def jackknife(statistic, group_sums: Sequence[np.ndarray], group_counts: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Estimate and delete-one-group jackknife standard error of ``statistic(*means)``.

    `group_sums` are arrays with a leading group axis; ``statistic`` maps the pooled means
    (arrays without the group axis, or with a leading axis of leave-one-out means) to the estimate.
    """
    used = group_counts > 0
    sums = [s[used] for s in group_sums]
    counts = group_counts[used]
    total_count = counts.sum()
    totals = [s.sum(axis=0) for s in sums]
    estimate = np.asarray(statistic(*[t / total_count for t in totals]))
    n_groups = len(counts)
    if n_groups < 2:
        return estimate, np.full(estimate.shape, np.nan)
    loo_counts = total_count - counts
    loo_means = [(t[None] - s) / loo_counts.reshape(-1, *[1] * (s.ndim - 1)) for t, s in zip(totals, sums)]
    loo = np.asarray(statistic(*loo_means))
    se = np.sqrt((n_groups - 1) / n_groups * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    return estimate, se


def ess_mean_se(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, se, ess) of per-draw statistics (chain, draw, *shape) with ArviZ's ESS for the mean."""
    import arviz as az
    import xarray as xr

    draws = np.asarray(draws, dtype=np.float64)
    mean = draws.mean(axis=(0, 1))
    dims = ("chain", "draw", *[f"dim_{i}" for i in range(draws.ndim - 2)])
    if draws.shape[1] < 4:
        return mean, np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    ess = np.asarray(az.ess(xr.Dataset({"s": (dims, draws)}), method="mean")["s"].values, dtype=np.float64)
    sd = draws.reshape(-1, *draws.shape[2:]).std(axis=0, ddof=1)
    return mean, sd / np.sqrt(ess), ess


# ----------------------------------------------------------------------------- subsampling and output


def bernoulli_keep(rng: np.random.Generator, shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """Keep mask with independent probability `fraction`: a seeded, streaming sub-sample whose size is
    binomial around fraction * N (fraction = n_max / N_total keeps ~n_max items in all)."""
    if fraction >= 1.0:
        return np.ones(shape, dtype=bool)
    return rng.random(shape) < fraction


def write_table(table: pd.DataFrame, out_path) -> Path:
    """Write a table as CSV (``.csv``) or NetCDF (``.nc``), creating the directory."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".csv":
        table.to_csv(out_path, index=False)
    elif out_path.suffix == ".nc":
        table = table.reset_index(drop=True)
        for column in table.columns[table.dtypes == object]:  # mixed columns (e.g. bool with NaN) as text
            table[column] = table[column].astype(str)
        table.to_xarray().rename({"index": "row"}).to_netcdf(out_path)
    else:
        raise ValueError(f"analysis output {out_path} must end in .csv or .nc")
    return out_path


def run_name(run: Mapping | None, path) -> str:
    if run and run.get("name"):
        return str(run["name"])
    return str(read_root_attr(path, "run", Path(path).stem))
