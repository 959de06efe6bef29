"""Rule `download`: fetch a dataset's original file (or a mirror's table) into its download directory."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data import download, resolve_mirror
from interplay.workflow_logging import log_to

settings = snakemake.config["data"]
with log_to(snakemake.log[0]):
    download(
        snakemake.wildcards.dataset,
        snakemake.output[0],
        mirror=resolve_mirror(settings["mirror"]),
        timeout=settings["timeout"],
        retries=settings["retries"],
    )
