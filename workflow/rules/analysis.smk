# Analysis stage: one rule per question, each a table under results/analysis/{run}/ read by figures and
# bundles. Every analysis streams over the merged posterior in blocks of chains (bounded memory).
# The analysis library is an input, so editing it reruns analyses (and figures), never sampling.


rule balancedness:
    input:
        posterior="results/posteriors/{run}.nc",
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/balancedness.csv",
    params:
        analysis="balancedness",
        run=run_settings,
        options={"margin": config["analysis"]["balancedness"]["margin"]},
    log:
        "results/logs/analysis/{run}/balancedness.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule reallocation:
    input:
        posterior="results/posteriors/{run}.nc",
        data=prepared_data,
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/reallocation.csv",
    params:
        analysis="reallocation",
        run=run_settings,
    log:
        "results/logs/analysis/{run}/reallocation.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule conformity:
    input:
        posterior="results/posteriors/{run}.nc",
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/conformity.csv",
    params:
        analysis="conformity",
        run=run_settings,
    log:
        "results/logs/analysis/{run}/conformity.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule predictive:
    input:
        posterior="results/posteriors/{run}.nc",
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/predictive.csv",
    params:
        analysis="predictive",
        run=run_settings,
    log:
        "results/logs/analysis/{run}/predictive.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule cumulative_lppd:
    input:
        posterior="results/posteriors/{run}.nc",
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/cumulative_lppd.csv",
    params:
        analysis="cumulative_lppd",
        run=run_settings,
    log:
        "results/logs/analysis/{run}/cumulative_lppd.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule diagnostics:
    input:
        posterior="results/posteriors/{run}.nc",
        code=ANALYSIS_CODE,
    output:
        "results/analysis/{run}/diagnostics.csv",
    params:
        analysis="diagnostics",
        run=run_settings,
    log:
        "results/logs/analysis/{run}/diagnostics.log",
    conda:
        CPU_ENV
    script:
        "../scripts/analyse.py"


rule sweep_table:
    input:
        tables=sweep_analysis_tables,
    output:
        "results/analysis/sweeps/{sweep}/{analysis}.csv",
    params:
        runs=lambda w: [RUNS[name] for name in SWEEPS[w.sweep]],
    log:
        "results/logs/analysis/sweeps/{sweep}/{analysis}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/sweep_table.py"
