"""Rule `merge`: concatenate a run's blocks along `chain` into one posterior file, streaming."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.posterior_io import merge_blocks
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]) as log:
    merge_blocks(snakemake.input, snakemake.output[0], drop_diverged=snakemake.params.drop_diverged, log=log)
