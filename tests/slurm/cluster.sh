#!/usr/bin/env bash
# Start or stop a one-node Slurm cluster on localhost, for tests/test_slurm.py and by hand.
#
#   tests/slurm/cluster.sh start DIR   # writes DIR/etc/slurm.conf, starts munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/etc/slurm.conf PATH=DIR/bin:$PATH   # then sbatch, squeue, snakemake use it
#   tests/slurm/cluster.sh stop DIR    # cancels its jobs, stops the three daemons by their pid files
#
# Everything (config, keys, sockets, state, logs, pid files) lives under DIR, which must be absolute and new
# or empty; nothing under /etc is read or changed. Settings (environment):
#   SLURM_TEST_PARTITION  partition name (default: debug)
#   SLURM_TEST_CPUS       CPUs the node offers (default: the machine's, at least 2)
#   SLURM_TEST_MEMORY_MB  memory the node offers (default: 16000; not enforced)
#   SLURM_TEST_GPUS       fake GPUs the node offers, 1 to 4 (default: 1)
# The fake GPUs are gres gpu with device files /dev/null, /dev/zero, ...: a job that asks for one gets
# CUDA_VISIBLE_DEVICES=0 (or 1, ...), so GPU requests are scheduled and checked as on a real cluster.
# No systemd and no slurmdbd are needed; see tests/slurm/slurm.conf.in for why each setting is there.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "cluster.sh: $*" >&2; exit 1; }

usage() { die "usage: $0 start|stop DIR"; }

free_port() {
    # a random port nothing listens on (bash's /dev/tcp connects when something does)
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

show_logs() {
    local file
    for file in "$dir"/log/*.log "$dir"/munge/munged.log; do
        [[ -f $file ]] || continue
        echo "----- $file (last 30 lines)" >&2
        tail -n 30 "$file" >&2
    done
}

wait_for() {
    # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            show_logs
            die "timed out after ${seconds}s waiting for $what"
        fi
        sleep 0.2
    done
}

node_idle() {
    [[ $(sinfo -h -N -o %T 2>/dev/null) == idle ]]
}

start() {
    for binary in munged munge slurmctld slurmd sinfo; do
        command -v "$binary" >/dev/null || die "$binary not found: run .ci/slurm-setup.sh"
    done
    mkdir -p "$dir"
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
    chmod 755 "$dir"
    mkdir -p "$dir"/{etc,munge,state,spool,run,log}

    local user host cpus memory_mb partition gpus gpu_files
    user=$(id -un)
    host=$(hostname -s)
    cpus=${SLURM_TEST_CPUS:-$(nproc)}
    ((cpus >= 2)) || cpus=2
    memory_mb=${SLURM_TEST_MEMORY_MB:-16000}
    partition=${SLURM_TEST_PARTITION:-debug}
    gpus=${SLURM_TEST_GPUS:-1}
    local devices=(/dev/null /dev/zero /dev/full /dev/urandom)
    ((gpus >= 1 && gpus <= ${#devices[@]})) || die "SLURM_TEST_GPUS must be 1 to ${#devices[@]}: $gpus"
    gpu_files=$(IFS=,; echo "${devices[*]:0:gpus}")

    local ctld_port slurmd_port template
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    for template in slurm.conf gres.conf; do
        sed -e "s|@CLUSTER@|interplay-test|g" -e "s|@HOST@|$host|g" -e "s|@USER@|$user|g" \
            -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@DIR@|$dir|g" \
            -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY_MB@|$memory_mb|g" -e "s|@PARTITION@|$partition|g" \
            -e "s|@GPUS@|$gpus|g" -e "s|@GPU_FILES@|$gpu_files|g" \
            "$here/$template.in" >"$dir/etc/$template"
    done
    export SLURM_CONF="$dir/etc/slurm.conf"

    # Inside a job, snakemake-executor-plugin-slurm-jobstep (0.6) drops SLURM_CONF before it calls srun, and
    # srun then looks for /etc/slurm/slurm.conf: jobs need PATH to start with DIR/bin, where srun knows its
    # config.
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" >"$dir/bin/srun"
    chmod 755 "$dir/bin/srun"

    # munged refuses world-readable keys and runs as the munge user where we are root
    local socket="$dir/munge/munge.socket"
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chmod 755 "$dir/munge"  # clients need to reach the socket
    chmod 600 "$dir/munge/munge.key"
    local munged=(munged --socket="$socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid"
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed")
    if [[ $(id -u) -eq 0 ]] && id munge >/dev/null 2>&1; then
        chown -R munge: "$dir/munge"
        runuser -u munge -- "${munged[@]}"
    else
        "${munged[@]}"
    fi
    wait_for 20 "munged" bash -c "munge -n -S '$socket' | unmunge -S '$socket'"

    slurmctld -f "$SLURM_CONF"
    wait_for 30 "slurmctld" scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for 60 "node $host to become idle" node_idle
    echo "cluster.sh: Slurm is up: export SLURM_CONF=$SLURM_CONF PATH=$dir/bin:\$PATH (partition $partition, $cpus CPUs, $gpus GPUs)"
}

stop_daemon() {
    # stop_daemon PIDFILE NAME: TERM the process named NAME whose pid PIDFILE holds, KILL it after 10 s
    local pidfile=$1 name=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # the pid may have been reused by now: only signal the daemon we started
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name"* ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "cluster.sh: $name ($pid) ignored TERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

stop_daemons() {
    stop_daemon "$dir/run/slurmd.pid" slurmd
    stop_daemon "$dir/run/slurmctld.pid" slurmctld
    stop_daemon "$dir/munge/munged.pid" munged
}

stop() {
    export SLURM_CONF="$dir/etc/slurm.conf"
    [[ -f $SLURM_CONF ]] || die "no cluster in $dir"
    # cancel this cluster's jobs first, so that no job step outlives slurmd
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(squeue -h -t running,completing -o %A 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_daemons
    echo "cluster.sh: stopped the cluster in $dir"
}

[[ $# -eq 2 ]] || usage
dir=$2
[[ $dir == /* ]] || die "DIR must be an absolute path: $dir"
case $1 in
    start)
        # a start that fails half way stops the daemons it already started
        trap 'stop_daemons' EXIT
        start
        trap - EXIT
        ;;
    stop) stop ;;
    *) usage ;;
esac
