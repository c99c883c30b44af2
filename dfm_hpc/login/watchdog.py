"""The hang watchdog of a Slurm job: the batch script's lines (its limit: predict.hang_minutes).

The ranks beat (job/heartbeat.py); the batch script, on the host where Slurm's tools are, runs
watchdog.sh's loop beside the step. When no rank has made progress for the limit it names the
node that hung (a frozen process, else the one working while the others wait in a collective),
ends the step, records the node in the run dir's `bad_nodes`, excludes it from the chain's
waiting jobs, and requeues the job without it (a stage that resumes) or fails it with the reason.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List

from dfm_hpc.rundir import HEARTBEAT_TICK_S, HEARTBEATS_ENV

SCRIPT = Path(__file__).with_name("watchdog.sh")


def setup_lines(folder: Path, job, resumable: bool) -> List[str]:
    """Before the step: the heartbeat folder, the limits, the functions, the loop in the background."""
    if not job.hang_minutes:
        return []
    f = shlex.quote(str(folder))
    job_id = '."$SLURM_JOB_ID"'  # per job, like the requeue marker
    return [
        f"# hang watchdog: no progress for {job.hang_minutes:g} min ends the step (docs/lumi.md#hangs-and-bad-nodes)",
        f"export {HEARTBEATS_ENV}={f}/heartbeat{job_id}",
        f"export DFM_HPC_HUNG_MARKER={f}/hung{job_id}",
        f'rm -rf "${HEARTBEATS_ENV}" "$DFM_HPC_HUNG_MARKER"',
        f"DFM_HPC_HANG_S={max(1, round(job.hang_minutes * 60))} DFM_HPC_TICK_S={HEARTBEAT_TICK_S} "
        f"DFM_HPC_RESUMABLE={int(resumable)} DFM_HPC_MAX_RESTARTS={job.cluster.max_restarts} "
        f"DFM_HPC_STAGE={shlex.quote(job.stage)}",
        *SCRIPT.read_text().rstrip().splitlines(),
        "dfm_hpc_watchdog & dfm_hpc_watchdog_pid=$!",
    ]


def teardown_lines(job) -> List[str]:
    """After the step, before the end-state rule: stop the loop; a step it ended goes to dfm_hpc_after_hang."""
    if not job.hang_minutes:
        return []
    return ['kill "$dfm_hpc_watchdog_pid" 2>/dev/null',
            '[ -e "$DFM_HPC_HUNG_MARKER" ] && dfm_hpc_after_hang  # exits: requeued without the bad node, or failed']
