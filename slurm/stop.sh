#!/usr/bin/env bash
# Stop the local test Slurm cluster started by slurm/start.sh: slurmd, slurmctld,
# slurmdbd, and leftover slurmstepd with their job processes. With --all, also
# stop munged and mariadbd. Run as root; safe to run when nothing is running.
set -euo pipefail

SCRATCH=${SLURM_SCRATCH:-/tmp/dfm_hpc-slurm}
names='slurmd|slurmctld|slurmdbd'
[[ ${1:-} == --all ]] && names+='|munged|mariadbd'

# Jobs: SIGKILL slurmstepd (it ignores SIGTERM once its slurmd is gone) and
# all its descendants (the job processes, which would otherwise be orphaned).
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
steps=()
for p in $(pgrep -x slurmstepd || true); do steps+=("$p" $(descendants "$p")); done
((${#steps[@]})) && kill -9 "${steps[@]}" 2>/dev/null || true

# Daemons: SIGTERM the live (non-zombie) ones, SIGKILL those still alive after 10 s.
live() { ps -eo pid=,stat=,comm= | awk -v re="^($names)\$" '$2 !~ /^Z/ && $3 ~ re { print $1 }'; }
pids=($(live))
if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do  # up to 10 s for a clean shutdown, then SIGKILL
        alive=($(ps -o pid=,stat= -p "$(IFS=,; echo "${pids[*]}")" | awk '$2 !~ /^Z/ { print $1 }' || true))
        ((${#alive[@]})) || break
        sleep 0.2
    done
    ((${#alive[@]})) && kill -9 "${alive[@]}" 2>/dev/null || true
fi
rm -f "$SCRATCH"/*.pid
