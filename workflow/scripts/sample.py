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
from interplay.sampling import block_checkpoint, sample_block
from interplay.workflow_logging import log_to

run = json.loads(snakemake.params.settings)  # interplay.config.sampling_settings of the run
block = int(snakemake.wildcards.block)
with log_to(snakemake.log[0]) as log:
    log.info(f"compilation cache: {cache if cache is not None else 'disabled'}")
    # Saved at an interval and on SIGTERM/SIGUSR1 (Slurm's warning before a time limit or preemption);
    # a rerun of this job resumes it. Not a rule output: Snakemake never deletes it with a failed job.
    checkpoint = block_checkpoint(run, block, snakemake.input.data, snakemake.config["checkpoint"], log=log)
    with CompileTimes() as compile_times, checkpoint.signals():
        sample_block(run, block, snakemake.input.data, snakemake.output[0], log=log,
                     step_progress=snakemake.config["sample_progress"] == "steps", checkpoint=checkpoint)
    log.info(compile_times.summary())
