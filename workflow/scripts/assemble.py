"""Rule `assemble_figures`: every figure with its title and caption in results/figures/all.pdf."""
import os

# Only sampling jobs use a GPU: keep this job on the CPU so it never takes GPU memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from interplay.figures import TITLES
from interplay.figures.assemble import assemble_pdf, read_caption
from interplay.workflow_logging import log_to

with log_to(snakemake.log[0]):
    names, pngs, captions = snakemake.params.figures, snakemake.input.pngs, snakemake.input.captions
    entries = [(TITLES[name], png, read_caption(caption)) for name, png, caption in zip(names, pngs, captions)]
    assemble_pdf(entries, snakemake.output[0], study=snakemake.params.study)
