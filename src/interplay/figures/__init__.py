"""The paper's figures: one module per figure, one seaborn style (`style`), the assembly into all.pdf.

Each figure module has ``plot(data) -> matplotlib Figure`` and ``render(data, outputs)`` writing
``outputs["pdf"]`` and ``outputs["png"]`` (uci_benchmark also ``csv`` and ``tex``); `data` is a
`FigureData` (the figure's config section, its runs, posterior files and analysis tables). Which
runs each figure uses comes from the config's ``figures:`` section, resolved by `plan.figure_plans`
when the workflow is parsed.
"""

from __future__ import annotations

import importlib

from interplay.figures.data import FigureData, from_params
from interplay.figures.plan import FIGURES, FigurePlan, figure_outputs, figure_plans

TITLES = {
    "bivariate": "Bivariate posterior marginals, under- vs overparametrized",
    "toy_grid": "1-M-1 networks: input against output weight per width and prior scale",
    "conformity": "Prior conformity of the weight marginals",
    "correlations": "Parameter correlations: sampling vs mean-field VI",
    "cumulative_lppd": "Cumulative LPPD over the number of chains",
    "balancedness": "Balancedness: estimated vs exact layer-norm identity",
    "dirichlet": "Reallocation shares and the Dirichlet(1/2) law",
    "lppd_grid": "Test LPPD over the prior scale and depth",
    "uci_benchmark": "UCI benchmark: MILE vs deep ensembles vs mean-field VI",
    "sampler_bias": "Sampler bias: the balancedness identity's relative error against cost",
    "bias_marginals": "Bias marginals per layer against the prior",
    "flat_likelihood": "Flat-likelihood directions: mixing sensitivity of redundant units",
    "jacobian": "Jacobian null space: rank, symmetry count and projections of the draws",
}


def module(name: str):
    """The module drawing figure `name`."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    return importlib.import_module(f"interplay.figures.{name}")


def render(name: str, data: FigureData, outputs) -> None:
    """Draw figure `name` from `data` into `outputs` (a mapping with pdf, png and the figure's extras)."""
    module(name).render(data, outputs)


__all__ = ["FIGURES", "TITLES", "FigureData", "FigurePlan", "figure_outputs", "figure_plans", "from_params",
           "module", "render"]
