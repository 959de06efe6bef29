"""Rule `table`: make the study table of a data set: a teacher's generated, an own data set's checked
and converted, a UCI download's converted and verified against its pinned sha256."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data import make_table, make_teacher_student_table
from interplay.data.own import OwnDataset, make_own_table
from interplay.workflow_logging import log_to

dataset = snakemake.wildcards.dataset
with log_to(snakemake.log[0]):
    if dataset in snakemake.config["teachers"]:
        make_teacher_student_table(snakemake.params.settings, snakemake.output[0])
    elif dataset in snakemake.config["datasets"]:
        make_own_table(OwnDataset.from_config(dataset, snakemake.params.settings), snakemake.output[0])
    else:
        # A download whose table fails its checksum is deleted, so the next run fetches it again.
        make_table(dataset, snakemake.input[0], snakemake.output[0], remove_bad_download=True)
