"""Flat-likelihood directions: per run (columns), the distribution of the mixing sensitivity S of the
redundant clusters of the first hidden layer (top; S = 0 is an exactly flat direction of the likelihood)
and the median S per analysed draw (bottom), with the mean number of flat directions per draw."""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import FigureData, run_label


def plot(data: FigureData):
    n = len(data.members)
    fig, axes = style.figure(2, n, width=min(style.FULL_WIDTH, max(3.4, 2.4 * n + 0.4)), row_height=1.9)
    color = style.categorical_colors(1)[0]
    for j, name in enumerate(data.members):
        table = data.table(name, "flat_likelihood")
        summary = table[table["kind"] == "summary"].iloc[0]
        s = table.loc[table["kind"] == "cluster", "s"].to_numpy(dtype=float) if "s" in table else np.empty(0)
        s = s[np.isfinite(s)]
        top, bottom = axes[0, j], axes[1, j]
        top.set_title(run_label(data.run(name)), fontsize="small")
        if s.size == 0:
            style.empty_panel(top, "no redundant clusters")
            style.empty_panel(bottom, "")
            continue
        top.hist(s, bins=min(50, max(10, int(np.sqrt(s.size)))), density=True, color=color, alpha=0.5)
        top.axvline(np.median(s), color=style.THEORY_COLOR, lw=1.2)
        top.set_xlabel("mixing sensitivity S")
        top.annotate(f"{summary['n_redundant_mean']:.2f} ± {summary['n_redundant_se']:.2f} flat dirs / draw\n"
                     f"threshold {summary['threshold']:.3f}", xy=(0.97, 0.95), xycoords="axes fraction",
                     ha="right", va="top", fontsize="x-small", color="0.3")
        draws = table[table["kind"] == "draw"]
        med = draws["s_median"].to_numpy(dtype=float)
        bottom.plot(np.arange(len(med)), med, color=color, lw=0.5, alpha=0.8)
        bottom.axhline(np.nanmedian(med), color=style.THEORY_COLOR, lw=1.2)
        bottom.set_xlabel("analysed draw")
        if j == 0:
            top.set_ylabel("density")
            bottom.set_ylabel("median S")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
