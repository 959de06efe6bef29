"""The 1-M-1 grid: joint densities of a unit's input weight w_j and output weight v_j, per width M (rows)
and prior scale tau (columns), with the curve w v = beta and the prior's contours.

f(x) = x sum_j w_j v_j, so the data pin down beta = sum_j w_j v_j only; beta-hat is the posterior
mean of that sum. For M = 1 the posterior lies along the hyperbola w v = beta-hat; with more units the
product is shared among them and each (w_j, v_j) falls back towards the prior. Units are
exchangeable, so the panel pools all of them.
"""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import DEFAULT_MAX_CHAINS, FigureData, read_variables

DEFAULT_BINS = 80


def grid_cells(data: FigureData) -> tuple[list[int], list[float], dict[tuple[int, float], str]]:
    """Widths M (ascending), prior scales (descending) and the run of each (M, tau) cell."""
    cells = {}
    for name in data.members:
        run = data.run(name)
        cells[(int(run["model"]["hidden"][0]), float(run["prior"]["scale"]))] = name
    widths = sorted({m for m, _ in cells})
    taus = sorted({t for _, t in cells}, reverse=True)
    return widths, taus, cells


def unit_weights(path, max_chains: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pooled (w_j, v_j) over units, chains and draws, and beta-hat = posterior mean of sum_j w_j v_j."""
    draws = read_variables(path, ["kernel_0", "kernel_1"], max_chains=max_chains)
    w = draws["kernel_0"][:, :, 0, :].astype(np.float64)   # (chain, draw, M)
    v = draws["kernel_1"][:, :, :, 0].astype(np.float64)
    beta_hat = float(np.mean(np.sum(w * v, axis=-1)))
    return w.ravel(), v.ravel(), beta_hat


def hyperbola(ax, beta: float, half: float) -> None:
    """Both branches of w v = beta inside the square [-half, half]^2."""
    if beta == 0:
        return
    lo = abs(beta) / half
    for sign in (1, -1):
        w = sign * np.geomspace(lo, half, 200)
        ax.plot(w, beta / w, color=style.THEORY_COLOR, lw=1.0, label="$wv=\\hat\\beta$" if sign == 1 else None)


def plot(data: FigureData):
    max_chains = int(data.spec.get("max_chains", DEFAULT_MAX_CHAINS))
    bins = int(data.spec.get("bins", DEFAULT_BINS))
    widths, taus, cells = grid_cells(data)
    fig, axes = style.figure(len(widths), len(taus), width=min(style.FULL_WIDTH, 2.3 * len(taus) + 0.8),
                             row_height=2.2)
    for r, c, width, tau, ax, name in style.run_panels(axes, widths, taus, cells,
                                                       lambda width, tau: f"no run with M={width}, τ={tau:g}"):
        w, v, beta_hat = unit_weights(data.posterior(name), max_chains)
        both = np.concatenate([np.abs(w), np.abs(v)])
        half = max(float(np.quantile(both, 0.995)), 2.6 * tau, np.sqrt(abs(beta_hat)) * 1.5) * 1.05
        edges = np.linspace(-half, half, bins + 1)
        style.hist2d(ax, w, v, edges, edges)
        style.prior_circles(ax, tau)
        hyperbola(ax, beta_hat, half)
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_aspect("equal")
        ax.set_title(f"M={width}, τ={tau:g}  ($\\hat\\beta$={beta_hat:.2f})", fontsize="small")
        if r == len(widths) - 1:
            ax.set_xlabel("input weight $w_j$")
        if c == 0:
            ax.set_ylabel("output weight $v_j$")
    handles, labels = next((ax.get_legend_handles_labels() for ax in axes.flat if ax.get_legend_handles_labels()[0]),
                           ([], []))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
