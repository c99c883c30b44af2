"""logs and cancel: a rank's log, and stopping what a run started (only that: docs/security.md).

cancel signals only the run's own work: job ids the run recorded that are Slurm ids and that squeue
still shows under the run's job names, and local ranks that are still the processes the run started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc import config_io, redact, rundir

JOB_ID = re.compile(r"^\d+(_\d+)?$")  # a Slurm job id, or ID_N of an array task
# what reading a damaged run dir can raise; such a run is shown as "unreadable: why"
UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _errors():
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    return UNREADABLE + (yaml.YAMLError, OmegaConfBaseException)


def _rank_logs(sdir: Path) -> List[Path]:
    """A stage's logs in worker order: rank-R.log, or array-I-rank-R.log for array stages."""
    def key(p: Path):
        return [int(x) for x in p.stem.split("-") if x.isdigit()]
    return sorted((sdir / "logs").glob("*rank-*.log"), key=key) if (sdir / "logs").is_dir() else []


# ---------------------------------------------------------------- logs and cancel

def _fail(message: str) -> int:
    """Bad input: one paragraph on stderr, exit 2."""
    print(f"dfm_hpc: {redact.redact_text(message)}", file=sys.stderr)
    return 2


def _stages_of(run: Path) -> List[str]:
    """The run's stages from its config.yaml; ValueError if it cannot be read."""
    try:
        cfg = rundir.read_yaml(run / "config.yaml")
    except _errors() as e:
        raise ValueError(f"{run / 'config.yaml'} is unreadable ({_why(e)})") from None
    stages = cfg.get("stages") if isinstance(cfg, dict) else None
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages):
        raise ValueError(f"{run / 'config.yaml'} is damaged: it names no list of stages")
    return stages


def _pick_stage(run: Path, stage: Optional[str]) -> Optional[str]:
    stages = _stages_of(run)
    if stage:
        if stage not in stages:
            raise ValueError(f"{run.name} has no stage {stage!r}; its stages: {', '.join(stages) or 'none'}")
        return stage
    started = [s for s in stages if (rundir.stage_dir(run, s) / "logs").is_dir()]
    return started[-1] if started else (stages[0] if stages else None)


def _ranks(run: Path, stage: str) -> Optional[int]:
    """How many workers (ranks x array copies) the stage has, from plan.json or the config; None if unknown."""
    try:
        recs = rundir.read_plan(run) or []
        rec = next((r for r in recs if r.get("stage") == stage), None)
        job = (rec or {}).get("job") or rec
        if job and all(k in job for k in ("nodes", "tasks_per_node")):
            return int(job["nodes"]) * int(job["tasks_per_node"]) * int(job.get("array", 1))
        cfg = config_io.load_config(run, lenient=True)
        from dfm_hpc.plan import plan

        j = next(j for j in plan(cfg) if j.stage == stage)
        return j.world_size * j.array
    except Exception:  # an old or damaged run: the log files decide
        return None


def logs(ref: str, stage: Optional[str], rank: int, follow: bool, lines: int = 40, runs_root: str = "runs") -> int:
    try:
        run = rundir.point_dirs(rundir.resolve(ref, runs_root))[0]
        stage = _pick_stage(run, stage)
    except LookupError as e:
        return _fail(str(e))
    except _errors() as e:
        return _fail(str(e) if isinstance(e, ValueError) else f"{ref}: unreadable: {_why(e)}")
    if stage is None:
        return _fail(f"{run} runs no stage; there is no log to show")
    if lines < 0:
        return _fail(f"--lines {lines}: give a number of lines, 0 or more")
    n = _ranks(run, stage)
    if rank < 0 or (n is not None and rank >= n):
        have = f"0..{n - 1}" if n else "none"
        return _fail(f"--rank {rank}: stage {stage} of {run.name} has ranks {have}")
    sdir = rundir.stage_dir(run, stage)
    log = sdir / "logs" / f"rank-{rank}.log"
    workers = _rank_logs(sdir)
    if not log.exists() and rank < len(workers):  # array stages: --rank is the worker index
        log = workers[rank]
    if not log.exists():
        sub = sorted((sdir / "submitit").glob(f"*_{rank}_log.*")) if (sdir / "submitit").is_dir() else []
        if not sub and (not follow or _finished(sdir) or _dry(run)):
            why = "it was a dry run" if _dry(run) else "the stage has not started" if not _finished(sdir) \
                else "the stage ended without one"
            print(f"dfm_hpc: no log yet for stage {stage} rank {rank} ({why}; {log})", file=sys.stderr)
            return 1
        for f in sub:  # the job died before dfm_hpc took over its output
            print(f"==> {f} <==\n{f.read_text(errors='replace')}")
        if not follow:
            return 0
    pos = 0
    if log.exists():
        text = log.read_text(errors="replace").splitlines()
        print("\n".join(text[-lines:] if lines else []))
        pos = log.stat().st_size
    quiet_since = time.time()
    try:
        while follow:
            if log.exists() and log.stat().st_size > pos:
                with open(log, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                pos += len(data)
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
                quiet_since = time.time()
            elif _finished(sdir) and time.time() - quiet_since > 2:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return 0


def _finished(sdir: Path) -> bool:
    return any((sdir / m).exists() for m in ("DONE", "FAILED", "CANCELLED"))


def _dry(run: Path) -> bool:
    try:
        cfg = rundir.read_yaml(run / "config.yaml")
    except _errors():
        return False
    return isinstance(cfg, dict) and cfg.get("dry_run") is True


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
        names = {p: (rundir.read_yaml(p / "config.yaml") or {}).get("name") for p in points}
    except LookupError as e:
        return _fail(str(e))
    except _errors() as e:
        return _fail(f"{ref}: unreadable: {_why(e)}; cancel nothing (check squeue -u $USER by hand)")
    if all(_dry(p) for p in points):
        return _fail(f"{top} is a dry run: nothing was submitted, so there is nothing to cancel")
    ids, expected, notes = [], {}, []
    for point in points:
        for f in sorted((point / "stages").glob("*/job_id")):
            # (a linked stage of an earlier run: finished ones' jobs have left the queue, resumed
            # ones run in place under this run's job ids)
            jid = f.read_text(errors="replace").strip()
            if not JOB_ID.match(jid):
                notes.append(f"{f}: {jid[:40]!r} is not a Slurm job id; ignored")
                continue
            ids.append(jid)
            expected[jid] = f"dfm-{names[point]}-{f.parent.name}"
    todo, more = _own_jobs(ids, expected) if ids else ([], [])
    notes += more
    if todo:
        out = subprocess.run(["scancel", "--", *todo], capture_output=True, text=True)
        if out.returncode:
            print(f"dfm_hpc: scancel failed: {redact.redact_text(out.stderr.strip())}", file=sys.stderr)
            return 1
    stopped = []
    for point in points:
        for sdir in (point / "stages").glob("*"):
            if (sdir / "DONE").exists() or not sdir.is_dir():
                continue
            pids, why = rundir.own_processes(sdir, point)
            notes += why
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                    stopped.append(pid)
                except OSError as e:
                    notes.append(f"pid {pid}: {e.strerror}")
            if (sdir / "job_id").exists() or (sdir / "pids").exists() or (sdir / "logs").exists():
                (sdir / "CANCELLED").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    for n in notes:
        print(f"dfm_hpc: {n}", file=sys.stderr)
    what = [f"jobs {', '.join(todo)}"] if todo else []
    what += [f"local processes {', '.join(map(str, stopped))}"] if stopped else []
    print(f"cancelled {top}" + (f" ({'; '.join(what)})" if what else " (nothing was still running)"))
    return 0
