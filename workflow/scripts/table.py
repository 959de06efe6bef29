"""Rule `table`: convert a download to the study's table format and verify its pinned sha256."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data import make_table, make_teacher_student_table
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    if snakemake.params.teacher is not None:
        make_teacher_student_table(snakemake.params.teacher, snakemake.output[0])
    else:
        # A download whose table fails its checksum is deleted, so the next run fetches it again.
        make_table(snakemake.wildcards.dataset, snakemake.input[0], snakemake.output[0], remove_bad_download=True)
