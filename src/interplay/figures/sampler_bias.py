"""Sampler bias: the balancedness identity's relative error against cost, the samplers' bias-cost frontier.

The identity tau_l^-2 E||W_l||^2 + tau_b^-2 E||b_l||^2 - tau_{l+1}^-2 E||K_{l+1}||^2 = d_l - d_{l+1} is
exact for the posterior of any data, so its relative error measures how far a sampler's stationary
law is from the posterior (plus Monte Carlo error, shown as the interval of the balancedness table,
Student-t with a Bonferroni correction per family). Panels: relative error per layer pair against
gradient evaluations per chain (warm start included) and against wall seconds per chain block; LPPD
(± its Monte Carlo error) against gradient evaluations. The shaded band is the verdict's margin.
"""

from __future__ import annotations

import numpy as np

from interplay.figures import style
from interplay.figures.data import FigureData, run_label

MARKERS = "osD^vP*X"


def _stat(table, variable: str, statistic: str = "mean") -> float:
    rows = table[(table["section"] == "sample_stats") & (table["variable"] == variable)
                 & (table["statistic"] == statistic)]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def cost(diagnostics) -> tuple[float, float]:
    """(gradient evaluations per chain, wall seconds of a block) from a diagnostics table."""
    grads = _stat(diagnostics, "n_grad_evals") + np.nan_to_num(_stat(diagnostics, "warmstart_grad_evals"))
    seconds = sum(np.nan_to_num(_stat(diagnostics, name)) for name in
                  ("warmstart_seconds", "warmup_seconds", "sampling_seconds", "predictive_seconds"))
    return grads, seconds


def summary(data: FigureData):
    """One row per (run, layer pair): relative error with interval, verdict, LPPD and cost."""
    import pandas as pd

    rows = []
    for name in data.members:
        balance = data.table(name, "balancedness")
        pairs = balance[balance["kind"] == "layer_pair"].sort_values("layer")
        verdict = balance[(balance["kind"] == "verdict") & (balance["family"] == "layer_pair")]
        predictive = data.table(name, "predictive")
        lppd = predictive[predictive["metric"] == "lppd"].iloc[0]
        grads, seconds = cost(data.table(name, "diagnostics"))
        margin = float(verdict["margin"].iloc[0]) if len(verdict) and "margin" in verdict else np.nan
        for _, pair in pairs.iterrows():
            rows.append({"run": name, "label": f"{name} ({run_label(data.run(name))})", "layer": int(pair["layer"]),
                         "rel_error": pair["rel_error"], "lo": pair["rel_error_lo"], "hi": pair["rel_error_hi"],
                         "verdict": str(verdict["verdict"].iloc[0]) if len(verdict) else "?",
                         "margin": margin, "lppd": float(lppd["value"]),
                         "lppd_se": float(lppd["mc_se"]), "grad_evals": grads, "seconds": seconds})
    return pd.DataFrame(rows)


def plot(data: FigureData):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    style.apply()
    table = summary(data)
    fig, axes = plt.subplots(1, 3, figsize=(style.FULL_WIDTH, 3.4), layout="constrained")
    colors = style.categorical_colors(max(3, len(data.members)))
    layers = sorted(table["layer"].unique())
    margin = float(table["margin"].dropna().iloc[0]) if table["margin"].notna().any() else 0.05
    for ax, x in zip(axes[:2], ("grad_evals", "seconds")):
        ax.axhspan(-margin, margin, color="0.9", zorder=0, label=f"margin ±{margin:.0%}")
        ax.axhline(0, color=style.THEORY_COLOR, lw=1, zorder=1)
        for i, name in enumerate(data.members):
            rows = table[table["run"] == name]
            for _, r in rows.iterrows():
                # pairs of one run are spread a little along x so that their intervals do not overlap
                shift = 1.0 + 0.04 * (layers.index(r["layer"]) - (len(layers) - 1) / 2)
                ax.errorbar(r[x] * shift, r["rel_error"], yerr=[[r["rel_error"] - r["lo"]], [r["hi"] - r["rel_error"]]],
                            fmt=MARKERS[layers.index(r["layer"]) % len(MARKERS)], ms=4, color=colors[i], zorder=3,
                            label=f"{r['label']}: {r['verdict']}" if r["layer"] == layers[0] else None)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels of a narrow range overlap
        ax.set_ylabel("relative error of the identity")
    axes[0].set_xlabel("gradient evaluations per chain")
    axes[1].set_xlabel("wall seconds per block")
    for i, name in enumerate(data.members):
        r = table[table["run"] == name].iloc[0]
        axes[2].errorbar(r["grad_evals"], r["lppd"], yerr=2 * np.nan_to_num(r["lppd_se"]), fmt="o", ms=4,
                         color=colors[i])
    axes[2].set_xscale("log")
    axes[2].set_xlabel("gradient evaluations per chain")
    axes[2].set_ylabel("test LPPD (± 2 MC SE)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="x-small")
    axes[1].text(0.02, 0.98, "markers: layer pairs " + ", ".join(f"{MARKERS[k]} {l + 1}–{l + 2}" for k, l in
                                                                  enumerate(layers)),
                 transform=axes[1].transAxes, fontsize="xx-small", va="top")
    return fig


def render(data: FigureData, outputs) -> None:
    style.save(plot(data), outputs["pdf"], outputs["png"])
