"""The three ways a launch ends, once its run dirs exist: a dry run (scripts rendered and printed),
local processes (cluster=local), or Slurm jobs (one after the other, sweep points as arrays).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, Optional

from rich.markup import escape

from dfm_hpc import redact, rundir
from dfm_hpc.login import shell
from dfm_hpc.plan import StageJob, job_record


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _todo(jobs: List[StageJob], point) -> List[StageJob]:
    return [j for j in jobs if j.stage not in point.reuse]


def _job_name(cfg, stage: str) -> str:
    return f"dfm-{cfg.name}-{stage}"


def dry_run(cfgs, plans, points, dirs, sweep) -> int:
    from dfm_hpc.login import slurm

    con = _console()
    for i, (cfg, jobs, p, d) in enumerate(zip(cfgs, plans, points, dirs)):
        for j in _todo(jobs, p):
            sdir = rundir.stage_dir(d, j.stage)
            sdir.mkdir(parents=True, exist_ok=True)
            if cfg.cluster.scheduler == "local":
                text = (f"# cluster=local: {j.world_size} processes of\n"
                        f"{sys.executable} -m dfm_hpc.job.rank {d} {j.stage}\n")
            else:
                dep = f"afterok:<job id of {j.after}>" if j.after and j.after not in p.reuse else None
                params = slurm.executor_params(j, j.cluster, _job_name(cfg, j.stage), dep)
                text = slurm.render(params, sdir / rundir.SUBMITIT, slurm.python_command(cfg.cluster), j.array)
            (sdir / rundir.SBATCH).write_text(text)
            if i == 0:
                con.rule(f"{j.stage}: {sdir / rundir.SBATCH}")
                con.print(text, markup=False)
                if cfg.cluster.scheduler == "slurm":
                    con.print(f"# srun line:\n{slurm.srun_line(text)}", markup=False)
    if sweep:
        con.print(f"(scripts of all {len(dirs)} points are in their run dirs)")
    con.print("[bold]dry run[/]: nothing was submitted")
    return 0


def run_local(cfgs, plans, points, dirs) -> int:
    from dfm_hpc.login import local

    con = _console()
    for cfg, jobs, p, d in zip(cfgs, plans, points, dirs):
        for j in _todo(jobs, p):
            logs = rundir.stage_dir(d, j.stage).relative_to(d) / rundir.LOGS  # the run dir was printed above
            con.rule(escape(f"{j.stage}: {j.world_size} local rank{'s' * (j.world_size != 1)} (logs: {logs})"))
            try:
                code = local.run_ranks(d, j, j.cluster)
            except local.Interrupted as e:
                con.print(f"interrupted ({e}): stopped the ranks of stage {j.stage}, marked it CANCELLED; "
                          f"continue with: python -m dfm_hpc rerun {d}", markup=False)
                return 128 + e.signum
            if code:
                con.print(f"[bold red]stage {j.stage} failed[/] (exit {code}); later stages not run. "
                          f"See: python -m dfm_hpc logs {d} --stage {j.stage}")
                return 1
    con.print(f"status: python -m dfm_hpc status {dirs[0].parent if len(dirs) > 1 else dirs[0]}")
    for d in dirs:  # what a person wants to open next
        for name, path in (("model card", rundir.stage_dir(d, "card") / "README.md"),
                           ("evaluation", rundir.stage_dir(d, "evaluate") / "results.md")):
            if path.exists():
                con.print(f"{name}: {path}")
    from dfm_hpc.login import status

    # the summary: each stage's state and time against the plan's prediction (full logs: the run dir)
    status.status(str(dirs[0].parent if len(dirs) > 1 else dirs[0]))
    return 0


def submit_slurm(cfgs, plans, points, dirs, sweep) -> int:
    """Stage by stage; sweep points with identical jobs go out as one array (aftercorr chains)."""
    from dfm_hpc.login import slurm

    con = _console()
    cfg = cfgs[0]
    python = slurm.python_command(cfg.cluster)
    # secrets reach the jobs by name: sbatch passes its environment on (--export=ALL), the script has none
    os.environ.update(shell.secret_env(cfg.cluster.env))
    same = len({json.dumps([job_record(j) for j in _todo(jobs, p)]) for jobs, p in zip(plans, points)}) == 1
    arrays = any(j.array > 1 for jobs in plans for j in jobs)  # a stage array can't also be a sweep array
    groups = [list(range(len(points)))] if same and not arrays else [[i] for i in range(len(points))]
    queued: List[str] = []
    try:
        _submit_groups(cfgs, plans, points, dirs, groups, python, queued)
    except (Exception, KeyboardInterrupt) as e:  # sbatch refused, or SIGINT: withdraw what this launch queued
        if queued:
            subprocess.run(["scancel", "--", *queued], capture_output=True)
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else redact.redact_text(str(e).strip())
        con.print(f"[bold red]submission failed[/]: {escape(why)}")
        if queued:
            con.print(f"cancelled the jobs this launch had queued: {', '.join(queued)}")
        con.print(f"the snapshot stays in {dirs[0].parent if sweep else dirs[0]}; fix the cause, then "
                  "python -m dfm_hpc rerun <that dir>", markup=False)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    top = dirs[0].parent if sweep else dirs[0]
    con.print("queued; follow with:\n"
              f"  python -m dfm_hpc status {top}\n"
              f"  python -m dfm_hpc logs {dirs[0]} --follow\n"
              f"  python -m dfm_hpc cancel {top}")
    return 0


def _submit_groups(cfgs, plans, points, dirs, groups, python, queued: List[str]) -> None:
    from dfm_hpc.login import slurm

    con = _console()
    cfg = cfgs[0]
    for members in groups:
        prev: Optional[str] = None  # job id (or array id) of the previous stage
        for j in _todo(plans[members[0]], points[members[0]]):
            if prev is None:
                dep = None
            else:  # point i waits for its own point of the previous array; else the whole job
                dep = f"aftercorr:{prev}" if len(members) > 1 else f"afterok:{prev}"
            params = slurm.executor_params(j, j.cluster, _job_name(cfg, j.stage), dep)
            run_dirs = [dirs[i] for i in members]
            folder = (dirs[0].parent / rundir.SWEEP_SUBMITIT / j.stage) if len(members) > 1 else \
                rundir.stage_dir(run_dirs[0], j.stage) / rundir.SUBMITIT
            # one array task per sweep point, or per copy of a stage with array > 1
            calls = [(str(d), j.stage, 0) for d in run_dirs] if len(members) > 1 else \
                [(str(run_dirs[0]), j.stage, i) for i in range(j.array)]
            script = slurm.render(params, folder, python, array_size=len(calls))
            jobs = slurm.submit(params, folder, python, calls)
            prev = str(jobs[0].job_id).split("_")[0]
            for d, job in zip(run_dirs, jobs):
                sdir = rundir.stage_dir(d, j.stage)
                sdir.mkdir(parents=True, exist_ok=True)
                # a stage array is followed as a whole (its array job id)
                (sdir / rundir.JOB_ID).write_text((str(job.job_id) if len(members) > 1 else prev) + "\n")
                (sdir / rundir.SBATCH).write_text(script)
            ids = prev if len(jobs) == 1 else f"{prev} (array of {len(jobs)})"
            queued.append(prev)
            con.print(f"  {j.stage:<10} job {ids}  {j.nodes} node(s) x {j.tasks_per_node} rank(s)"
                      + (f", after {dep}" if dep else ""))
