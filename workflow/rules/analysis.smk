# Analysis stage: one table per question under results/analysis/{run}/{analysis}.csv, read by figures and
# bundles; one rule for all of them (interplay.analysis.ANALYSES names each analysis and its entry point).
# Every analysis streams over the merged posterior in blocks of chains (bounded memory).
# The analysis library is an input, so editing it reruns analyses (and figures), never sampling.


rule analyse:
    input:
        unpack(analysis_inputs),
    output:
        "results/analysis/{run}/{analysis}.csv",
    wildcard_constraints:
        analysis="|".join(ANALYSES),
    params:
        run=run_settings,
        options=analysis_options,
    log:
        "results/logs/analysis/{run}/{analysis}.log",
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
