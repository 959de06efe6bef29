"""Prior conformity: marginals of chosen weights against the prior, and conformity against width/depth.

Rows 1-2 (under- and overparametrized net): per-chain densities (thin lines, the first
`chains_shown` chains) and the pooled marginal (histogram) of the first weight of the first and of
the last layer, against the prior N(0, tau^2). Row 3: the pooled conformity metrics of every kernel
(KS distance and variance ratio var / tau^2 with jackknife errors, from the conformity tables) per
layer, one line per net of the width/depth set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker
from scipy import stats

from interplay.analysis.conformity import conformity_sweep_table
from interplay.analysis.posterior_files import network_layout
from interplay.figures import style
from interplay.figures.data import DEFAULT_MAX_CHAINS, FigureData, architecture, read_parameters, run_label

DEFAULT_CHAINS_SHOWN = 12
GRID_POINTS = 256


def chosen_weights(path, run) -> list[tuple[str, tuple, float, str]]:
    """(variable, index, tau, label): the first weight of the first and of the last layer."""
    layers = network_layout(path, run)
    first, last = layers[0], layers[-1]
    chosen = [(first.kernel, (0, 0), first.kernel_scale, "first layer $W^{(1)}_{1,1}$")]
    if last.index != first.index:
        chosen.append((last.kernel, (0, 0), last.kernel_scale, f"last layer $W^{{({last.index + 1})}}_{{1,1}}$"))
    return chosen


def chain_density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of one chain's draws on `grid` (a point mass where the chain did not move)."""
    if np.ptp(values) <= 0 or len(values) < 3:
        return np.full_like(grid, np.nan)
    return stats.gaussian_kde(values)(grid)


def marginal_panel(ax, draws: np.ndarray, tau: float, chains_shown: int) -> None:
    """draws (chain, draw): per-chain KDEs, the pooled histogram and the prior density."""
    pooled = draws.ravel()
    lo, hi = np.quantile(pooled, [0.001, 0.999])
    half = max(abs(lo), abs(hi), 3 * tau) * 1.05
    grid = np.linspace(-half, half, GRID_POINTS)
    colors = style.categorical_colors(min(chains_shown, len(draws)))
    # Each chain's density times 1/C: the pooled density is the sum of these components.
    for i, chain in enumerate(draws[:chains_shown]):
        ax.plot(grid, chain_density(chain, grid) / len(draws), color=colors[i], lw=0.8, alpha=0.8,
                label="single chains (× 1/C)" if i == 0 else None)
    n_bins = int(np.clip(np.sqrt(pooled.size), 30, 100))
    ax.hist(pooled, bins=np.linspace(-half, half, n_bins + 1), density=True, histtype="step", color="0.1", lw=1.2,
            label=f"pooled ({len(draws)} chains)")
    ax.plot(grid, stats.norm(0, tau).pdf(grid), color=style.PRIOR_COLOR, ls="--", lw=1.2,
            label=f"prior N(0, {tau:g}²)")
    ax.set_xlim(-half, half)
    ax.set_ylabel("density")


def width_depth_table(data: FigureData) -> pd.DataFrame:
    """Pooled kernel rows of the conformity tables of the width/depth set, with run descriptors."""
    entries = [(data.run(name), data.tables[(name, "conformity")]) for name in data.members]
    table = conformity_sweep_table(entries, scope="pooled")
    if table.empty:
        return table
    return table[table["kind"] == "kernel"]


def metrics_panels(ax_ks, ax_var, data: FigureData) -> None:
    table = width_depth_table(data)
    if table.empty:
        style.empty_panel(ax_ks, "no conformity tables")
        style.empty_panel(ax_var, "")
        return
    colors = style.categorical_colors(len(data.members))
    for color, name in zip(colors, data.members):
        rows = table[table["run"] == name].sort_values("layer")
        if rows.empty:
            continue
        label = f"{architecture(data.run(name))} ({data.run(name)['dataset']})"
        layer = rows["layer"].to_numpy() + 1
        ax_ks.errorbar(layer, rows["ks"], yerr=2 * rows["ks_se"].fillna(0), marker="o", ms=3.5, color=color,
                       label=label)
        ax_var.errorbar(layer, rows["var_ratio"], yerr=2 * rows["var_ratio_se"].fillna(0), marker="o", ms=3.5,
                        color=color, label=label)
    ax_ks.set_ylabel("KS distance to prior")
    ax_ks.set_ylim(bottom=0)
    ax_var.axhline(1.0, color=style.PRIOR_COLOR, ls="--", lw=1.0, label="prior (ratio 1)")
    ax_var.set_ylabel("variance ratio var(θ) / τ²")
    ratios = table["var_ratio"].to_numpy()
    if np.nanmax(ratios) / max(np.nanmin(ratios), 1e-12) > 10:  # log only where ratios span decades
        style.log_axis(ax_var, "y")
    for ax in (ax_ks, ax_var):
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_ks.set_title("conformity against width and depth (±2 SE)", fontsize="small")
    ax_var.legend(fontsize="x-small", loc="best")


def plot(data: FigureData):
    max_chains = int(data.spec.get("max_chains", DEFAULT_MAX_CHAINS))
    chains_shown = int(data.spec.get("chains_shown", DEFAULT_CHAINS_SHOWN))
    fig, axes = style.figure(3, 2, row_height=2.3)
    for row, (label, role) in enumerate((("underparametrized", "under"), ("overparametrized", "over"))):
        name = data.roles[role]
        path, run = data.posterior(name), data.run(name)
        chosen = chosen_weights(path, run)
        selections: dict[str, list] = {}
        for variable, index, _, _ in chosen:
            selections.setdefault(variable, []).append(index)
        draws = read_parameters(path, selections, max_chains=max_chains)
        for col in range(2):
            ax = axes[row, col]
            if col >= len(chosen):
                style.empty_panel(ax, f"{name} has a single layer")
                continue
            variable, index, tau, weight = chosen[col]
            marginal_panel(ax, draws[(variable, index)], tau, chains_shown)
            ax.set_title(f"{label}: {weight}", fontsize="small")
            ax.set_xlabel("weight value")
        axes[row, 0].annotate(run_label(run), xy=(0.02, 0.92), xycoords="axes fraction", fontsize="x-small",
                              color="0.3")
        if row == 0:
            axes[row, 1 if len(chosen) > 1 else 0].legend(fontsize="x-small", loc="upper right")
    metrics_panels(axes[2, 0], axes[2, 1], data)
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
