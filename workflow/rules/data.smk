# Data stage: download (local: compute nodes often have no internet) -> study table -> prepared split.

localrules:
    download,


# Where the data come from (mirror, timeout, retries) is read from the config by the script, not passed as
# params: the table's pinned sha256 makes every source equivalent, so switching mirrors must not rerun jobs.
rule download:
    output:
        directory("results/data/download/{dataset}"),
    log:
        "results/logs/download/{dataset}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/download.py"


rule table:
    input:
        table_source,
    output:
        "results/data/tables/{dataset}.data",
    params:
        # keys sorted: reordering a teacher's settings must not remake its table (and so resample)
        teacher=lambda w: study_config.canonical(TEACHERS.get(w.dataset)),
    log:
        "results/logs/table/{dataset}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/table.py"


rule prepare:
    input:
        "results/data/tables/{dataset}.data",
    output:
        "results/data/prepared/{dataset}/seed-{seed}_std-{standardise}.nc",
    log:
        "results/logs/prepare/{dataset}/seed-{seed}_std-{standardise}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/prepare.py"
