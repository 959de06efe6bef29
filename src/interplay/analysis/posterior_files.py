"""Posterior files as the analyses read them: what is stored, the network's layers with their prior
scales, and streaming reads in blocks of whole chains.

Every analysis reads the posterior in blocks of whole chains (aligned with the file's chain chunks,
at most `max_bytes` of stored data per block), reduces each block to small per-group sums
(`interplay.analysis.monte_carlo`) and drops it, so the peak memory does not grow with the number of
chains or draws.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from interplay.specs import leaf_prior_scales

DEFAULT_BLOCK_BYTES = 64 * 2**20  # stored bytes read per block; float64 copies and temporaries add ~4x


# ----------------------------------------------------------------------------- file metadata


def _check_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    return path


@contextlib.contextmanager
def _open_group(path, group: str) -> Iterator[netCDF4.Group]:
    """Group `group` of the posterior file at `path`, open for the block (ValueError naming the groups
    the file has where it lacks it)."""
    with netCDF4.Dataset(_check_file(path)) as nc:
        if group not in nc.groups:
            raise ValueError(f"{path}: no group {group!r} (it has {sorted(nc.groups)})")
        yield nc[group]


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
    with _open_group(path, group) as grp:
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
    with _open_group(path, group) as grp:
        return {d: len(v) for d, v in grp.dimensions.items()}


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
    it, from ``run["prior"]`` (`interplay.specs.leaf_prior_scales`, as the sampler resolves them). A
    bias without the attr has a flat prior unless the run says ``prior.bias: gaussian``.
    """
    variables = group_variables(path, "posterior")
    n_layers = sum(1 for name in variables if name.startswith("kernel_"))
    if n_layers == 0:
        raise ValueError(f"{path}: the posterior group has no kernel_* variables")
    prior = (run or {}).get("prior") or {}
    config_scales = None
    if "scale" in prior:
        config_scales = leaf_prior_scales(n_layers, bias=True, scale=prior["scale"],
                                          bias_scale=prior.get("bias_scale"),
                                          bias_prior=prior.get("bias", "gaussian"))
    layers = []
    for index in range(n_layers):
        kernel = variables.get(f"kernel_{index}")
        if kernel is None:
            raise ValueError(f"{path}: kernel_{index} is missing (have {sorted(variables)})")
        if kernel.dims[:2] != ("chain", "draw") or len(kernel.dims) != 4:
            raise ValueError(f"{path}: kernel_{index} has dims {kernel.dims}, expected (chain, draw, in, out)")
        tau = kernel.prior_scale
        if tau is None:
            if config_scales is None:
                raise ValueError(f"{path}: kernel_{index} has no prior_scale attr and no run config is given")
            tau = config_scales[kernel.name]
        bias = variables.get(f"bias_{index}")
        bias_tau = None
        if bias is not None:
            bias_tau = bias.prior_scale
            # A file whose kernels carry prior_scale marks a flat bias prior by leaving the attr out;
            # a file without any attrs takes the bias prior from the run.
            if bias_tau is None and kernel.prior_scale is None:
                bias_tau = config_scales[bias.name]
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
    with _open_group(path, group) as grp:
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


def run_name(run: Mapping | None, path) -> str:
    if run and run.get("name"):
        return str(run["name"])
    return str(read_root_attr(path, "run", Path(path).stem))
