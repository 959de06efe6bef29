# interplay: priors x overparametrization in BNN posteriors, as a Snakemake DAG.
#   data (download, table, prepare) -> sample (one job per chain block) -> merge -> analyses -> figures
# Study settings: config.yaml (default study) or --configfile workflow/studies/<study>.yaml.
from snakemake.utils import min_version

min_version("9.0")


# A study given with --configfile replaces the default study instead of being laid over it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        final_targets(),
