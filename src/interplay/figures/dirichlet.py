"""Reallocation shares against their Dirichlet(1/2) law, and the fitted alpha against tau and M.

For the 1-M-1 identity nets of the run set (M >= 2): the shares |w_j v_j| / sum_k |w_k v_k|
(`share: rho_abs`, default) or the norm shares (`share: norm`) pooled over units (exchangeable), whose
marginal under Dirichlet(1/2, ..., 1/2) is Beta(1/2, (M-1)/2).
Row 1: share histograms per M, one colour per tau, with that Beta density. Row 2: QQ plots of the
share quantiles against the Beta quantiles. Row 3: the symmetric Dirichlet alpha (95% CI, from the
reallocation tables) against tau, one line per M, and the theory's 1/2.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from interplay.analysis.dirichlet import (
    ALPHA_THEORY,
    abs_shares,
    identity_net_shares,
    reallocation_sweep_table,
)
from interplay.figures import style
from interplay.figures.data import DEFAULT_MAX_CHAINS, FigureData, read_variables

DEFAULT_MAX_POINTS = 200_000
QQ_PROBABILITIES = np.linspace(0.005, 0.995, 199)


def pooled_shares(path, share: str, *, max_chains: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Shares of every unit pooled over units, chains and draws; a seeded sub-sample of <= max_points."""
    draws = read_variables(path, ["kernel_0", "kernel_1"], max_chains=max_chains)
    rho, norm = identity_net_shares(draws["kernel_0"].astype(np.float64), draws["kernel_1"].astype(np.float64))
    values = (abs_shares(rho) if share == "rho_abs" else norm).ravel()
    values = values[np.isfinite(values)]
    if len(values) > max_points:
        values = np.random.default_rng(seed).choice(values, max_points, replace=False)
    return values


def share_cells(data: FigureData) -> tuple[list[int], list[float], dict[tuple[int, float], str]]:
    cells = {}
    for name in data.members:
        run = data.run(name)
        width = int(run["model"]["hidden"][0])
        if width >= 2:
            cells[(width, float(run["prior"]["scale"]))] = name
    return sorted({m for m, _ in cells}), sorted({t for _, t in cells}), cells


def plot(data: FigureData):
    share = str(data.spec.get("share", "rho_abs"))
    max_chains = int(data.spec.get("max_chains", DEFAULT_MAX_CHAINS))
    max_points = int(data.spec.get("max_points", DEFAULT_MAX_POINTS))
    widths, taus, cells = share_cells(data)
    n_cols = max(len(widths), 1)
    fig, axes = style.figure(3, n_cols, width=min(style.FULL_WIDTH, max(4.0, 2.5 * n_cols + 1.0)), row_height=2.2)
    colors = dict(zip(taus, style.ordered_colors(len(taus))))
    share_name = "|w_j v_j| / Σ|w_k v_k|" if share == "rho_abs" else "norm share"
    for c, width in enumerate(widths):
        law = stats.beta(ALPHA_THEORY, (width - 1) * ALPHA_THEORY)
        ax_hist, ax_qq = axes[0, c], axes[1, c]
        edges = np.linspace(0, 1, 41)
        for tau in taus:
            name = cells.get((width, tau))
            if name is None:
                continue
            values = pooled_shares(data.posterior(name), share, max_chains=max_chains, max_points=max_points)
            ax_hist.hist(values, bins=edges, density=True, histtype="step", lw=1.1, color=colors[tau],
                         label=f"τ={tau:g}")
            ax_qq.plot(law.ppf(QQ_PROBABILITIES), np.quantile(values, QQ_PROBABILITIES), color=colors[tau], lw=1.1)
        grid = np.linspace(0.005, 0.995, 200)
        ax_hist.plot(grid, law.pdf(grid), color=style.THEORY_COLOR, ls="--", lw=1.0,
                     label=f"Beta(½, {(width - 1) / 2:g})")
        style.log_axis(ax_hist, "y")
        ax_hist.set_title(f"M = {width}", fontsize="small")
        ax_hist.set_xlabel(f"share {share_name}")
        ax_qq.plot([0, 1], [0, 1], color=style.THEORY_COLOR, ls="--", lw=1.0)
        ax_qq.set_xlim(0, 1)
        ax_qq.set_ylim(0, 1)
        ax_qq.set_aspect("equal")
        ax_qq.set_xlabel(f"Beta(½, {(width - 1) / 2:g}) quantile")
        if c == 0:
            ax_hist.set_ylabel("density")
            ax_qq.set_ylabel("share quantile")
        ax_hist.legend(fontsize="xx-small", loc="upper right")
    if not widths:
        style.empty_panel(axes[0, 0], "no run with M ≥ 2")
        style.empty_panel(axes[1, 0], "")
    alpha_panel(fig, axes[2], data, share)
    return fig


def alpha_table(data: FigureData, share: str):
    entries = [(data.run(run), path) for (run, analysis), path in data.tables.items() if analysis == "reallocation"]
    table = reallocation_sweep_table(entries)
    if table.empty:
        return table
    return table[table["share"] == share]


def alpha_panel(fig, row_axes, data: FigureData, share: str) -> None:
    """Fitted symmetric alpha against tau, one line per M, spread over the whole bottom row."""
    grid = row_axes[0].get_gridspec()
    for ax in row_axes:
        ax.remove()
    ax = fig.add_subplot(grid[2, :])
    table = alpha_table(data, share)
    if table.empty:
        style.empty_panel(ax, "no reallocation tables (no run with M ≥ 2)")
        return
    widths = sorted(table["width"].unique())
    colors = style.categorical_colors(len(widths))
    for color, width in zip(colors, widths):
        rows = table[table["width"] == width].sort_values("tau")
        low = (rows["alpha"] - rows["ci_low"]).clip(lower=0)
        high = (rows["ci_high"] - rows["alpha"]).clip(lower=0)
        ax.errorbar(rows["tau"], rows["alpha"], yerr=[low.fillna(0), high.fillna(0)], marker="o", ms=4,
                    color=color, label=f"M = {width}")
    ax.axhline(ALPHA_THEORY, color=style.THEORY_COLOR, ls="--", lw=1.0, label="theory α = ½")
    style.log_axis(ax, "x", ticks=table["tau"].astype(float).tolist())
    ax.set_xlabel("prior scale τ")
    ax.set_ylabel("fitted symmetric α (95% CI)")
    ax.legend(fontsize="x-small", loc="best", ncols=min(len(widths) + 1, 4))


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
