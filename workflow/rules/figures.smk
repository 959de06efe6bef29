# Figures stage: one rule per figure named in the config's `figures:` section (figure_<name>), each
# drawn from merged posteriors and analysis tables, never from sampling directly; then all.pdf with the
# captions of workflow/report/, the balancedness verdicts across runs and the run settings.
#   snakemake results/figures/<name>.pdf   builds just what that figure needs
#   snakemake --report results/report.html  figures, captions, verdicts and run settings in one page
# The figure code (FIGURE_CODE: src/interplay/figures/*.py) is an input of every rule here, so after a
# plot or style edit `snakemake -n` lists only these jobs, never sampling (docs/figures.md).
from interplay import figures as study_figures
from interplay.figures import plan as figure_plan

# Which runs each figure draws on; a figure whose runs or sweep are missing fails here, at parse time.
FIGURE_PLANS = study_figures.figure_plans(config["figures"], RUNS, SWEEPS)
# What `all_figures` (and so `snakemake` with no target, via final_targets) builds: the figures, all.pdf,
# the verdict table and the run settings.
FIGURE_TARGETS = [path for name in FIGURE_PLANS for path in figure_plan.figure_outputs(name).values()]
FIGURE_TARGETS += ["results/figures/all.pdf"] if FIGURE_PLANS else []
FIGURE_TARGETS += ["results/analysis/verdicts.csv", "results/analysis/run_settings.csv"]
BALANCEDNESS_RUNS = [name for name in sorted(RUNS) if "balancedness" in study_config.applicable_analyses(RUNS[name])]


report: "../report/workflow.rst"


# One rule per figure; each reads only its own runs' posteriors and tables (FIGURE_PLANS), so
# `snakemake results/figures/<name>.pdf` samples nothing the figure does not show.
for _name, _plan in FIGURE_PLANS.items():

    rule:
        name:
            f"figure_{_name}"
        input:
            posteriors=[figure_plan.posterior_path(run) for run in _plan.posterior_runs],
            tables=[figure_plan.table_path(run, analysis) for run, analysis in _plan.tables],
            code=FIGURE_CODE,
        output:
            **{
                key: (
                    report(path, caption=f"../report/{_name}.rst", category="Figures", labels={"figure": _name})
                    if key == "png"
                    else path
                )
                for key, path in figure_plan.figure_outputs(_name).items()
            },
        params:
            plan=_plan.as_params(),
            runs={run: RUNS[run] for run in _plan.runs},
        log:
            f"results/logs/figures/{_name}.log",
        conda:
            CPU_ENV
        script:
            "../scripts/figure_render.py"


rule assemble_figures:
    input:
        pngs=[figure_plan.figure_outputs(name)["png"] for name in FIGURE_PLANS],
        captions=[str(Path(workflow.basedir, "workflow", "report", f"{name}.rst")) for name in FIGURE_PLANS],
        code=FIGURE_CODE,
    output:
        "results/figures/all.pdf",
    params:
        figures=list(FIGURE_PLANS),
        study=config["study"],
    log:
        "results/logs/figures/all.log",
    conda:
        CPU_ENV
    script:
        "../scripts/assemble.py"


rule verdicts:
    input:
        tables=[figure_plan.table_path(run, "balancedness") for run in BALANCEDNESS_RUNS],
        code=FIGURE_CODE,
    output:
        report("results/analysis/verdicts.csv", caption="../report/verdicts.rst", category="Balancedness"),
    params:
        table="verdicts",
        runs=[RUNS[run] for run in BALANCEDNESS_RUNS],
    log:
        "results/logs/figures/verdicts.log",
    conda:
        CPU_ENV
    script:
        "../scripts/figure_tables.py"


rule run_settings:
    input:
        code=FIGURE_CODE,
    output:
        report("results/analysis/run_settings.csv", caption="../report/run_settings.rst", category="Run settings"),
    params:
        table="run_settings",
        runs=RUNS,
    log:
        "results/logs/figures/run_settings.log",
    conda:
        CPU_ENV
    script:
        "../scripts/figure_tables.py"


rule all_figures:
    localrule: True
    input:
        FIGURE_TARGETS,
