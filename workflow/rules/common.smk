# Shared helpers: config validation, resolved runs, wildcard constraints, paths.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from interplay import config as study_config  # noqa: E402
from interplay.analysis import ANALYSES, NEEDS_PREPARED_DATA  # noqa: E402
from interplay.data.images import IMAGE_DATASETS  # noqa: E402

# Validates the whole config (schema defaults filled in) and expands sweeps, so a bad key or value
# fails here, before any job runs, with a message naming it.
RUNS = study_config.resolve_runs(config)
SWEEPS = study_config.sweep_members(config)
TEACHERS = config["teachers"]
# Own data sets (config `datasets`: CSV / Parquet files), checked by resolve_runs above; their sizes feed
# the sampling jobs' resource requests as a teacher's do.
OWN_DATASETS = config["datasets"]
DATA_SHAPES = {**TEACHERS, **study_config.own_data_shapes(config)}

# Library code that analysis and figure jobs depend on: editing it reruns those jobs (by mtime), never
# sampling. Sampling code is deliberately not an input: re-sampling is expensive, force it with -R sample.
ANALYSIS_CODE = sorted(str(p) for p in Path(workflow.basedir, "src/interplay/analysis").glob("*.py"))
FIGURE_CODE = sorted(str(p) for p in Path(workflow.basedir, "src/interplay/figures").glob("*.py"))

# Software environments (used with --sdm conda): sampling jobs take the CUDA one on GPU clusters.
CPU_ENV = "../../envs/cpu.yaml"
SAMPLE_ENV = f"../../envs/{config['sample_env']}.yaml"


wildcard_constraints:
    run=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    dataset=r"[A-Za-z0-9_]+",
    block=r"\d{4}",
    seed=r"\d+",
    standardise=r"full|train",
    order=r"seed|authors",
    sweep=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    analysis=r"[a-z_]+",


def table_source(wildcards):
    """Teacher-student tables are generated, own data sets' read from their file; every other table is
    converted from its download."""
    if wildcards.dataset in TEACHERS:
        return []
    if wildcards.dataset in OWN_DATASETS:
        return OWN_DATASETS[wildcards.dataset]["path"]
    return f"results/data/download/{wildcards.dataset}"


def prepare_source(wildcards):
    """What `prepare` reads: an image data set's decoded arrays, every other data set's study table."""
    if wildcards.dataset in IMAGE_DATASETS:
        return f"results/data/images/{wildcards.dataset}.nc"
    return f"results/data/tables/{wildcards.dataset}.data"


def table_settings(wildcards):
    """What the `table` job reads of the config: a teacher's or an own data set's settings (keys sorted:
    reordering them must not remake the table, and so resample), None for a UCI data set."""
    return study_config.canonical(TEACHERS.get(wildcards.dataset) or OWN_DATASETS.get(wildcards.dataset))


def run_settings(wildcards):
    return RUNS[wildcards.run]


def sample_request(wildcards):
    """The job's estimate (interplay.config.sample_resources): the run's data sizes (teachers' from the
    config), host memory as on a GPU node with sample_env cuda, else as on a CPU (everything in host memory)."""
    platform = "gpu" if config["sample_env"] == "cuda" else "cpu"
    return study_config.sample_resources(RUNS[wildcards.run], DATA_SHAPES, platform,
                                         config["checkpoint"]["chunk_steps"])


def prepared_data(wildcards):
    return study_config.prepared_data_path(RUNS[wildcards.run])


def run_blocks(wildcards):
    return expand(
        "results/samples/{run}/block-{block}.nc",
        run=wildcards.run,
        block=study_config.block_ids(RUNS[wildcards.run]),
    )


def final_targets():
    """What `snakemake` with no target builds: every run's analyses, every figure of the config's
    `figures:` section, results/figures/all.pdf, the verdict table and the run settings (figures.smk)."""
    figures = [str(f) for f in rules.all_figures.input] if rules.has("all_figures") else []
    return run_analysis_tables(sorted(RUNS)) + sweep_tables() + figures


def sweep_tables():
    """Sweep-level tables: an analysis across a sweep's runs, where it applies to all of them."""
    return [
        f"results/analysis/sweeps/{sweep}/{analysis}.csv"
        for sweep, members in SWEEPS.items()
        for analysis in ("predictive", "conformity", "reallocation")
        if all(analysis in study_config.applicable_analyses(RUNS[name]) for name in members)
    ]


def bundle_inputs(wildcards):
    """Everything must exist before it is archived: every run's posterior and, once the rule
    exists, every figure (and so every analysis table the figures read)."""
    inputs = expand("results/posteriors/{run}.nc", run=sorted(RUNS))
    if rules.has("all_figures"):
        inputs += [str(f) for f in rules.all_figures.input]
    return inputs


def analysis_inputs(wildcards):
    """The run's merged posterior and the analysis code, plus the prepared data where the analysis reads it."""
    inputs = {"posterior": f"results/posteriors/{wildcards.run}.nc", "code": ANALYSIS_CODE}
    if wildcards.analysis in NEEDS_PREPARED_DATA:
        inputs["data"] = prepared_data(wildcards)
    return inputs


def analysis_options(wildcards):
    """The study's settings of this analysis (config `analysis.<name>`), keyword arguments of its entry point."""
    return config["analysis"].get(wildcards.analysis, {})


def sweep_analysis_tables(wildcards):
    """The per-run tables a sweep-level table combines, in the sweep's run order."""
    return [f"results/analysis/{run}/{wildcards.analysis}.csv" for run in SWEEPS[wildcards.sweep]]


def run_analysis_tables(run_names):
    """Every applicable analysis table of the given runs."""
    return [
        f"results/analysis/{name}/{analysis}.csv"
        for name in run_names
        for analysis in study_config.applicable_analyses(RUNS[name])
    ]
