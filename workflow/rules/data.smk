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
        # a teacher's or own data set's settings (common.smk, table_settings); None for UCI data
        settings=table_settings,
    log:
        "results/logs/table/{dataset}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/table.py"


# Image data sets (interplay.data.images): the download's files decoded into arrays, md5- and hash-checked.
rule image_arrays:
    input:
        "results/data/download/{dataset}",
    output:
        "results/data/images/{dataset}.nc",
    log:
        "results/logs/image_arrays/{dataset}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/image_arrays.py"


rule prepare:
    input:
        # the study table, or an image data set's decoded arrays (common.smk)
        prepare_source,
    output:
        # {order}: `seed` (data.split shuffle) or `authors` (the authors' permutation, seed = their rng)
        "results/data/prepared/{dataset}/{order}-{seed}_std-{standardise}.nc",
    log:
        "results/logs/prepare/{dataset}/{order}-{seed}_std-{standardise}.log",
    conda:
        CPU_ENV
    script:
        "../scripts/prepare.py"
