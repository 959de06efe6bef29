# Archived, verifiable result bundle of the study (docs/bundles.md):
#   snakemake bundle --cores 1 [--configfile workflow/studies/<study>.yaml]
# writes results/bundles/<study>-<YYYYMMDD>-<short hash>.tar.gz and its summary .json (manifest sha256).
#
# Snakemake needs the output name before the job runs, so the date and git short hash are fixed when
# this file is parsed; the rule is local so it runs in the process that fixed them (a cluster job
# would re-parse, maybe on another day). A commit between parsing and running is an error, not a
# bundle under a wrong name. Once made, the bundle is up to date until its inputs change, the date
# changes or a new commit is made; `snakemake bundle --forcerun bundle` makes it again.
# Without draws (sample_stats, predictive and attrs only): set `bundle: {draws: false}` in the config.
# The bundle holds exactly the study's runs (params.resolved) and their outputs at the rules' paths,
# plus every input below, never other runs that share the results folders.
from interplay import bundle as result_bundle
from interplay.provenance import git_info

try:
    BUNDLE_STUDY = result_bundle.study_name(config)
except result_bundle.BundleError:
    BUNDLE_STUDY = "unnamed"  # a missing name must not stop every other rule from parsing
BUNDLE_DATE = result_bundle.today()
BUNDLE_SHORT_HASH = git_info(workflow.basedir, with_diff=False)["short"]
BUNDLE_NAME = result_bundle.bundle_name(BUNDLE_STUDY, BUNDLE_DATE, BUNDLE_SHORT_HASH)


rule bundle:
    input:
        bundle_inputs,
    output:
        archive=f"results/bundles/{BUNDLE_NAME}.tar.gz",
        summary=f"results/bundles/{BUNDLE_NAME}.json",
    params:
        study=BUNDLE_STUDY,
        date=BUNDLE_DATE,
        short_hash=BUNDLE_SHORT_HASH,
        root=workflow.basedir,
        resolved=RUNS,
        configfiles=[str(f) for f in workflow.configfiles],
        draws=config["bundle"]["draws"],
    log:
        f"results/logs/bundle/{BUNDLE_NAME}.log",
    localrule: True
    conda:
        CPU_ENV
    script:
        "../scripts/bundle.py"
