"""Rule `analyse`: run the `interplay.analysis.ANALYSES` entry point named by the {analysis} wildcard on a
run's merged posterior."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.analysis import ANALYSES
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    options = {"data_path": snakemake.input.data} if hasattr(snakemake.input, "data") else {}
    options.update(snakemake.params.options)  # the analysis's settings in the study config
    ANALYSES[snakemake.wildcards.analysis](snakemake.input.posterior, snakemake.output[0], snakemake.params.run,
                                           **options)
