"""Bivariate marginal posterior densities within and across layers, under- vs overparametrized net.

Rows: the under- and the overparametrized run. Columns: two weights of the same layer (the first two
inputs of hidden unit 0) and two weights across layers (hidden unit 0's first incoming weight and its
first outgoing weight, the pair the rescaling symmetry couples). Many draws, so 2-D histograms on a
log colour scale, with the prior's 50% / 95% contours.
"""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import DEFAULT_MAX_CHAINS, FigureData, kernel_scales, read_parameters, run_label

DEFAULT_BINS = 100
# (x, y) parameter pairs: (variable, index into its units dims)
WITHIN = (("kernel_0", (0, 0)), ("kernel_0", (1, 0)))
ACROSS = (("kernel_0", (0, 0)), ("kernel_1", (0, 0)))


def _pairs(path, run) -> list[tuple[str, tuple, tuple]]:
    """(title, x, y) of the pairs the net has (a 1-input net has no second input weight)."""
    from interplay.analysis.posterior_files import network_layout

    layers = network_layout(path, run)
    pairs = []
    if layers[0].fan_in >= 2:
        pairs.append(("within layer 1", *WITHIN))
    if len(layers) >= 2:
        pairs.append(("across layers 1–2", *ACROSS))
    return pairs


def pair_edges(x: np.ndarray, y: np.ndarray, tau_x: float, tau_y: float, bins: int,
               coverage: float = 0.998) -> tuple[np.ndarray, np.ndarray]:
    """Square-ish bin edges covering the central `coverage` of the draws and the prior's 95% disc."""
    halves = []
    for values, tau in ((x, tau_x), (y, tau_y)):
        lo, hi = np.quantile(values, [(1 - coverage) / 2, (1 + coverage) / 2])
        halves.append(max(abs(lo), abs(hi), 2.5 * tau) * 1.05)
    if tau_x == tau_y:  # one prior scale: a square window, so the prior's circles look round
        halves = [max(halves)] * 2
    return tuple(np.linspace(-half, half, bins + 1) for half in halves)


def plot(data: FigureData):
    import matplotlib.pyplot as plt

    style.apply()
    max_chains = int(data.spec.get("max_chains", DEFAULT_MAX_CHAINS))
    bins = int(data.spec.get("bins", DEFAULT_BINS))
    rows = [("underparametrized", data.roles["under"]), ("overparametrized", data.roles["over"])]
    panels = []  # (row, col, title, x, y, edges, tau or None, labels)
    subtitles = []
    for row, (label, name) in enumerate(rows):
        path, run = data.posterior(name), data.run(name)
        taus = kernel_scales(path, run)
        pairs = _pairs(path, run)
        selections: dict[str, list] = {}
        for _, (vx, ix), (vy, iy) in pairs:
            selections.setdefault(vx, []).append(ix)
            selections.setdefault(vy, []).append(iy)
        draws = read_parameters(path, {v: list(dict.fromkeys(i)) for v, i in selections.items()},
                                max_chains=max_chains)
        n_chains, n_draws = next(iter(draws.values())).shape
        subtitles.append(f"{label}: {run_label(run)}, {n_chains} chains × {n_draws} draws")
        for col, (title, (vx, ix), (vy, iy)) in enumerate(pairs):
            x, y = draws[(vx, ix)].ravel(), draws[(vy, iy)].ravel()
            tau_x, tau_y = taus[int(vx.split("_")[1])], taus[int(vy.split("_")[1])]
            edges = pair_edges(x, y, tau_x, tau_y, bins)
            panels.append((row, col, title, x, y, edges, tau_x if tau_x == tau_y else None,
                           (_param_label(vx, ix), _param_label(vy, iy))))
    # one colour scale for all panels, so densities compare across nets
    counts = [np.histogram2d(x, y, bins=list(edges))[0] for _, _, _, x, y, edges, _, _ in panels]
    norm = style.density_norm(np.concatenate([c.ravel() for c in counts]))
    fig = plt.figure(figsize=(6.4, 6.2), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    axes = [sub.subplots(1, 2) for sub in subfigs]
    for sub, subtitle in zip(subfigs, subtitles):
        sub.suptitle(subtitle, fontsize="small")
    mesh = None
    drawn = set()
    for (row, col, title, x, y, (x_edges, y_edges), tau, (x_label, y_label)), count in zip(panels, counts):
        ax = axes[row][col]
        drawn.add((row, col))
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_equal(count.T, 0), norm=norm, cmap=style.DENSITY_CMAP,
                             rasterized=True, shading="flat")
        if tau is not None:
            style.prior_circles(ax, tau)
            ax.set_aspect("equal")
        ax.set_xlim(x_edges[[0, -1]])
        ax.set_ylim(y_edges[[0, -1]])
        ax.set_title(title, fontsize="small")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
    for row in range(2):
        for col in range(2):
            if (row, col) not in drawn:
                style.empty_panel(axes[row][col], "the net has no such pair")
    axes[0][0].legend(loc="upper right", fontsize="x-small")
    if mesh is not None:  # the same colour scale in every panel, shown once per row
        for sub, pair in zip(subfigs, axes):
            sub.colorbar(mesh, ax=list(pair), label="draws per bin", shrink=0.9)
    return fig


def _param_label(variable: str, index: tuple) -> str:
    layer = int(variable.split("_")[1]) + 1
    return f"$W^{{({layer})}}_{{{index[0] + 1},{index[1] + 1}}}$"


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
