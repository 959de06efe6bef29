"""Rule `sample`: sample one chain block of a run and write it as NetCDF (atomically)."""
import json
import os

# Jobs may share a GPU (workstation profile): allocate GPU memory on demand instead of JAX's default 75%.
# Set before JAX is imported; CUDA_VISIBLE_DEVICES (set by Slurm) picks the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from interplay.samplers import use_cpu_cores

# On a CPU the job's chains are split over one JAX device per thread (before JAX starts its backends).
use_cpu_cores(snakemake.threads)
from interplay.sampling import sample_block
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]) as log:
    sample_block(
        json.loads(snakemake.params.settings),  # interplay.config.sampling_settings of the run
        int(snakemake.wildcards.block),
        snakemake.input.data,
        snakemake.output[0],
        log=log,
    )
