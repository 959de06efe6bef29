"""Rule `prepare`: shuffle (data seed, or the authors' permutation), standardise, split 70/10/20, write NetCDF."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.data import prepare_split
from interplay.data.own import OwnDataset, load_own_table
from interplay.workflow_logging import log_to

dataset = snakemake.wildcards.dataset
own = snakemake.config["datasets"].get(dataset)
with log_to(snakemake.log[0]):
    extra = {}
    if own is not None:  # an own data set: its task, column names and source file
        table = load_own_table(OwnDataset.from_config(dataset, own))
        extra = {"task": table.dataset.task, "feature_names": table.features,
                 "source": {"path": table.dataset.path, "sha256": table.sha256}}
    prepare_split(
        snakemake.input[0],
        snakemake.output[0],
        dataset=dataset,
        seed=int(snakemake.wildcards.seed),
        standardise=snakemake.wildcards.standardise,
        split="authors" if snakemake.wildcards.order == "authors" else "shuffle",
        **extra,
    )
