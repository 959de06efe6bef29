"""The UCI benchmark: MILE against deep ensembles (DE), mean-field VI (MFVI) and last-layer Laplace (LA),
mean +- sd over seeds.

MFVI and LA are the paper's single-fit baselines when a run has one chain; a run with C > 1 chains pools C
independent fits into one mixture and is labelled "MFVI pooled xC" / "LA pooled xC" (`method_label`).
Laplace runs other than the paper's last-layer, full-GGN one name their variant: "LA (all, diag)" (the
whole network's diagonal GGN), "LA (last layer, diag)".

Writes the table as CSV (long: dataset, method, metric, mean, sd, n_seeds) and LaTeX (datasets as
rows, metric x method as columns, the best mean per dataset and metric in bold), and a figure with one
panel per metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from interplay.figures import style
from interplay.figures.data import SAMPLER_LABELS, FigureData

METRICS = {"lppd": ("LPPD", "higher"), "rmse": ("RMSE", "lower"), "accuracy": ("accuracy", "higher")}
METHOD_ORDER = ["MILE", "NUTS", "DE", "MFVI", "LA"]
# Kinds whose runs are single fits per chain: more chains pool them into a mixture.
SINGLE_FIT_KINDS = ("mfvi", "laplace")


# Laplace variants other than the paper's (last layer, full GGN) by (subset, hessian): "LA (<variant>)".
LAPLACE_VARIANTS = {("all", "diagonal"): "all, diag", ("last_layer", "diagonal"): "last layer, diag"}


def method_label(run) -> str:
    """The table's name of a run's method: its sampler label, "<label> pooled x<C>" for a pooled baseline.
    A Laplace run other than the paper's last-layer, full-GGN one says its variant: "LA (all, diag)"."""
    sampler = run["sampler"]
    kind, chains = sampler["kind"], int(sampler["chains"])
    label = SAMPLER_LABELS.get(kind, kind)
    if kind == "laplace":
        cfg = sampler.get("laplace", {})
        variant = (cfg.get("subset", "last_layer"), cfg.get("hessian", "full"))
        if variant in LAPLACE_VARIANTS:
            label = f"{label} ({LAPLACE_VARIANTS[variant]})"
    return f"{label} pooled x{chains}" if kind in SINGLE_FIT_KINDS and chains > 1 else label


def method_order(methods) -> list[str]:
    """`METHOD_ORDER`, each variant ("LA (all, diag)") and pooled run after its single-fit method, unknown
    labels last."""
    found = list(dict.fromkeys(methods))

    def rank(method):
        base = method.split(" pooled")[0].split(" (")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), " (" in method,
                " pooled" in method, method)

    return sorted(found, key=rank)


def per_run(data: FigureData) -> pd.DataFrame:
    """One row per (run, metric): dataset, method, seed, value."""
    rows = []
    for name in data.members:
        run = data.run(name)
        table = data.table(name, "predictive")
        for metric in METRICS:
            found = table[table["metric"] == metric]
            if not found.empty:
                rows.append({"run": name, "dataset": run["dataset"],
                             "method": method_label(run),
                             "seed": run["data"]["seed"], "metric": metric, "value": float(found["value"].iloc[0])})
    if not rows:
        raise ValueError("no predictive metrics found in the benchmark's tables")
    return pd.DataFrame(rows)


def benchmark_table(data: FigureData) -> pd.DataFrame:
    """Mean and sd (ddof 1; NaN with one seed) over seeds per dataset, method and metric."""
    runs = per_run(data)
    grouped = runs.groupby(["dataset", "method", "metric"], sort=False)["value"]
    table = grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan,
                        n_seeds="count").reset_index()
    table["method"] = pd.Categorical(table["method"], method_order(table["method"]))
    return table.sort_values(["dataset", "metric", "method"]).reset_index(drop=True)


def _cell(mean: float, sd: float, bold: bool) -> str:
    text = f"{mean:.3f}" + ("" if np.isnan(sd) else f" \\pm {sd:.3f}")
    return f"$\\mathbf{{{text}}}$" if bold else f"${text}$"


def latex_table(table: pd.DataFrame) -> str:
    """booktabs LaTeX: one row per dataset, columns metric x method, best mean per metric in bold."""
    metrics = [m for m in METRICS if m in set(table["metric"])]
    methods = method_order(table["method"].astype(str))
    lines = ["\\begin{tabular}{l" + "c" * (len(metrics) * len(methods)) + "}", "\\toprule",
             " & " + " & ".join(f"\\multicolumn{{{len(methods)}}}{{c}}{{{METRICS[m][0]}}}" for m in metrics)
             + " \\\\",
             "dataset & " + " & ".join(methods * len(metrics)) + " \\\\", "\\midrule"]
    for dataset, rows in table.groupby("dataset", sort=False):
        cells = []
        for metric in metrics:
            block = rows[rows["metric"] == metric].set_index(rows[rows["metric"] == metric]["method"].astype(str))
            best = block["mean"].max() if METRICS[metric][1] == "higher" else block["mean"].min()
            for method in methods:
                if method in block.index:
                    mean, sd = block.loc[method, "mean"], block.loc[method, "sd"]
                    cells.append(_cell(mean, sd, bool(np.isclose(mean, best))))
                else:
                    cells.append("--")
        lines.append(f"{dataset} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def plot(table: pd.DataFrame):
    metrics = [m for m in METRICS if m in set(table["metric"])]
    fig, axes = style.figure(1, len(metrics), width=min(style.FULL_WIDTH, 3.2 * len(metrics)), row_height=2.6)
    methods = method_order(table["method"].astype(str))
    colors = dict(zip(methods, style.categorical_colors(len(methods))))
    datasets = list(dict.fromkeys(table["dataset"]))
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes[0], metrics):
        rows = table[table["metric"] == metric]
        for i, method in enumerate(methods):
            sub = rows[rows["method"].astype(str) == method].set_index("dataset").reindex(datasets)
            x = np.arange(len(datasets)) + (i - (len(methods) - 1) / 2) * width
            ax.errorbar(x, sub["mean"], yerr=sub["sd"].fillna(0), fmt="o", ms=4, color=colors[method],
                        label=method)
        ax.set_xticks(np.arange(len(datasets)), datasets)
        ax.set_xlim(-0.6, len(datasets) - 0.4)
        name, better = METRICS[metric]
        ax.set_ylabel(f"test {name} ({better} is better)")
        n_seeds = int(rows["n_seeds"].max()) if len(rows) else 0
        ax.set_title(f"{name}: mean ± sd over {n_seeds} seed{'s' * (n_seeds != 1)}", fontsize="small")
    axes[0, 0].legend(fontsize="x-small", loc="best")
    return fig


def render(data: FigureData, outputs) -> None:
    table = benchmark_table(data)
    for key in ("csv", "tex"):
        Path(outputs[key]).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(outputs["csv"], index=False)
    Path(outputs["tex"]).write_text(latex_table(table))
    style.save(plot(table), outputs["pdf"], outputs["png"])
