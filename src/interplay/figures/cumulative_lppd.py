"""Cumulative LPPD over the number of chains: LPPD of the first k chains (mean +- sd over random chain
orders, from the cumulative_lppd tables), log x-axis, one panel per run."""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import FigureData, run_label


def plot(data: FigureData):
    n = len(data.members)
    n_cols = min(n, 3)
    n_rows = -(-n // n_cols)
    fig, axes = style.figure(n_rows, n_cols, width=min(style.FULL_WIDTH, 2.4 * n_cols + 0.4), row_height=2.3)
    color = style.categorical_colors(1)[0]
    for i, name in enumerate(data.members):
        ax = axes[i // n_cols, i % n_cols]
        table = data.table(name, "cumulative_lppd").sort_values("k")
        k = table["k"].to_numpy()
        mean, sd = table["lppd_mean"].to_numpy(), table["lppd_sd"].to_numpy()
        ax.plot(k, mean, color=color, label="mean over chain orders")
        ax.fill_between(k, mean - sd, mean + sd, color=color, alpha=0.25, lw=0, label="± sd")
        style.log_axis(ax, "x", ticks=style.count_ticks(k.max()))
        ax.set_title(run_label(data.run(name)), fontsize="small")
        ax.set_xlabel("number of chains")
        if i % n_cols == 0:
            ax.set_ylabel("test LPPD")
        orders = int(table["n_orderings"].iloc[0]) if "n_orderings" in table else np.nan
        ax.annotate(f"{len(k)} chains, {orders} orders\nLPPD(1) = {mean[0]:.3f}\nLPPD(all) = {mean[-1]:.3f}",
                    xy=(0.97, 0.04), xycoords="axes fraction", ha="right", va="bottom", fontsize="x-small",
                    color="0.3")
        if i == 0:
            ax.legend(fontsize="x-small", loc="upper left")
    for j in range(n, n_rows * n_cols):
        axes[j // n_cols, j % n_cols].set_axis_off()
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
