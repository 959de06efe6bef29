"""Rule `sample`: sample one chain block of a run and write it as NetCDF (atomically)."""
from interplay.sampling import sample_block
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]) as log:
    sample_block(
        snakemake.params.run,
        int(snakemake.wildcards.block),
        snakemake.input.data,
        snakemake.output[0],
        log=log,
    )
