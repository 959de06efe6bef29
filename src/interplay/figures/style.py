"""The one plotting style of every figure: seaborn theme, colours, sizes and how figures are saved.

Every figure module calls `apply()` before drawing and `save()` to write its PDF and PNG, so a change
here restyles all figures (and, being a figure-code input of the figure rules, reruns only them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figure jobs run headless

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib import colors, ticker

# Page geometry (inches): a two-column paper's full text width and the height of one panel row.
FULL_WIDTH = 7.0
ROW_HEIGHT = 2.2
PNG_DPI = 200

PALETTE = "colorblind"
DENSITY_CMAP = "mako_r"          # 2-D histograms of draws (light = few, dark = many)
DIVERGING_CMAP = "vlag"          # correlations in [-1, 1]
SEQUENTIAL_PALETTE = "flare"     # ordered hues (prior scales, depths, widths)
PRIOR_COLOR = "#c0392b"          # the prior (densities, contours): one colour everywhere
THEORY_COLOR = "0.15"            # exact / theoretical values (identity lines, rhs, alpha = 1/2)
CHAIN_ALPHA = 0.45


def apply() -> None:
    """Set the seaborn theme and the matplotlib settings every figure shares."""
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, font_scale=0.95)
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": PNG_DPI,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,            # embedded TrueType: text stays selectable and editable
        "axes.titlesize": "medium",
        "axes.titleweight": "regular",
        "legend.frameon": False,
        "image.cmap": DENSITY_CMAP,
        "lines.linewidth": 1.3,
        "errorbar.capsize": 2.0,
    })


def figure(n_rows: int, n_cols: int, *, width: float = FULL_WIDTH, row_height: float = ROW_HEIGHT,
           **kwargs):
    """A figure with a grid of axes (always a 2-D array) in constrained layout."""
    apply()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, row_height * n_rows), squeeze=False,
                             layout="constrained", **kwargs)
    return fig, axes


def ordered_colors(n: int) -> list:
    """n colours of the sequential palette, for ordered levels (tau, depth, width)."""
    return sns.color_palette(SEQUENTIAL_PALETTE, n_colors=max(n, 1))


def categorical_colors(n: int) -> list:
    return sns.color_palette(PALETTE, n_colors=max(n, 1))


def density_norm(counts: np.ndarray) -> colors.Normalize:
    """Log colour scale for histogram counts: densities of many draws span orders of magnitude."""
    positive = counts[counts > 0]
    if positive.size == 0:
        return colors.Normalize(0, 1)
    return colors.LogNorm(vmin=max(positive.min(), 1), vmax=max(positive.max(), 2))


def hist2d(ax, x: np.ndarray, y: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray):
    """A 2-D histogram of draws on a log colour scale (empty bins left white); returns the mesh."""
    counts, _, _ = np.histogram2d(x, y, bins=[x_edges, y_edges])
    masked = np.ma.masked_equal(counts.T, 0)
    return ax.pcolormesh(x_edges, y_edges, masked, norm=density_norm(counts), cmap=DENSITY_CMAP,
                         rasterized=True, shading="flat")


def prior_circles(ax, tau: float, masses: Sequence[float] = (0.5, 0.95), **kwargs) -> None:
    """Contours of an isotropic 2-D prior N(0, tau^2 I) enclosing the given probability masses:
    radius tau * sqrt(-2 log(1 - p))."""
    theta = np.linspace(0, 2 * np.pi, 256)
    style = {"color": PRIOR_COLOR, "lw": 0.9, "ls": "--"} | kwargs
    for i, mass in enumerate(masses):
        radius = tau * np.sqrt(-2 * np.log1p(-mass))
        ax.plot(radius * np.cos(theta), radius * np.sin(theta),
                label="prior (50%, 95%)" if i == 0 else None, **style)


def log_axis(ax, which: str = "x", ticks: Sequence[float] | None = None) -> None:
    """Log scale with plain tick labels (0.1, 1, 10 rather than 10^-1); `ticks` puts the labels exactly
    at given values (e.g. the prior scales of a sweep) and drops the minor ticks."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    if ticks is not None:
        axis.set_major_locator(ticker.FixedLocator(sorted(set(ticks))))
        axis.set_minor_locator(ticker.NullLocator())
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(ticker.NullFormatter())


def count_ticks(largest: float) -> list[float]:
    """Tick values for a log axis of counts 1..largest: 1, 2, 5, 10, ... up to two decades, else powers
    of ten."""
    decades = int(np.floor(np.log10(max(largest, 1)))) + 1
    steps = (1, 2, 5) if decades <= 2 else (1,)
    return [m * 10**d for d in range(decades) for m in steps if m * 10**d <= largest]


def save(fig, pdf_path, png_path) -> None:
    """Write the figure as vector PDF and PNG (creating the directory) and close it."""
    for path in (pdf_path, png_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf_path)
    fig.savefig(png_path, dpi=PNG_DPI)
    plt.close(fig)


def empty_panel(ax, message: str) -> None:
    """An axis that says why it has nothing to show (instead of a silently blank panel)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize="small",
            color="0.4", wrap=True)


def run_panels(axes, rows: Sequence, cols: Sequence, cells: Mapping, missing: Callable[[object, object], str]
               ) -> Iterator[tuple[int, int, object, object, object, str]]:
    """``(r, c, row, col, ax, run name)`` of each panel of a grid of runs, row by row: `cells` maps
    ``(row, col)`` to the run drawn in ``axes[r, c]``; a cell without a run gets an empty panel saying
    ``missing(row, col)`` and is not yielded."""
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            name = cells.get((row, col))
            if name is None:
                empty_panel(axes[r, c], missing(row, col))
                continue
            yield r, c, row, col, axes[r, c], name
