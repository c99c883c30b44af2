"""`cancel RUN`: stop what a run started, and only that (docs/security.md).

cancel signals only the run's own work: job ids the run recorded that are Slurm ids and that squeue
still shows under the run's job names, and local ranks that are still the processes the run started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Tuple

from dfm_hpc import accounting, redact, rundir
from dfm_hpc.login.errors import errors, fail, why


def _own_jobs(ids: List[str], names: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """(ids to cancel, notes): only the recorded ids whose queued job still has the name this run
    gave it (dfm-<name>-<stage>); an id Slurm no longer queues needs nothing, one that is now
    someone else's job (or renamed) is reported and left alone."""
    try:
        p = subprocess.run(["squeue", "-h", "-j", ",".join(sorted({i.split("_")[0] for i in ids})), "-o", "%F|%i|%j"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], [f"squeue could not say which jobs are still queued ({e}); nothing was cancelled"]
    if p.returncode:  # one id Slurm has forgotten: "Invalid job id"; anything else is a real failure
        return [], [] if "Invalid job id" in p.stderr else [
            f"squeue failed ({p.stderr.strip()[:200]}); nothing was cancelled"]
    out = p.stdout
    queued: Dict[str, str] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            queued[parts[0]] = parts[2]
            queued[parts[1]] = parts[2]
    todo, notes = [], []
    for jid in ids:
        base = jid.split("_")[0]
        name = queued.get(jid, queued.get(base))
        if name is None:
            continue  # finished: nothing to cancel
        if name != names[jid]:
            notes.append(f"job {jid} is named {name!r}, not {names[jid]!r}: not this run's job, left alone")
        else:
            todo.append(jid)
    return todo, notes


def cancel(ref: str, runs_root: str = "runs") -> int:
    """scancel this run's own queued jobs, SIGTERM its own local ranks; tampered or stale records
    are reported, never acted on."""
    try:
        top = rundir.resolve(ref, runs_root)
        points = rundir.point_dirs(top)
        names = {p: (rundir.read_yaml(p / rundir.CONFIG) or {}).get("name") for p in points}
    except LookupError as e:
        return fail(str(e))
    except errors() as e:
        return fail(f"{ref}: unreadable: {why(e)}; cancel nothing (check squeue -u $USER by hand)")
    if all(rundir.is_dry_run(p) for p in points):
        return fail(f"{top} is a dry run: nothing was submitted, so there is nothing to cancel")
    ids, expected, notes = [], {}, []
    for point in points:
        # each stage's job, and the checkpoint evaluations its training job queued (login/checkpoint_evals.py)
        evals = (point / rundir.STAGES_DIR).glob(f"*/{rundir.CHECKPOINT_EVALS}/step-*.{rundir.JOB_ID}")
        for f in [*sorted((point / rundir.STAGES_DIR).glob(f"*/{rundir.JOB_ID}")), *sorted(evals)]:
            # (a linked stage of an earlier run: finished ones' jobs have left the queue, resumed
            # ones run in place under this run's job ids)
            jid = f.read_text(errors="replace").strip()
            if not accounting.JOB_ID_RE.match(jid):
                notes.append(f"{f}: {jid[:40]!r} is not a Slurm job id; ignored")
                continue
            ids.append(jid)
            stage = f.parent.name if f.name == rundir.JOB_ID else f"{f.parents[1].name}-ckpt-eval"
            expected[jid] = f"dfm-{names[point]}-{stage}"
    todo, more = _own_jobs(ids, expected) if ids else ([], [])
    notes += more
    if todo:
        out = subprocess.run(["scancel", "--", *todo], capture_output=True, text=True)
        if out.returncode:
            print(f"dfm_hpc: scancel failed: {redact.redact_text(out.stderr.strip())}", file=sys.stderr)
            return 1
    stopped = []
    for point in points:
        for sdir in (point / rundir.STAGES_DIR).glob("*"):
            if (sdir / rundir.DONE).exists() or not sdir.is_dir():
                continue
            pids, stale = rundir.own_processes(sdir, point)
            notes += stale
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                    stopped.append(pid)
                except OSError as e:
                    notes.append(f"pid {pid}: {e.strerror}")
            if any((sdir / m).exists() for m in (rundir.JOB_ID, rundir.PIDS, rundir.LOGS)):
                (sdir / rundir.CANCELLED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    for n in notes:
        print(f"dfm_hpc: {n}", file=sys.stderr)
    what = [f"jobs {', '.join(todo)}"] if todo else []
    what += [f"local processes {', '.join(map(str, stopped))}"] if stopped else []
    print(f"cancelled {top}" + (f" ({'; '.join(what)})" if what else " (nothing was still running)"))
    return 0
