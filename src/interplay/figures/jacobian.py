"""Jacobian null space: per run (rows), the singular values of the Jacobian of the network function on the
training inputs at a chain's posterior mean (with the rank threshold), the null-space dimension at the
analysed draws against the count derived from the symmetries, and the chain's centred draws in an input
against an output weight, on the first two image directions and on the first two null directions."""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import FigureData, run_label


def plot(data: FigureData):
    n = len(data.members)
    fig, axes = style.figure(n, 4, width=style.FULL_WIDTH, row_height=1.9)
    color = style.categorical_colors(2)
    for i, name in enumerate(data.members):
        table = data.table(name, "jacobian")
        summary = table[table["kind"] == "summary"].iloc[0]
        sv = table.loc[table["kind"] == "singular_value", "value"].to_numpy(dtype=float)
        ax = axes[i, 0]
        ax.semilogy(np.arange(1, sv.size + 1), np.maximum(sv, 1e-18), "o", ms=2.5, color=color[0])
        ax.axhline(summary["rtol"] * sv.max(), color=style.THEORY_COLOR, ls=":", lw=1)
        ax.set_xlabel("index")
        ax.set_ylabel(run_label(data.run(name)) + "\nsingular value", fontsize="x-small")
        ax.annotate(f"rank {int(summary['rank'])} of {int(summary['n_params'])}\n"
                    f"null share of variance {summary['null_variance_fraction']:.2f}", xy=(0.03, 0.05),
                    xycoords="axes fraction", fontsize="x-small", color="0.3")
        draws = table[table["kind"] == "draw"]
        ax = axes[i, 1]
        values, counts = np.unique(draws["null_dim"], return_counts=True)
        ax.bar(values, counts / counts.sum(), color=color[0], alpha=0.6, label="numerical")
        sym = draws["symmetry_null_dim"].dropna()
        if len(sym):
            sv_, sc = np.unique(sym, return_counts=True)
            ax.plot(sv_, sc / sc.sum(), "x", color=style.THEORY_COLOR, label="symmetry count")
            agree = float((draws["null_dim"] == draws["symmetry_null_dim"]).mean())
            ax.set_title(f"agree at {agree:.0%} of draws", fontsize="x-small")
        ax.set_xlabel("null-space dimension")
        ax.legend(fontsize="xx-small")
        proj = table[table["kind"] == "projection"]
        for ax, (a, b, label) in zip(axes[i, 2:], (("image_1", "image_2", "image"), ("null_1", "null_2", "null"))):
            xs, ys = proj[a].to_numpy(dtype=float), proj[b].to_numpy(dtype=float)
            if np.isnan(ys).all():  # a one-dimensional space: draw it against the raw input weight
                ys, yl = proj["param_in"].to_numpy(dtype=float), "input weight"
            else:
                yl = f"{label} dir. 2"
            if np.isnan(xs).all():
                style.empty_panel(ax, f"no {label} space")
                continue
            ax.scatter(xs, ys, s=3, alpha=0.3, lw=0, color=color[1])
            ax.set_xlabel(f"{label} dir. 1")
            ax.set_ylabel(yl, fontsize="x-small")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
