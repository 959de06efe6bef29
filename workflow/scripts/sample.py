"""Rule `sample`: sample one chain block of a run and write it as NetCDF (atomically)."""
import json
import os

# Jobs may share a GPU (workstation profile): allocate GPU memory on demand instead of JAX's default 75%.
# Set before JAX is imported; CUDA_VISIBLE_DEVICES (set by Slurm) picks the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from interplay.compilation_cache import CompileTimes, enable_compilation_cache
from interplay.samplers import use_cpu_cores

# On a CPU the job's chains are split over one JAX device per thread (before JAX starts its backends).
use_cpu_cores(snakemake.threads)
# JAX's persistent compilation cache, shared by the study's jobs: on before anything compiles.
cache = enable_compilation_cache(snakemake.config["compilation_cache"])
from interplay.sampling import sample_block
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]) as log:
    log.info(f"compilation cache: {cache if cache is not None else 'disabled'}")
    with CompileTimes() as compile_times:
        sample_block(
            json.loads(snakemake.params.settings),  # interplay.config.sampling_settings of the run
            int(snakemake.wildcards.block),
            snakemake.input.data,
            snakemake.output[0],
            log=log,
            step_progress=snakemake.config["sample_progress"] == "steps",
        )
    log.info(compile_times.summary())
