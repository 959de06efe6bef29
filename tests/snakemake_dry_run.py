"""Test helper: the jobs `snakemake -n` would run in a directory (for "a restored bundle rebuilds
figures without sampling")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def dry_run_jobs(workdir: Path | str, *targets: str, extra_args: tuple[str, ...] = ()) -> dict[str, int]:
    """Jobs ``snakemake -n`` would run in ``workdir``: ``{rule: count}`` (empty when nothing to do)."""
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
               *extra_args, *targets]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake -n failed in {workdir}:\n{done.stdout}\n{done.stderr}")
    jobs: dict[str, int] = {}
    in_table = False
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        words = line.split()
        if words[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(words) == 2 and words[1].isdigit() and words[0] != "total":
                jobs[words[0]] = int(words[1])
            elif words and set(words[0]) != {"-"} and words[0] != "total":
                in_table = False
    return jobs
