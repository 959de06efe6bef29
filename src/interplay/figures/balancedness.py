"""Balancedness: estimated left-hand side against the exact right-hand side of the layer-norm identity.

One row per run. Left: per layer pair (l, l+1), the estimate of
tau_l^-2 E||W_l||^2 + tau_b^-2 E||b_l||^2 - tau_{l+1}^-2 E||K_{l+1}||^2 (+- 2 SE) and the exact
d_l - d_{l+1}. Right: the same per hidden unit, units of one layer side by side, against each layer's
exact fan_in + 1 - fan_out. Titles carry each family's verdict with its worst relative error (Student-t,
Bonferroni per family, judged against the margin; see interplay.analysis.balancedness).
"""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import FigureData, run_label


def verdicts(table) -> dict[str, str]:
    rows = table[table["kind"] == "verdict"]
    return dict(zip(rows["family"], rows["verdict"]))


def worst_errors(table) -> dict[str, float]:
    rows = table[table["kind"] == "verdict"]
    if "worst_rel_error" not in rows:
        return {}
    return dict(zip(rows["family"], rows["worst_rel_error"].astype(float)))


def pair_panel(ax, table, colors) -> None:
    pairs = table[table["kind"] == "layer_pair"].sort_values("layer")
    x = np.arange(len(pairs))
    ax.errorbar(x, pairs["estimate"], yerr=2 * pairs["se"].fillna(0), fmt="o", ms=4, color=colors[0],
                label="estimate ± 2 SE", zorder=3)
    ax.scatter(x, pairs["rhs"], marker="_", s=400, lw=2, color=style.THEORY_COLOR, label="exact $d_l - d_{l+1}$",
               zorder=2)
    ax.set_xticks(x, [f"{int(layer) + 1}–{int(layer) + 2}" for layer in pairs["layer"]])
    ax.set_xlim(-0.6, len(pairs) - 0.4)
    ax.set_xlabel("layer pair")
    ax.set_ylabel("E[left] − E[right]")


def neuron_panel(ax, table, colors) -> None:
    neurons = table[table["kind"] == "neuron"].sort_values(["layer", "neuron"])
    gap = 2
    start = 0
    ticks, labels = [], []
    for i, (layer, rows) in enumerate(neurons.groupby("layer", sort=True)):
        x = start + np.arange(len(rows))
        color = colors[i % len(colors)]
        ax.errorbar(x, rows["estimate"], yerr=2 * rows["se"].fillna(0), fmt="o", ms=2.5, lw=0.8, color=color,
                    zorder=3)
        rhs = float(rows["rhs"].iloc[0])
        ax.hlines(rhs, x[0] - 0.5, x[-1] + 0.5, color=style.THEORY_COLOR, lw=1.5, zorder=2,
                  label="exact $n_{in}+1-n_{out}$" if i == 0 else None)
        ticks.append(x.mean())
        labels.append(f"layer {int(layer) + 1}")
        start += len(rows) + gap
    ax.set_xticks(ticks, labels)
    ax.set_xlabel("hidden units")
    ax.set_ylabel("per-unit estimate ± 2 SE")


def _verdict_line(found: dict[str, str], worst: dict[str, float] | None = None) -> str:
    """'layer pairs: holds (worst rel. error +0.3%); units: holds within margin (worst +1.2%)'; a note in
    parentheses after a verdict (older tables) is said once, not per family."""
    worst = worst or {}
    note = ""
    parts = []
    for family, label in (("layer_pair", "layer pairs"), ("neuron", "units")):
        verdict = str(found.get(family, "?"))
        if " (" in verdict:
            verdict, note = verdict.split(" (", 1)
            note = " (" + note
        error = worst.get(family, float("nan"))
        parts.append(f"{label}: {verdict}" + (f" (worst rel. error {error:+.1%})" if np.isfinite(error) else ""))
    return "; ".join(parts) + note


def plot(data: FigureData):
    import matplotlib.pyplot as plt

    style.apply()
    n = len(data.members)
    fig = plt.figure(figsize=(style.FULL_WIDTH, 2.5 * n), layout="constrained")
    rows = fig.subfigures(n, 1, squeeze=False)[:, 0]
    colors = style.categorical_colors(8)
    for r, (sub, name) in enumerate(zip(rows, data.members)):
        table = data.table(name, "balancedness")
        ax_pairs, ax_units = sub.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.2]})
        pair_panel(ax_pairs, table, colors)
        neuron_panel(ax_units, table, colors)
        n_chains = int(table["n_chains"].dropna().iloc[0]) if table["n_chains"].notna().any() else 0
        line = _verdict_line(verdicts(table), worst_errors(table))
        sub.suptitle(f"{run_label(data.run(name))}, {n_chains} chains — {line}",
                     fontsize="small", x=0.01, ha="left")
        if r == 0:
            ax_pairs.legend(fontsize="x-small", loc="best")
            ax_units.legend(fontsize="x-small", loc="best")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
