"""Analyses of posterior files: the three phenomena and predictive performance.

Every analysis streams over the posterior in blocks of whole chains (bounded memory whatever the
file size) and reports each estimate with its Monte Carlo standard error. Entry points for the
Snakemake rules, all ``analyse_*(posterior_path, out_path, run)`` writing a table under
``results/analysis/{run}/{analysis}.{csv,nc}``, are listed in ``ANALYSES``.
"""

from interplay.analysis.balancedness import analyse_balancedness, balancedness_table, run_verdict
from interplay.analysis.conformity import analyse_conformity, conformity_sweep_table, conformity_tables
from interplay.analysis.dirichlet import (
    analyse_reallocation,
    dirichlet_mle,
    fit_dirichlet,
    fit_dirichlet_samples,
    identity_share_fits,
    reallocation_sweep_table,
    relu_cluster_fits,
    symmetric_dirichlet_mle,
)
from interplay.analysis.predictive import (
    analyse_cumulative_lppd,
    analyse_diagnostics,
    analyse_predictive,
    coverage,
    cumulative_lppd,
    lppd,
    predictive_metrics,
    predictive_sweep_table,
)

# analysis name (the `{analysis}` in results/analysis/{run}/{analysis}.csv) -> entry point
ANALYSES = {
    "balancedness": analyse_balancedness,
    "reallocation": analyse_reallocation,   # ReLU nets need x_train= or data_path= (prepared split)
    "conformity": analyse_conformity,
    "predictive": analyse_predictive,
    "cumulative_lppd": analyse_cumulative_lppd,
    "diagnostics": analyse_diagnostics,
}

# analysis name -> builder of the sweep-level table (results/analysis/sweeps/{sweep}/{analysis}.csv)
SWEEP_TABLES = {
    "conformity": conformity_sweep_table,      # conformity against width and depth
    "reallocation": reallocation_sweep_table,  # Dirichlet alpha against tau and M
    "predictive": predictive_sweep_table,      # LPPD / RMSE against tau and depth
}

__all__ = [
    "ANALYSES",
    "SWEEP_TABLES",
    "analyse_balancedness",
    "analyse_conformity",
    "analyse_cumulative_lppd",
    "analyse_diagnostics",
    "analyse_predictive",
    "analyse_reallocation",
    "balancedness_table",
    "conformity_sweep_table",
    "conformity_tables",
    "coverage",
    "cumulative_lppd",
    "dirichlet_mle",
    "fit_dirichlet",
    "fit_dirichlet_samples",
    "identity_share_fits",
    "lppd",
    "predictive_metrics",
    "predictive_sweep_table",
    "reallocation_sweep_table",
    "relu_cluster_fits",
    "run_verdict",
    "symmetric_dirichlet_mle",
]
