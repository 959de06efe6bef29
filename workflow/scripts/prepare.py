"""Rule `prepare`: shuffle with the data seed, standardise, split 70/10/20, write NetCDF."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data import prepare_split
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    prepare_split(
        snakemake.input[0],
        snakemake.output[0],
        dataset=snakemake.wildcards.dataset,
        seed=int(snakemake.wildcards.seed),
        standardise=snakemake.wildcards.standardise,
    )
