# interplay: priors x overparametrization in BNN posteriors, as a Snakemake DAG.
#   data (download, table, prepare) -> sample (one job per chain block) -> merge -> analyses -> figures
# Study settings: config.yaml (default study) or --configfile workflow/studies/<study>.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/bundle.smk"


rule all:
    default_target: True
    input:
        final_targets(),
