"""Rules `verdicts` and `run_settings`: the balancedness verdicts across runs, the resolved run settings."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.analysis.tables import write_table
from interplay.figures.assemble import run_settings_table, verdict_table
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    if snakemake.params.table == "verdicts":
        table = verdict_table(list(zip(snakemake.params.runs, snakemake.input.tables)))
    else:
        table = run_settings_table(snakemake.params.runs)
    write_table(table, snakemake.output[0])
