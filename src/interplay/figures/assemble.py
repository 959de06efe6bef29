"""The study's summary products: every figure with its caption in one PDF, the balancedness verdicts
across runs and the run settings (both CSV, shown in the Snakemake report).

all.pdf holds each figure's PNG rendering (the vector PDFs lie beside it in results/figures/) under its
title and caption; captions are the reStructuredText files of workflow/report/, also used by the report.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from interplay.figures import style

PAGE_SIZE = (8.27, 11.69)  # A4 portrait, inches
CAPTION_WRAP = 95


# ----------------------------------------------------------------------------- captions


def rst_to_text(text: str) -> str:
    """Plain text of a short reStructuredText caption: roles, inline markup and links removed,
    paragraphs kept (blank-line separated), lines within a paragraph joined."""
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text)          # :math:`x` -> x
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`_+", r"\1", text)    # `label <url>`_ -> label
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"\*\*([^*]*)\*\*", r"\1", text)
    text = re.sub(r"\*([^*]*)\*", r"\1", text)
    paragraphs = [" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def read_caption(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    return rst_to_text(path.read_text())


def wrap(text: str, width: int = CAPTION_WRAP) -> str:
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


# ----------------------------------------------------------------------------- all.pdf


def cover_page(study: str, entries: Sequence[tuple[str, str, str]]):
    """The first page of all.pdf: study name, date and the list of figures."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=PAGE_SIZE)
    fig.text(0.08, 0.92, f"interplay — study “{study}”", fontsize=18, weight="bold")
    fig.text(0.08, 0.89, f"figures assembled {date.today().isoformat()}", fontsize=10, color="0.35")
    lines = [f"{i + 1}.  {title}" for i, (title, _, _) in enumerate(entries)]
    fig.text(0.08, 0.85, "\n".join(lines), fontsize=11, va="top", linespacing=1.8)
    return fig


def figure_page(number: int, title: str, png_path, caption: str):
    """One page of all.pdf: the figure's title, its PNG (full width, aspect kept) and its caption."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    image = mpimg.imread(png_path)
    height_px, width_px = image.shape[:2]
    fig = plt.figure(figsize=PAGE_SIZE)
    fig.text(0.06, 0.965, f"Figure {number}. {title}", fontsize=13, weight="bold", va="top")
    caption_text = wrap(caption)
    n_lines = caption_text.count("\n") + 1
    caption_height = min(0.45, 0.018 * n_lines + 0.02)
    # The image fills the width (or the height left above the caption), keeping its aspect ratio.
    box_w, box_h = 0.88, 0.93 - caption_height - 0.04
    aspect = (height_px / width_px) * (PAGE_SIZE[0] / PAGE_SIZE[1])  # image height per page width, in page units
    w = min(box_w, box_h / aspect)
    h = w * aspect
    top = 0.935
    ax = fig.add_axes((0.5 - w / 2, top - h, w, h))
    ax.imshow(image, interpolation="lanczos")
    ax.set_axis_off()
    fig.text(0.06, top - h - 0.025, caption_text, fontsize=9, va="top", family="serif", linespacing=1.35)
    return fig


def assemble_pdf(entries: Sequence[tuple[str, str, str]], out_path, *, study: str = "default") -> Path:
    """One PDF: a cover page listing the figures, then one page per figure (title, image, caption).

    entries: (title, png path, caption text) in order.
    """
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    style.apply()
    if not entries:
        raise ValueError("no figures to assemble: the study's `figures:` section is empty")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with PdfPages(tmp, metadata={"Title": f"interplay study {study}: figures"}) as pdf:
        pages = [lambda: cover_page(study, entries)]
        pages += [lambda n=n, e=e: figure_page(n, *e) for n, e in enumerate(entries, start=1)]
        for make_page in pages:  # one page in memory at a time
            fig = make_page()
            pdf.savefig(fig)
            plt.close(fig)
    tmp.replace(out_path)
    return out_path


# ----------------------------------------------------------------------------- tables


def verdict_table(entries: Sequence[tuple[Mapping, str | Path | pd.DataFrame]]) -> pd.DataFrame:
    """Balancedness verdicts across runs: one row per run with the run verdict and the layer-pair and
    per-unit verdicts, each with its worst relative error, largest |t|, Bonferroni t critical value,
    degrees of freedom and standard-error method, and the margin. entries: (run, table or CSV)."""
    rows = []
    for run, table in entries:
        table = pd.read_csv(table) if isinstance(table, (str, Path)) else table
        verdicts = table[table["kind"] == "verdict"].set_index("family")
        hidden = run["model"]["hidden"]
        row = {"run": run["name"], "dataset": run["dataset"], "hidden": "-".join(map(str, hidden)),
               "activation": run["model"]["activation"], "sampler": run["sampler"]["kind"],
               "chains": int(table["n_chains"].dropna().iloc[0]) if table["n_chains"].notna().any() else np.nan}
        if "run" in verdicts.index:
            row["verdict"] = verdicts.loc["run", "verdict"]
            row["worst_rel_error"] = verdicts.loc["run", "worst_rel_error"]
            row["margin"] = verdicts.loc["run", "margin"]
        for family in ("layer_pair", "neuron"):
            if family in verdicts.index:
                found = verdicts.loc[family]
                row[f"{family}_verdict"] = found["verdict"]
                row[f"{family}_worst_rel_error"] = found["worst_rel_error"]
                row[f"{family}_max_abs_t"] = found["t"]
                row[f"{family}_t_critical"] = found["t_critical"]
                row[f"{family}_df"] = found["df"]
                row[f"{family}_se_method"] = found["se_method"]
            else:
                row[f"{family}_verdict"] = "untestable"
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(tree: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def run_settings_table(runs: Mapping[str, Mapping]) -> pd.DataFrame:
    """Every resolved run as one row of dotted keys (lists as JSON), runs sorted by name."""
    rows = [_flatten(runs[name]) for name in sorted(runs)]
    table = pd.DataFrame(rows)
    first = [c for c in ("name", "dataset", "model.hidden", "model.activation", "model.likelihood", "prior.scale",
                         "sampler.kind", "sampler.chains", "sampler.block_size") if c in table.columns]
    # the rest sorted, so the table does not depend on the order keys were given in the config
    return table[first + sorted(c for c in table.columns if c not in first)]
