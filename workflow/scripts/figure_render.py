"""Figure rules: draw one figure from its runs' posteriors and analysis tables (interplay.figures)."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay import figures
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    plan = snakemake.params.plan
    data = figures.from_params(plan, snakemake.params.runs, snakemake.input.posteriors, snakemake.input.tables)
    figures.render(plan["name"], data, dict(snakemake.output.items()))
