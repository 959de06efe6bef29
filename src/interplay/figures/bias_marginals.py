"""Bias marginals: the pooled density of every layer's biases against the prior N(0, tau^2), one row per
run, one column per layer (from the bias_marginals tables), with the fraction of negative biases and the
layer's verdict (conforms / deviates) of the calibrated moment tests."""

from __future__ import annotations

import numpy as np
from scipy import stats

from interplay.figures import style
from interplay.figures.data import FigureData, run_label


def plot(data: FigureData):
    tables = {name: data.table(name, "bias_marginals") for name in data.members}
    n_cols = max(int((t["kind"] == "verdict").sum()) - 1 for t in tables.values())
    fig, axes = style.figure(len(data.members), n_cols, width=min(style.FULL_WIDTH, max(3.4, 1.9 * n_cols + 0.6)),
                             row_height=1.7)
    for i, name in enumerate(data.members):
        table = tables[name]
        layers = sorted(table.loc[table["kind"] == "density", "layer"].unique())
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(layers):
                ax.set_axis_off()
                continue
            layer = layers[j]
            dens = table[(table["kind"] == "density") & (table["layer"] == layer)]
            tests = table[(table["kind"] == "test") & (table["layer"] == layer)].set_index("statistic")
            verdict = table[(table["kind"] == "verdict") & (table["layer"] == layer)]["verdict"].iloc[0]
            tau = float(dens["tau"].iloc[0])
            mid = 0.5 * (dens["bin_lo"] + dens["bin_hi"]).to_numpy()
            ax.fill_between(mid, dens["density"].to_numpy(), step="mid", alpha=0.35,
                            color=style.categorical_colors(1)[0], lw=0, label="posterior (pooled units)")
            grid = np.linspace(mid.min(), mid.max(), 256)
            ax.plot(grid, stats.norm(0, tau).pdf(grid), color=style.PRIOR_COLOR, ls="--", lw=1,
                    label=f"prior N(0, {tau:g}²)")
            neg = tests.loc["frac_negative"]
            ax.annotate(f"P(b<0) = {neg['estimate']:.2f} ± {neg['se']:.2f}\n{verdict}", xy=(0.97, 0.95),
                        xycoords="axes fraction", ha="right", va="top", fontsize="x-small", color="0.3")
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"layer {int(layer) + 1} biases", fontsize="small")
            if j == 0:
                ax.set_ylabel(run_label(data.run(name)), fontsize="x-small")
            if i == len(data.members) - 1:
                ax.set_xlabel("bias")
            if i == 0 and j == 0:
                ax.legend(fontsize="xx-small", loc="upper left")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
