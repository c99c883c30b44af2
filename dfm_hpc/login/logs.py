"""`logs RUN [--stage S] [--rank R] [--follow]`: print or follow a rank's log (by default the last stage
that started, rank 0); submitit's own log where the job died before dfm_hpc took over its output."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

from dfm_hpc import config_io, rundir
from dfm_hpc.login.errors import errors, fail, why


def _stages_of(run: Path) -> List[str]:
    """The run's stages from its config.yaml; ValueError if it cannot be read."""
    try:
        cfg = rundir.read_yaml(run / rundir.CONFIG)
    except errors() as e:
        raise ValueError(f"{run / rundir.CONFIG} is unreadable ({why(e)})") from None
    stages = cfg.get("stages") if isinstance(cfg, dict) else None
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages):
        raise ValueError(f"{run / rundir.CONFIG} is damaged: it names no list of stages")
    return stages


def _pick_stage(run: Path, stage: Optional[str]) -> Optional[str]:
    stages = _stages_of(run)
    if stage:
        if stage not in stages:
            raise ValueError(f"{run.name} has no stage {stage!r}; its stages: {', '.join(stages) or 'none'}")
        return stage
    started = [s for s in stages if (rundir.stage_dir(run, s) / rundir.LOGS).is_dir()]
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
        return fail(str(e))
    except errors() as e:
        return fail(str(e) if isinstance(e, ValueError) else f"{ref}: unreadable: {why(e)}")
    if stage is None:
        return fail(f"{run} runs no stage; there is no log to show")
    if lines < 0:
        return fail(f"--lines {lines}: give a number of lines, 0 or more")
    n = _ranks(run, stage)
    if rank < 0 or (n is not None and rank >= n):
        have = f"0..{n - 1}" if n else "none"
        return fail(f"--rank {rank}: stage {stage} of {run.name} has ranks {have}")
    sdir = rundir.stage_dir(run, stage)
    log = rundir.rank_log(sdir, rank)
    workers = rundir.rank_logs(sdir)
    if not log.exists() and rank < len(workers):  # array stages: --rank is the worker index
        log = workers[rank]
    if not log.exists():
        submitit = sdir / rundir.SUBMITIT
        sub = sorted(submitit.glob(f"*_{rank}_log.*")) if submitit.is_dir() else []
        if not sub and (not follow or _finished(sdir) or rundir.is_dry_run(run)):
            reason = "it was a dry run" if rundir.is_dry_run(run) else "the stage has not started" \
                if not _finished(sdir) else "the stage ended without one"
            print(f"dfm_hpc: no log yet for stage {stage} rank {rank} ({reason}; {log})", file=sys.stderr)
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
    return any((sdir / m).exists() for m in rundir.ENDINGS)
