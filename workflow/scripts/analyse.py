"""Analysis rules: run one `interplay.analysis.ANALYSES` entry point on a run's merged posterior."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.analysis import ANALYSES
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    options = {"data_path": snakemake.input.data} if hasattr(snakemake.input, "data") else {}
    options.update(getattr(snakemake.params, "options", None) or {})  # analysis settings of the study config
    ANALYSES[snakemake.params.analysis](snakemake.input.posterior, snakemake.output[0], snakemake.params.run, **options)
