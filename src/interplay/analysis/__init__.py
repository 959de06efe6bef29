"""Analyses of posterior files: the three phenomena and predictive performance.

Every analysis streams over the posterior in blocks of whole chains (bounded memory whatever the
file size) and reports each estimate with its Monte Carlo standard error. Entry points for the
Snakemake rules, all ``analyse_*(posterior_path, out_path, run)`` writing a table under
``results/analysis/{run}/{analysis}.{csv,nc}``, are listed in ``ANALYSES``.
"""

from interplay.analysis.balancedness import analyse_balancedness, balancedness_table, run_verdict
from interplay.analysis.bias_marginals import analyse_bias_marginals, bias_marginal_table
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
from interplay.analysis.flat_likelihood import analyse_flat_likelihood, flat_likelihood_table
from interplay.analysis.jacobian import analyse_jacobian, jacobian_table, symmetry_null_dimension
from interplay.analysis.predictive import (
    analyse_cumulative_lppd,
    analyse_diagnostics,
    analyse_predictive,
    cumulative_lppd,
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
    # The appendix analyses: built only for the figures that name a run (not in `applicable_analyses`).
    "bias_marginals": analyse_bias_marginals,
    "flat_likelihood": analyse_flat_likelihood,   # needs the prepared split (training inputs)
    "jacobian": analyse_jacobian,                 # needs the prepared split (training inputs)
}
# The analyses whose entry point also reads the run's prepared data (`data_path=`, the rule's input `data`).
NEEDS_PREPARED_DATA = ("reallocation", "flat_likelihood", "jacobian")

# analysis name -> builder of the sweep-level table (results/analysis/sweeps/{sweep}/{analysis}.csv)
SWEEP_TABLES = {
    "conformity": conformity_sweep_table,      # conformity against width and depth
    "reallocation": reallocation_sweep_table,  # Dirichlet alpha against tau and M
    "predictive": predictive_sweep_table,      # LPPD / RMSE against tau and depth
}

__all__ = [
    "ANALYSES",
    "NEEDS_PREPARED_DATA",
    "SWEEP_TABLES",
    "analyse_balancedness",
    "analyse_bias_marginals",
    "analyse_conformity",
    "analyse_cumulative_lppd",
    "analyse_diagnostics",
    "analyse_flat_likelihood",
    "analyse_jacobian",
    "analyse_predictive",
    "analyse_reallocation",
    "balancedness_table",
    "bias_marginal_table",
    "conformity_sweep_table",
    "conformity_tables",
    "cumulative_lppd",
    "dirichlet_mle",
    "fit_dirichlet",
    "fit_dirichlet_samples",
    "flat_likelihood_table",
    "identity_share_fits",
    "jacobian_table",
    "predictive_metrics",
    "predictive_sweep_table",
    "reallocation_sweep_table",
    "relu_cluster_fits",
    "run_verdict",
    "symmetric_dirichlet_mle",
    "symmetry_null_dimension",
]
