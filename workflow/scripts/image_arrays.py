"""Rule `image_arrays`: decode an image data set's download (md5-checked files) into verified arrays."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data.images import make_image_arrays
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    make_image_arrays(snakemake.wildcards.dataset, snakemake.input[0], snakemake.output[0])
