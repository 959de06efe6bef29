# Shared helpers: config validation, resolved runs, wildcard constraints, paths.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from interplay import config as study_config  # noqa: E402

# Validates the whole config (schema defaults filled in) and expands sweeps, so a bad key or value
# fails here, before any job runs, with a message naming it.
RUNS = study_config.resolve_runs(config)
TEACHERS = config["teachers"]

# Software environments (used with --sdm conda): sampling jobs take the CUDA one on GPU clusters.
CPU_ENV = "../../envs/cpu.yaml"
SAMPLE_ENV = f"../../envs/{config['sample_env']}.yaml"


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    dataset=r"[A-Za-z0-9_]+",
    block=r"\d{4}",
    seed=r"\d+",
    standardise=r"full|train",


def table_source(wildcards):
    """Teacher-student tables are generated; every other table is converted from its download."""
    if wildcards.dataset in TEACHERS:
        return []
    return f"results/data/download/{wildcards.dataset}"


def run_settings(wildcards):
    return RUNS[wildcards.run]


def prepared_data(wildcards):
    return study_config.prepared_data_path(RUNS[wildcards.run])


def run_blocks(wildcards):
    return expand(
        "results/samples/{run}/block-{block}.nc",
        run=wildcards.run,
        block=study_config.block_ids(RUNS[wildcards.run]),
    )


def final_targets():
    """What `snakemake` with no target builds: every run's merged posterior."""
    return expand("results/posteriors/{run}.nc", run=sorted(RUNS))


def bundle_inputs(wildcards):
    """Everything must exist before it is archived: every run's posterior and, once the rule
    exists, every figure (and so every analysis table the figures read)."""
    inputs = expand("results/posteriors/{run}.nc", run=sorted(RUNS))
    if rules.has("all_figures"):
        inputs += [str(f) for f in rules.all_figures.input]
    return inputs
