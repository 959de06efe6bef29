"""What a figure reads: its plan, the resolved runs, posterior files and analysis tables, and helpers
that read chosen parameters from large posteriors without loading them (first chains only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from interplay.analysis.posterior_files import iter_chain_blocks, network_layout, posterior_counts

DEFAULT_MAX_CHAINS = 1000


@dataclass(frozen=True)
class FigureData:
    """Inputs of one figure: `spec` (its config section), `roles` (under/over -> run name),
    `members` (its run set, in order), `runs` (resolved runs by name), `posteriors` (run -> merged
    posterior path) and `tables` ((run, analysis) -> table path)."""

    spec: Mapping = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)
    members: Sequence[str] = ()
    runs: Mapping[str, dict] = field(default_factory=dict)
    posteriors: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def posterior(self, run: str) -> str:
        if run not in self.posteriors:
            raise KeyError(f"the figure has no posterior file for run {run!r} (has {sorted(self.posteriors)})")
        return self.posteriors[run]

    def table(self, run: str, analysis: str) -> pd.DataFrame:
        key = (run, analysis)
        if key not in self.tables:
            raise KeyError(f"the figure has no {analysis} table for run {run!r}")
        return pd.read_csv(self.tables[key])

    def run(self, name: str) -> dict:
        if name not in self.runs:
            raise KeyError(f"the figure has no resolved settings for run {name!r}")
        return self.runs[name]


def from_params(plan: Mapping, runs: Mapping[str, dict], posteriors: Sequence[str], tables: Sequence[str]
                ) -> FigureData:
    """FigureData from a rule's params (plan.as_params(), runs) and its input file lists."""
    posterior_runs, table_keys = list(plan["posterior_runs"]), [tuple(t) for t in plan["tables"]]
    if len(posterior_runs) != len(posteriors) or len(table_keys) != len(tables):
        raise ValueError("the figure's inputs do not match its plan (posteriors "
                         f"{len(posteriors)} vs {len(posterior_runs)}, tables {len(tables)} vs {len(table_keys)})")
    return FigureData(spec=plan["spec"], roles=plan["roles"], members=plan["members"], runs=runs,
                      posteriors=dict(zip(posterior_runs, map(str, posteriors))),
                      tables=dict(zip(table_keys, map(str, tables))))


# ----------------------------------------------------------------------------- reading parameters


def read_parameters(path, selections: Mapping[str, Sequence[tuple]], *, max_chains: int = DEFAULT_MAX_CHAINS
                    ) -> dict[tuple, np.ndarray]:
    """Draws of chosen scalar parameters of the first `max_chains` chains (chains are iid, so they are a
    random subset and a contiguous one reads the fewest chunks), streamed in chain blocks.

    selections: variable -> list of index tuples into its non-(chain, draw) dims, e.g.
    {"kernel_0": [(0, 0), (1, 0)]}. Returns {(variable, index): array (chains, draws)}.
    """
    n_chains, _ = posterior_counts(path)
    limit = min(n_chains, max_chains)
    parts: dict[tuple, list[np.ndarray]] = {(v, tuple(i)): [] for v, idx in selections.items() for i in idx}
    for first, block in iter_chain_blocks(path, "posterior", list(selections), dtype=np.float32):
        take = min(limit - first, len(next(iter(block.values()))))
        for variable, indices in selections.items():
            values = block[variable][:take]
            for index in indices:
                index = tuple(index)
                if len(index) != values.ndim - 2:
                    raise ValueError(f"{path}: {variable} has {values.ndim - 2} parameter dims, index {index}")
                parts[(variable, index)].append(values[(slice(None), slice(None), *index)])
        if first + take >= limit:
            break
    return {key: np.concatenate(chunks, axis=0) for key, chunks in parts.items()}


def read_variables(path, names: Sequence[str], *, max_chains: int = DEFAULT_MAX_CHAINS) -> dict[str, np.ndarray]:
    """Whole variables (chain, draw, ...) of the first `max_chains` chains, streamed in chain blocks."""
    n_chains, _ = posterior_counts(path)
    limit = min(n_chains, max_chains)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for first, block in iter_chain_blocks(path, "posterior", list(names), dtype=np.float32):
        take = min(limit - first, len(next(iter(block.values()))))
        for name in names:
            parts[name].append(block[name][:take])
        if first + take >= limit:
            break
    return {n: np.concatenate(chunks, axis=0) for n, chunks in parts.items()}


def kernel_scales(path, run: Mapping | None = None) -> list[float]:
    """Prior scale tau of each layer's kernel, as stored with the draws."""
    return [layer.kernel_scale for layer in network_layout(path, run)]


def parameter_names(path, run: Mapping | None = None) -> list[tuple[str, int]]:
    """(variable, n_params) of the kernels and biases in layer order (log sigma left out)."""
    from interplay.analysis.posterior_files import group_variables

    variables = group_variables(path, "posterior")
    names = []
    for layer in network_layout(path, run):
        names.append((layer.kernel, variables[layer.kernel].n_params))
        if layer.bias:
            names.append((layer.bias, variables[layer.bias].n_params))
    return names


# ----------------------------------------------------------------------------- labels


def architecture(run: Mapping) -> str:
    """Hidden widths as 16-16-16 (or 'linear')."""
    hidden = run["model"]["hidden"]
    return "-".join(str(h) for h in hidden) if hidden else "linear"


SAMPLER_LABELS = {"mile": "MILE", "mams": "MAMS", "nuts": "NUTS", "de": "DE", "mfvi": "MFVI", "laplace": "LA",
                  "sghmc": "SGHMC"}


def sampler_label(run: Mapping) -> str:
    return SAMPLER_LABELS.get(run["sampler"]["kind"], run["sampler"]["kind"])


def tau_label(run: Mapping) -> str:
    scale = run["prior"]["scale"]
    return "τ=" + ("/".join(f"{s:g}" for s in scale) if isinstance(scale, list) else f"{scale:g}")


def run_label(run: Mapping) -> str:
    """Short description: dataset, hidden widths, activation, sampler."""
    return f"{run['dataset']} {architecture(run)} {run['model']['activation']} ({sampler_label(run)})"


def checked_path(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    return path
