#!/usr/bin/env bash
# The test cluster's stand-in for LUMI's container: run a rank where Slurm's client commands
# (scontrol, sacct, squeue, sbatch, scancel, srun...) do not exist, as in the LUMI AI Factory
# images. bubblewrap mounts a copy of /usr/bin without them (made by slurm/start.sh) over
# /usr/bin in a private mount namespace; everything else is the host's (files, /dev, /tmp, pids).
#   slurm/sandbox.sh COMMAND [ARGS...]      (cluster=slurm renders it before the rank's python)
set -euo pipefail
BIN=${DFM_HPC_SANDBOX_BIN:-/usr/lib/dfm_hpc-sandbox/bin}
if [[ ! -x $BIN/bash ]] || ! command -v bwrap >/dev/null; then
    echo "sandbox.sh: no sandbox ($BIN or bwrap missing): run slurm/start.sh as root" >&2
    exit 127
fi
# Slurm's pre-timeout USR2 goes to every process of the step, bwrap's monitor too, which would
# die of it. An ignored signal stays ignored across exec; the rank installs its own handler.
trap '' USR2
exec bwrap --dev-bind / / --ro-bind "$BIN" /usr/bin --die-with-parent -- "$@"
