"""Parameter correlation matrices: sampling (MILE / NUTS) against mean-field VI.

Each matrix is the within-chain correlation of all kernels and biases (layer order, log sigma left
out), averaged over chains: chains sit in different symmetric modes, so pooling them would mix the
modes. Mean-field VI factorises by construction (zero correlation up to Monte Carlo noise); the
sampler shows the correlations the symmetries and the likelihood create. Rows: architectures;
columns: sampling, then MFVI. Thin lines mark the layer boundaries.
"""

from __future__ import annotations

import numpy as np

from interplay.analysis.posterior_files import iter_chain_blocks, posterior_counts
from interplay.figures import style
from interplay.figures.data import FigureData, architecture, parameter_names, sampler_label

DEFAULT_MAX_CHAINS = 100
KIND_ORDER = {"mile": 0, "mams": 1, "nuts": 2, "mfvi": 3}


def within_chain_correlation(path, run=None, *, max_chains: int = DEFAULT_MAX_CHAINS
                             ) -> tuple[np.ndarray, list[tuple[str, int]], int]:
    """(P, P) mean over chains of each chain's correlation matrix of all kernels and biases, the
    variables in order with their sizes, and the number of chains used. A parameter that does not
    move within a chain contributes 0 (its correlation is undefined)."""
    names = parameter_names(path, run)
    n_chains, n_draws = posterior_counts(path)
    if n_draws < 3:
        raise ValueError(f"{path}: {n_draws} draws per chain; within-chain correlations need at least 3")
    limit = min(n_chains, max_chains)
    total, used = None, 0
    for first, block in iter_chain_blocks(path, "posterior", [n for n, _ in names]):
        take = min(limit - first, len(block[names[0][0]]))
        flat = np.concatenate([block[n][:take].reshape(take, n_draws, -1) for n, _ in names], axis=-1)
        for chain in flat:
            centred = chain - chain.mean(axis=0)
            sd = np.sqrt(np.sum(centred**2, axis=0))
            unit = centred / np.where(sd > 0, sd, np.inf)
            corr = unit.T @ unit
            total = corr if total is None else total + corr
            used += 1
        if first + take >= limit:
            break
    return total / used, names, used


def mean_abs_offdiagonal(corr: np.ndarray) -> float:
    p = len(corr)
    return float((np.abs(corr).sum() - np.abs(np.diag(corr)).sum()) / max(p * (p - 1), 1))


def layout(data: FigureData) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Row keys (architecture + dataset), column keys (sampler kinds, sampling first) and the run of each cell."""
    cells, order = {}, {}
    for name in data.members:
        run = data.run(name)
        row = f"{run['dataset']} {architecture(run)}"
        cells[(row, run["sampler"]["kind"])] = name
        order[row] = (run["dataset"], len(run["model"]["hidden"]), list(run["model"]["hidden"]))
    rows = sorted(order, key=order.get)
    cols = sorted({c for _, c in cells}, key=lambda c: KIND_ORDER.get(c, 9))
    return rows, cols, cells


def plot(data: FigureData):
    max_chains = int(data.spec.get("max_chains", DEFAULT_MAX_CHAINS))
    rows, cols, cells = layout(data)
    fig, axes = style.figure(len(rows), len(cols), width=min(style.FULL_WIDTH, 3.0 * len(cols) + 0.9),
                             row_height=2.9)
    image = None
    for _, c, row, _, ax, name in style.run_panels(axes, rows, cols, cells,
                                                   lambda row, kind: f"no {kind} run for {row}"):
        run = data.run(name)
        corr, names, used = within_chain_correlation(data.posterior(name), run, max_chains=max_chains)
        image = ax.imshow(corr, cmap=style.DIVERGING_CMAP, vmin=-1, vmax=1, interpolation="nearest")
        bounds = np.cumsum([size for _, size in names])[:-1] - 0.5
        for b in bounds:
            ax.axhline(b, color="0.3", lw=0.3)
            ax.axvline(b, color="0.3", lw=0.3)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{sampler_label(run)}: {row}\nmean |r| off-diagonal {mean_abs_offdiagonal(corr):.3f} "
                     f"({used} chains)", fontsize="small")
        if c == 0:
            ax.set_ylabel(f"{len(corr)} parameters")
    if image is not None:
        fig.colorbar(image, ax=axes, label="within-chain correlation", shrink=0.8)
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
