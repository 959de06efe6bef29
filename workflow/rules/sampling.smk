# Sampling stage: one job per chain block (chains vectorised on one device), then a streaming merge.


rule sample:
    input:
        data=prepared_data,
    output:
        "results/samples/{run}/block-{block}.nc",
    params:
        # Only what sampling reads, as sorted JSON (interplay.config.sampling_settings): Snakemake reruns a
        # job whose params changed, so key order, defaults written out, merge or other kinds' settings must not.
        settings=lambda w: study_config.sampling_settings(RUNS[w.run]),
    log:
        "results/logs/sample/{run}/block-{block}.log",
    threads: config["sample_threads"]
    # gpu is requested per profile (slurm/, profiles/workstation/): the rule itself runs on CPU too.
    resources:
        # a retry (profile `retries`) after a timeout or out-of-memory kill gets more of both
        mem_mb=lambda w, attempt: attempt * sample_request(w)["mem_mb"],
        runtime=lambda w, attempt: attempt * sample_request(w)["runtime"],
    conda:
        SAMPLE_ENV
    script:
        "../scripts/sample.py"


rule merge:
    input:
        run_blocks,
    output:
        "results/posteriors/{run}.nc",
    params:
        drop_diverged=lambda w: RUNS[w.run]["merge"]["drop_diverged"],
    log:
        "results/logs/merge/{run}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/merge.py"
