"""The prior-scale x depth grid: test LPPD against tau, one line per depth, one panel per dataset
(error bars: +- 2 Monte Carlo SE over chains, from the predictive tables)."""

from __future__ import annotations

import pandas as pd

from interplay.figures import style
from interplay.figures.data import FigureData


def grid_table(data: FigureData) -> pd.DataFrame:
    """One row per run: dataset, tau, depth, width, LPPD and its Monte Carlo / test-set SE."""
    rows = []
    for name in data.members:
        run = data.run(name)
        table = data.table(name, "predictive")
        lppd = table[table["metric"] == "lppd"]
        if lppd.empty:
            raise ValueError(f"the predictive table of run {name!r} has no lppd row")
        hidden = run["model"]["hidden"]
        rows.append({"run": name, "dataset": run["dataset"], "tau": float(run["prior"]["scale"]),
                     "depth": len(hidden), "width": max(hidden) if hidden else 0,
                     "lppd": float(lppd["value"].iloc[0]), "mc_se": float(lppd["mc_se"].iloc[0]),
                     "test_se": float(lppd["test_se"].iloc[0])})
    return pd.DataFrame(rows)


def plot(data: FigureData):
    table = grid_table(data)
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = style.figure(1, len(datasets), width=min(style.FULL_WIDTH, 2.6 * len(datasets) + 0.6),
                             row_height=2.6)
    depths = sorted(table["depth"].unique())
    colors = dict(zip(depths, style.ordered_colors(len(depths))))
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"] == dataset]
        for depth in depths:
            line = rows[rows["depth"] == depth].sort_values("tau")
            if line.empty:
                continue
            widths = sorted(line["width"].unique())
            label = f"depth {depth}" + (f" (width {widths[0]})" if len(widths) == 1 else "")
            ax.errorbar(line["tau"], line["lppd"], yerr=2 * line["mc_se"].fillna(0), marker="o", ms=3.5,
                        color=colors[depth], label=label)
        style.log_axis(ax, "x", ticks=rows["tau"].tolist())
        ax.set_xlabel("prior scale τ")
        ax.set_title(dataset, fontsize="small")
    axes[0, 0].set_ylabel("test LPPD (± 2 MC SE)")
    axes[0, -1].legend(fontsize="x-small", loc="best")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
