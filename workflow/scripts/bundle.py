"""Rule `bundle`: archive the study's results as a verifiable tar.gz (docs/bundles.md)."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from pathlib import Path

from interplay import bundle as result_bundle
from interplay.provenance import git_info
from interplay.workflow_logging import log_to

params = snakemake.params
with log_to(snakemake.log[0]) as log:
    git = git_info(params.root)
    if git["short"] != params.short_hash:
        raise result_bundle.BundleError(
            f"HEAD moved from {params.short_hash} to {git['short']} after the workflow was parsed; "
            "run `snakemake bundle` again"
        )
    created = result_bundle.create_bundle(
        params.study,
        root=params.root,
        results="results",
        out=Path(snakemake.output.archive).parent,
        config=snakemake.config,
        resolved=params.resolved,  # the study's runs: exactly their results are bundled
        configfiles=params.configfiles,
        files=list(snakemake.input),  # what the DAG made for the study must be in
        include_draws=params.draws,
        date=params.date,
        git=git,
    )
    log.info("wrote %s (%d files, %d bytes)", created.path, created.n_files, created.total_bytes)
    log.info("manifest sha256: %s (of the bag's tagmanifest-sha256.txt)", created.manifest_sha256)
    log.info("archive sha256:  %s", created.archive_sha256)
