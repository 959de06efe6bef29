"""Rule `sweep_table`: one analysis across the runs of a sweep (e.g. conformity against width and depth)."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.analysis import SWEEP_TABLES
from interplay.analysis.tables import write_table
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    table = SWEEP_TABLES[snakemake.wildcards.analysis](list(zip(snakemake.params.runs, snakemake.input.tables)))
    write_table(table, snakemake.output[0])
