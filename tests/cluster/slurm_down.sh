#!/usr/bin/env bash
# Stop exactly the daemons tests/cluster/slurm_up.sh started (their PIDs are in $SLURM_STATE/pids).
set -uo pipefail
STATE=${SLURM_STATE:-/tmp/resnet_jax_slurm}
[[ -s "$STATE/pids" ]] || { echo "no SLURM started by slurm_up.sh"; exit 0; }
pids=$(tac "$STATE/pids")  # the reverse of their start: slurmd, slurmctld, slurmdbd, MariaDB, munged
kill $pids 2>/dev/null
for _ in $(seq 100); do
    alive=$(for pid in $pids; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done)
    [[ -z "$alive" ]] && break
    sleep 0.1
done
[[ -n "${alive:-}" ]] && kill -9 $alive 2>/dev/null
: >"$STATE/pids"
echo "SLURM stopped"
