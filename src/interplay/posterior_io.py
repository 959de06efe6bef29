"""Posterior files: block writing (atomic) and streaming merge along `chain` (streaming reads for
analyses: `interplay.analysis.posterior_files.iter_chain_blocks`).

Layout (docs/DESIGN.md): a NetCDF4 file with groups ``posterior`` (float32 draws, dims
``chain``, ``draw``, unit dims), ``sample_stats`` (per chain) and ``predictive`` (float64, over
test points), every group carrying the ``chain`` coordinate of global chain indices. Variables
with a ``chain`` dim are zlib-compressed (with byte shuffle) and chunked by chain, so reading a
subset of chains touches only their chunks.

Block and merged files are written through the same netCDF4 layout code, so they match exactly;
both are written under a temporary name in the destination directory and then ``os.replace``-d,
so a killed job never leaves a partial file under the final name. The merge streams one chain
chunk of one variable at a time, so its peak memory does not grow with the number of blocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from interplay.data.atomic import atomic_path
from interplay.specs import PriorSpec, leaf_layer, param_dims
from interplay.workflow_logging import log_line

GROUPS = ("posterior", "sample_stats", "predictive")
# DESIGN.md's per-chain statistics every block carries (samplers may add more, e.g. NUTS's).
REQUIRED_STATS = (
    "step_size", "L", "energy_variance", "diverged", "warmstart_val_loss",
    "warmup_seconds", "sampling_seconds", "n_grad_evals",
)
# Dims of the predictive variables (chain first where present).
PREDICTIVE_DIMS = {
    "log_pred_density": ("chain", "test_point"),
    "pred_mean": ("chain", "test_point"),          # classification: + ("class",)
    "pit": ("chain", "test_point"),
    "pred_draws": ("chain", "draw", "diag_point"),
    "y_test": ("test_point",),
}
# Integer index coordinates written for these dims (unit dims stay coordinate-free).
INDEX_COORDS = ("chain", "draw", "test_point", "diag_point", "class")
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
MAX_CHUNK_BYTES = 16 * 2**20  # stay well inside HDF5's 4 GiB chunk limit and netCDF's chunk cache

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- layout


@dataclass
class VarSpec:
    dims: tuple[str, ...]
    dtype: np.dtype
    attrs: dict = field(default_factory=dict)


@dataclass
class Layout:
    """Everything needed to create an empty posterior file except the number of chains."""

    dim_sizes: dict[str, dict[str, int]]       # group -> dim -> size (without `chain`)
    variables: dict[str, dict[str, VarSpec]]   # group -> name -> spec (coordinates excluded)
    root_attrs: dict
    chain_chunk: int


def _chain_chunk(spec: VarSpec, sizes: Mapping[str, int], chain_chunk: int) -> tuple[int, ...]:
    """Chunk shape: `chain_chunk` chains (fewer where one chain's slab is large), other dims whole."""
    other = [sizes[d] for d in spec.dims if d != "chain"]
    bytes_per_chain = max(1, int(np.prod(other, dtype=np.int64)) * np.dtype(spec.dtype).itemsize)
    chains = max(1, min(chain_chunk, MAX_CHUNK_BYTES // bytes_per_chain))
    return tuple(chains if d == "chain" else max(1, sizes[d]) for d in spec.dims)


def _create_file(path: Path, layout: Layout, chain_ids: np.ndarray) -> netCDF4.Dataset:
    """Create `path` with every group, dim, coordinate and (unfilled) variable of `layout`."""
    n_chain = len(chain_ids)
    nc = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        nc.setncatts({k: _attr_value(v) for k, v in layout.root_attrs.items()})
        for group_name in GROUPS:
            group = nc.createGroup(group_name)
            sizes = {"chain": n_chain, **layout.dim_sizes[group_name]}
            for dim, size in sizes.items():
                group.createDimension(dim, size)
            for dim in INDEX_COORDS:
                if dim in sizes:
                    coord = group.createVariable(dim, "i8", (dim,))
                    coord[:] = chain_ids if dim == "chain" else np.arange(sizes[dim])
            for name, spec in layout.variables[group_name].items():
                chunk_chains = min(layout.chain_chunk, max(n_chain, 1))
                has_chain = "chain" in spec.dims
                var = group.createVariable(
                    name, spec.dtype, spec.dims, fill_value=False,
                    chunksizes=_chain_chunk(spec, sizes, chunk_chains) if has_chain and n_chain else None,
                    **(COMPRESSION if has_chain else {}),
                )
                var.setncatts({k: _attr_value(v) for k, v in spec.attrs.items()})
        return nc
    except BaseException:
        nc.close()
        raise


def _attr_value(value):
    """NetCDF attribute value: dicts/lists as JSON text, bools as ints."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return "null"
    return value


# ----------------------------------------------------------------------------- blocks


def _prior_attrs(model, run) -> dict[str, dict]:
    """Per-leaf `prior_scale` (absent for a flat prior) and `layer` (-1 for log_sigma) attrs."""
    scales = PriorSpec.from_run(run, model).scales
    attrs = {}
    for name, scale in scales.items():
        leaf_attrs = {"layer": leaf_layer(name)}
        if scale is not None:
            leaf_attrs["prior_scale"] = float(scale)
        attrs[name] = leaf_attrs
    return attrs


def _as_numpy(value, dtype=None) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(dtype) if dtype is not None else array


def write_block(out_path, draws: Mapping, stats: Mapping, predictive: Mapping, *, model, run: Mapping,
                chains: Sequence[int], attrs: Mapping | None = None) -> None:
    """Write one chain block (DESIGN.md layout) atomically: temp file in the same directory + os.replace.

    draws: leaf -> (chain, draw, *leaf dims); stats: name -> (chain,); predictive: name -> array with
    the dims in PREDICTIVE_DIMS (``pred_mean`` gains a ``class`` dim for classification). `chains` are
    the global chain indices; `attrs` extra root attributes (versions, git commit, device, ...).
    """
    chain_ids = np.asarray(list(chains), dtype=np.int64)
    n_chain = len(chain_ids)
    if n_chain == 0:
        raise ValueError(f"run {run.get('name')!r}: a block needs at least one chain")
    dims_of = param_dims(model)
    if set(draws) != set(dims_of):
        raise ValueError(f"draws have leaves {sorted(draws)}, the model has {sorted(dims_of)}")
    missing = [s for s in REQUIRED_STATS if s not in stats]
    if missing:
        raise ValueError(f"sample_stats lack {missing} (DESIGN.md requires {list(REQUIRED_STATS)})")
    unknown = sorted(set(predictive) - set(PREDICTIVE_DIMS))
    if unknown:
        raise ValueError(f"unknown predictive variables {unknown}; known: {sorted(PREDICTIVE_DIMS)}")

    arrays: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
    variables: dict[str, dict[str, VarSpec]] = {g: {} for g in GROUPS}
    dim_sizes: dict[str, dict[str, int]] = {g: {} for g in GROUPS}

    def add(group, name, array, dims, attrs=None):
        if array.ndim != len(dims):
            raise ValueError(f"{group}/{name}: expected dims {dims}, got an array of shape {array.shape}")
        for dim, size in zip(dims, array.shape):
            known = n_chain if dim == "chain" else dim_sizes[group].setdefault(dim, size)
            if size != known:
                raise ValueError(f"{group}/{name}: dim {dim!r} has size {size}, expected {known}")
        arrays[group][name] = array
        variables[group][name] = VarSpec(tuple(dims), array.dtype, dict(attrs or {}))

    prior_attrs = _prior_attrs(model, run)
    for name in dims_of:
        add("posterior", name, _as_numpy(draws[name], np.float32), ("chain", "draw", *dims_of[name]),
            prior_attrs.get(name))
    for name, value in stats.items():
        array = _as_numpy(value)
        array = array.astype(np.int8) if name == "diverged" else array
        array = array.astype(np.float64) if array.dtype.kind == "f" else array
        add("sample_stats", name, array, ("chain",))
    for name, value in predictive.items():
        array = _as_numpy(value, np.float64)
        dims = PREDICTIVE_DIMS[name]
        if name == "pred_mean" and array.ndim == 3:
            dims = (*dims, "class")
        add("predictive", name, array, dims)

    root_attrs = {
        "run": run.get("name", "unknown"),
        "config": json.dumps(dict(run), sort_keys=True, default=str),
        "seed": int(run.get("sampler", {}).get("seed", 0)),
        **dict(attrs or {}),
    }
    layout = Layout(dim_sizes, variables, root_attrs, chain_chunk=n_chain)

    with atomic_path(out_path) as temp, _create_file(temp, layout, chain_ids) as nc:
        for group_name in GROUPS:
            for name, array in arrays[group_name].items():
                nc[group_name][name][...] = array


# ----------------------------------------------------------------------------- merge


def _read_layout(nc: netCDF4.Dataset) -> Layout:
    dim_sizes, variables = {}, {}
    for group_name in GROUPS:
        if group_name not in nc.groups:
            raise ValueError(f"{nc.filepath()}: missing group {group_name!r}")
        group = nc[group_name]
        dim_sizes[group_name] = {d: len(v) for d, v in group.dimensions.items() if d != "chain"}
        variables[group_name] = {
            name: VarSpec(var.dimensions, var.dtype, {k: var.getncattr(k) for k in var.ncattrs()})
            for name, var in group.variables.items() if name not in INDEX_COORDS
        }
    root = {k: nc.getncattr(k) for k in nc.ncattrs()}
    return Layout(dim_sizes, variables, root, chain_chunk=len(nc["posterior"].dimensions["chain"]))


def _same_layout(a: Layout, b: Layout) -> str | None:
    """Why two block layouts cannot be concatenated, or None."""
    for group in GROUPS:
        if a.dim_sizes[group] != b.dim_sizes[group]:
            return f"group {group}: dims {a.dim_sizes[group]} vs {b.dim_sizes[group]}"
        if {n: (v.dims, v.dtype) for n, v in a.variables[group].items()} != {
            n: (v.dims, v.dtype) for n, v in b.variables[group].items()
        }:
            return f"group {group}: variables differ"
    if a.root_attrs.get("run") != b.root_attrs.get("run"):
        return f"runs differ ({a.root_attrs.get('run')!r} vs {b.root_attrs.get('run')!r})"
    return None


UNKNOWN_CAUSE = "cause not recorded"


def _diverged_causes(nc: netCDF4.Dataset) -> dict[str, str]:
    """A block's root attr ``diverged_causes`` ({chain id: causes}); {} where absent or unreadable."""
    try:
        causes = json.loads(nc.getncattr("diverged_causes"))
    except (AttributeError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in causes.items()} if isinstance(causes, dict) else {}


def _diverged_summary(path: Path, ids: np.ndarray, causes: Mapping[str, str], max_chains: int = 10) -> str:
    """'block-0001.nc: chains [2, 3] (non-finite energies: 2, non-finite positions: 1)'."""
    counts: dict[str, int] = {}
    for chain in ids.tolist():
        for cause in causes.get(str(chain), UNKNOWN_CAUSE).split(", "):
            counts[cause] = counts.get(cause, 0) + 1
    shown = ids.tolist()[:max_chains] + (["..."] if ids.size > max_chains else [])
    listed = ", ".join(map(str, shown))
    return f"{path.name}: chains [{listed}] ({', '.join(f'{c}: {n}' for c, n in counts.items())})"


def merge_blocks(block_paths: Sequence, out_path, *, drop_diverged: bool = True, log=None) -> dict:
    """Concatenate block files along `chain` into `out_path`, streaming one chain chunk at a time.

    Chains flagged ``sample_stats.diverged`` are dropped unless `drop_diverged` is False; the count
    goes to the root attr ``n_diverged_dropped``, their causes (from the blocks' ``diverged_causes``)
    to ``diverged_causes``. A block whose chains all diverged is merged like any other; only when no
    chain of the whole run is left does the merge fail (RuntimeError naming run, blocks and causes).
    Peak memory is one chunk of one variable, whatever the number of blocks. Returns a summary dict
    (blocks, chains, kept, dropped, diverged chain ids).
    """
    block_paths = [Path(p) for p in block_paths]
    if not block_paths:
        raise ValueError("merge_blocks needs at least one block file")
    for path in block_paths:
        if not path.is_file():
            raise FileNotFoundError(f"block file {path} does not exist")

    # Pass 1: layouts and diverged flags only (small), to size the merged `chain` dim up front.
    keep_masks, chain_ids, diverged_ids, causes = [], [], [], {}
    layout = None
    for path in block_paths:
        with netCDF4.Dataset(path) as nc:
            block_layout = _read_layout(nc)
            if layout is None:
                layout = block_layout
            elif (why := _same_layout(layout, block_layout)) is not None:
                raise ValueError(f"block {path} does not match {block_paths[0]}: {why}")
            ids = np.asarray(nc["posterior"]["chain"][:], dtype=np.int64)
            diverged = np.asarray(nc["sample_stats"]["diverged"][:]).astype(bool)
            causes.update(_diverged_causes(nc))
        chain_ids.append(ids)
        diverged_ids.append(ids[diverged])
        keep_masks.append(~diverged if drop_diverged else np.ones_like(diverged))
    all_ids = np.concatenate(chain_ids)
    unique_ids, counts = np.unique(all_ids, return_counts=True)
    duplicates = unique_ids[counts > 1]
    if duplicates.size:
        raise ValueError(f"chains {duplicates.tolist()[:10]} appear in more than one block")
    kept_ids = np.concatenate([ids[keep] for ids, keep in zip(chain_ids, keep_masks)])
    dropped_ids = np.concatenate([ids[~keep] for ids, keep in zip(chain_ids, keep_masks)])
    run = layout.root_attrs.get("run", "unknown")
    if kept_ids.size == 0:
        details = "; ".join(_diverged_summary(path, ids, causes) for path, ids in zip(block_paths, diverged_ids))
        raise RuntimeError(f"run {run!r}: no chain left to merge: all {all_ids.size} chains of "
                           f"{len(block_paths)} blocks diverged ({details})")

    root_attrs = {k: v for k, v in layout.root_attrs.items() if k not in ("block", "n_diverged")}
    root_attrs.update(blocks=len(block_paths), n_diverged_dropped=int(dropped_ids.size),
                      diverged_causes={str(c): causes.get(str(c), UNKNOWN_CAUSE)
                                       for c in np.concatenate(diverged_ids).tolist()})
    if isinstance(root_attrs.get("config"), str):  # the blocks' sampling settings + the merge settings used
        try:
            config = json.loads(root_attrs["config"])
        except json.JSONDecodeError:
            config = None
        if isinstance(config, dict):
            root_attrs["config"] = {**config, "merge": {**config.get("merge", {}), "drop_diverged": drop_diverged}}
    merged_layout = Layout(layout.dim_sizes, layout.variables, root_attrs, layout.chain_chunk)
    # The first block's chain-free variables (y_test) must be the same in every block.
    reference = {}

    def write(temp: Path) -> None:
        with _create_file(temp, merged_layout, kept_ids) as out:
            for group_name in GROUPS:
                for name, spec in layout.variables[group_name].items():
                    if "chain" in spec.dims:
                        # Blocks with dropped chains end inside a chunk: keep that one until it is filled.
                        _limit_chunk_cache(out[group_name][name], 2)
            offset = 0
            for path, keep in zip(block_paths, keep_masks):
                with netCDF4.Dataset(path) as nc:
                    for group_name in GROUPS:
                        for name, spec in layout.variables[group_name].items():
                            source = nc[group_name][name]
                            source.set_auto_mask(False)
                            if "chain" not in spec.dims:
                                value = source[...]
                                if name not in reference:
                                    reference[name] = value
                                    out[group_name][name][...] = value
                                elif not np.array_equal(reference[name], value, equal_nan=True):
                                    raise ValueError(f"{path}: {group_name}/{name} differs from the "
                                                     "first block's")
                                continue
                            axis = spec.dims.index("chain")
                            _copy_chains(source, out[group_name][name], keep, offset, axis)
                offset += int(keep.sum())
                log_line(log, f"merged {path.name}: kept {int(keep.sum())} of {keep.size} chains", default=logger)

    with atomic_path(out_path) as temp:
        write(temp)
    summary = {
        "run": run, "blocks": len(block_paths), "chains": int(all_ids.size), "kept": int(kept_ids.size),
        "n_diverged_dropped": int(dropped_ids.size), "dropped_chains": dropped_ids.tolist(),
    }
    log_line(log, f"merged {len(block_paths)} blocks of run {run!r} into {out_path}: {kept_ids.size} chains "
              f"kept, {dropped_ids.size} diverged chains dropped {dropped_ids.tolist()[:20]}", default=logger)
    return summary


def _chunk_bytes(var) -> int:
    chunking = var.chunking()
    shape = chunking if isinstance(chunking, list) else var.shape
    return int(np.prod(shape, dtype=np.int64)) * var.dtype.itemsize


def _limit_chunk_cache(var, n_chunks: int) -> None:
    """Cache at most `n_chunks` chunks of `var` (netCDF's default is 64 MiB per variable, which
    would make a merge's memory grow with the merged file up to that cap for every variable).
    Preemption 1: chunks written completely leave the cache first, partial ones stay until filled."""
    var.set_var_chunk_cache(size=max(1, n_chunks) * _chunk_bytes(var), nelems=101, preemption=1.0)


def _copy_chains(source, target, keep: np.ndarray, offset: int, axis: int) -> None:
    """Copy the kept chains of `source` to `target[offset:]`, one source chunk of chains at a time."""
    chunking = source.chunking()
    step = chunking[axis] if isinstance(chunking, list) else max(1, keep.size)
    _limit_chunk_cache(source, 1)  # each source chunk is read exactly once
    written = offset
    for start in range(0, keep.size, step):
        stop = min(start + step, keep.size)
        sub_keep = keep[start:stop]
        n_keep = int(sub_keep.sum())
        if n_keep == 0:
            continue
        index = [slice(None)] * source.ndim
        index[axis] = slice(start, stop)
        data = source[tuple(index)]
        if n_keep < sub_keep.size:
            data = np.compress(sub_keep, data, axis=axis)
        index[axis] = slice(written, written + n_keep)
        target[tuple(index)] = data
        written += n_keep


# ----------------------------------------------------------------------------- reading


def read_root_attrs(path) -> dict:
    """Root attributes of a posterior file, JSON-valued ones (config, versions, diverged_causes, data) decoded."""
    with netCDF4.Dataset(path) as nc:
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
    for key in ("config", "versions", "diverged_causes", "data"):
        if isinstance(attrs.get(key), str):
            try:
                attrs[key] = json.loads(attrs[key])
            except json.JSONDecodeError:
                pass
    return attrs


def open_posterior(path) -> dict[str, xr.Dataset]:
    """The groups of a posterior file as lazily loaded xarray Datasets: {group: Dataset}.

    Each Dataset's attrs also carry the file's root attributes (run, config, seed, ...) as stored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    with netCDF4.Dataset(path) as nc:
        root = {k: nc.getncattr(k) for k in nc.ncattrs()}
        groups = [g for g in GROUPS if g in nc.groups]
    missing = sorted(set(GROUPS) - set(groups))
    if missing:
        raise ValueError(f"{path}: missing groups {missing}")
    datasets = {}
    for group in groups:
        ds = xr.open_dataset(path, group=group, engine="netcdf4")
        ds.attrs = {**root, **ds.attrs}
        datasets[group] = ds
    return datasets


# ----------------------------------------------------------------------------- copies without draws


def _copy_values(var, out, slab_bytes: int) -> None:
    """Copy a variable in slabs along its first dim (pred_draws can be ~1 GB at 10,000 chains)."""
    itemsize = getattr(var.dtype, "itemsize", 0)
    if var.ndim == 0 or not itemsize or var.size * itemsize <= slab_bytes:
        out[...] = var[...]
        return
    row_bytes = itemsize * (var.size // max(var.shape[0], 1))
    step = max(1, slab_bytes // max(row_bytes, 1))
    for start in range(0, var.shape[0], step):
        out[start:start + step] = var[start:start + step]


def _copy_group(src, dst, drop_here: tuple[str, ...], slab_bytes: int) -> None:
    """Copy a group as stored (dims, dtypes, chunking, compression, attrs), leaving out ``drop_here``."""
    dst.setncatts({name: src.getncattr(name) for name in src.ncattrs()})
    for name, dim in src.dimensions.items():
        dst.createDimension(name, None if dim.isunlimited() else len(dim))
    for name, var in src.variables.items():
        filters = var.filters() or {}
        chunking = var.chunking()
        attrs = {k: var.getncattr(k) for k in var.ncattrs()}
        fill = attrs.pop("_FillValue", None)
        out = dst.createVariable(
            name,
            var.datatype,
            var.dimensions,
            zlib=bool(filters.get("zlib")),
            complevel=filters.get("complevel") or 4,
            shuffle=bool(filters.get("shuffle")),
            fletcher32=bool(filters.get("fletcher32")),
            chunksizes=None if chunking in (None, "contiguous") else chunking,
            fill_value=fill,
        )
        out.setncatts(attrs)
        var.set_auto_maskandscale(False)
        out.set_auto_maskandscale(False)
        _copy_values(var, out, slab_bytes)
    for name, group in src.groups.items():
        if name not in drop_here:
            _copy_group(group, dst.createGroup(name), (), slab_bytes)


def strip_draws(
    source: str | Path, target: str | Path, drop: tuple[str, ...] = ("posterior",), slab_bytes: int = 64 << 20
) -> None:
    """Copy a posterior NetCDF file leaving out the ``drop`` groups (the draws).

    Everything else is copied as stored (dims, dtypes, chunking, compression, attrs: root attrs,
    ``sample_stats``, ``predictive``), at most ``slab_bytes`` in memory at a time; the root gets
    ``draws_omitted = 1`` so later code can tell. A ``drop`` group the file lacks is a ValueError.
    """
    with netCDF4.Dataset(source, "r") as src:
        missing = [name for name in drop if name not in src.groups]
        if missing:
            raise ValueError(f"{source} has no group(s) {missing} to leave out")
        with netCDF4.Dataset(target, "w", format=src.data_model) as dst:
            _copy_group(src, dst, drop, slab_bytes)
            dst.setncattr("draws_omitted", 1)
