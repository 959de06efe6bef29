#!/usr/bin/env bash
# Install the Debian packages a one-node local Slurm test cluster needs (tests/test_slurm.py).
# Idempotent: installs nothing when the binaries are already there. Needs root (or sudo).
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)
binaries=(slurmctld slurmd sbatch srun squeue scontrol sinfo munged munge)

missing=0
for binary in "${binaries[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$binary" >/dev/null 2>&1 || missing=1
done
if [[ $missing -eq 0 ]]; then
    echo "slurm-setup: slurm and munge already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm-setup: apt-get not found; install ${packages[*]} with this system's package manager" >&2
    exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "slurm-setup: need root or sudo to install ${packages[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# No recommends: the test cluster runs without slurmdbd, MariaDB or systemd services.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
echo "slurm-setup: installed ${packages[*]}"
