"""The three ways a launch ends, once its run dirs exist: a dry run (scripts rendered and printed),
local processes (cluster=local), or Slurm jobs (one after the other, sweep points as arrays).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

from dfm_hpc import redact, rundir
from dfm_hpc.login import console, shell
from dfm_hpc.login.point import LaunchPoint
from dfm_hpc.plan import job_record


def _job_name(cfg, stage: str) -> str:
    return f"dfm-{cfg.name}-{stage}"


def _top(points: List[LaunchPoint], sweep: bool) -> Path:
    """The run dir the user follows: the sweep dir, or the one run dir."""
    return points[0].run_dir.parent if sweep else points[0].run_dir


def dry_run(points: List[LaunchPoint], sweep: bool) -> int:
    from dfm_hpc.login import slurm

    shown = next((p for p in points if p.todo), points[0])  # rerun --failed: a kept point runs nothing
    for p in points:
        cfg, d = p.cfg, p.run_dir
        for j in p.todo:
            sdir = rundir.stage_dir(d, j.stage)
            sdir.mkdir(parents=True, exist_ok=True)
            if cfg.cluster.scheduler == "local":
                text = (f"# cluster={cfg.cluster.name}: {j.world_size} processes of\n"
                        f"{sys.executable} -m dfm_hpc.job.rank {d} {j.stage}\n")
                if j.cluster.get("visible_devices"):  # cluster=node: the GPUs its ranks get (local.node_gpus)
                    var, _, ids = j.cluster.visible_devices.partition("=")
                    text += f"# each with {var}={','.join(ids.split(',')[:j.gpus_per_node])} and LOCAL_RANK=0..\n"
            else:
                dep = f"afterok:<job id of {j.after}>" if j.after and j.after not in p.reuse else None
                params = _without_bad_nodes(slurm.executor_params(j, j.cluster, _job_name(cfg, j.stage), dep), [d])
                text = slurm.render(params, sdir / rundir.SUBMITIT, slurm.python_command(cfg.cluster, j.stage),
                                    j.array, j)
            (sdir / rundir.SBATCH).write_text(text)
            if p is shown:
                srun = slurm.srun_line(text) if cfg.cluster.scheduler == "slurm" else None
                console.script(j.stage, sdir / rundir.SBATCH, text, srun)
    console.dry_run_done(len(points) if sweep else None)
    return 0


def run_local(points: List[LaunchPoint]) -> int:
    from dfm_hpc.login import checkpoint_evals, local

    for p in points:
        d = p.run_dir
        for j in p.todo:
            console.local_stage(j, rundir.stage_dir(d, j.stage).relative_to(d) / rundir.LOGS)  # run dir: printed
            try:
                code = local.run_ranks(d, j, j.cluster)
            except local.Interrupted as e:
                console.local_interrupted(str(e), j.stage, d)
                return 128 + e.signum
            if not code:  # no sbatch here: the stage's kept checkpoints are scored now, before the next stage
                checkpoint_evals.score_local(d, j)
            if code:
                console.local_failed(j.stage, code, d)
                return 1
    top = _top(points, len(points) > 1)
    opened = [(name, path) for p in points  # what a person wants to open next
              for name, path in (("model card", rundir.stage_dir(p.run_dir, "card") / "README.md"),
                                 ("evaluation", rundir.stage_dir(p.run_dir, "evaluate") / "results.md"))
              if path.exists()]
    console.local_done(top, opened)
    from dfm_hpc.login import status

    # the summary: each stage's state and time against the plan's prediction (full logs: the run dir)
    status.status(str(top))
    return 0


def submit_slurm(points: List[LaunchPoint], sweep: bool) -> int:
    """Stage by stage; sweep points with identical jobs go out as one array (aftercorr chains)."""
    from dfm_hpc.login import slurm

    live = [p for p in points if p.todo]  # rerun --failed keeps the other points as they are: nothing to queue
    same = len({_submission(p) for p in live}) == 1
    arrays = any(j.array > 1 for p in live for j in p.jobs)  # a stage array can't also be a sweep array
    groups = [live] if same and not arrays else [[p] for p in live]
    queued: List[str] = []
    try:
        for members in groups:
            with _secrets_in_env(members[0].cfg):
                _submit_group(members, members[0].cfg, slurm.python_command(members[0].cfg.cluster), queued)
    except (Exception, KeyboardInterrupt) as e:  # sbatch refused, or SIGINT: withdraw what this launch queued
        if queued:
            subprocess.run(["scancel", "--", *queued], capture_output=True)
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else redact.redact_text(str(e).strip())
        console.submit_failed(why, queued, _top(points, sweep))
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    console.queued(_top(points, sweep), points[0].run_dir)
    return 0


def _without_bad_nodes(params: dict, run_dirs: List[Path]) -> dict:
    """The nodes the runs found bad (the hang watchdog's `bad_nodes`, kept by rerun) are excluded."""
    bad = list(dict.fromkeys(n for d in run_dirs for n in rundir.bad_nodes(d)))
    return {**params, "exclude": ",".join(bad)} if bad else params


def _submission(p: LaunchPoint) -> str:
    """What Slurm gets for a point: its planned jobs and the cluster settings their scripts are made of. Sweep
    points go out as one array (the first point's script) only when these are equal, so that a sweep over
    cluster.env, the image or the account never runs every point with the first point's settings."""
    from dfm_hpc.login import slurm

    jobs = [[job_record(j), slurm.executor_params(j, j.cluster, "")] for j in p.todo]
    return json.dumps([jobs, slurm.python_command(p.cfg.cluster), shell.secret_env(p.cfg.cluster.env)],
                      sort_keys=True, default=str)


@contextmanager
def _secrets_in_env(cfg):
    """Secrets reach the jobs by name: sbatch passes its environment on (--export=ALL) and the script has none.
    Set for this point's submissions only, so that one point's secret never reaches another point's jobs."""
    secrets = shell.secret_env(cfg.cluster.env)
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _submit_group(members: List[LaunchPoint], cfg, python: str, queued: List[str]) -> None:
    """One afterok chain: of one point, or of an array of sweep points with identical jobs (the first's)."""
    from dfm_hpc.login import slurm

    prev: Optional[str] = None  # job id (or array id) of the previous stage
    for j in members[0].todo:
        if prev is None:
            dep = None
        else:  # point i waits for its own point of the previous array; else the whole job
            dep = f"aftercorr:{prev}" if len(members) > 1 else f"afterok:{prev}"
        run_dirs = [p.run_dir for p in members]
        params = _without_bad_nodes(slurm.executor_params(j, j.cluster, _job_name(cfg, j.stage), dep), run_dirs)
        folder = (run_dirs[0].parent / rundir.SWEEP_SUBMITIT / j.stage) if len(members) > 1 else \
            rundir.stage_dir(run_dirs[0], j.stage) / rundir.SUBMITIT
        # one array task per sweep point, or per copy of a stage with array > 1
        calls = [(str(d), j.stage, 0) for d in run_dirs] if len(members) > 1 else \
            [(str(run_dirs[0]), j.stage, i) for i in range(j.array)]
        py = slurm.python_command(cfg.cluster, j.stage) if j.stage == "evaluate" else python  # + harness overlay
        script = slurm.render(params, folder, py, array_size=len(calls), job=j)
        jobs = slurm.submit(params, folder, py, calls, job=j)
        prev = str(jobs[0].job_id).split("_")[0]
        for d, job in zip(run_dirs, jobs):
            sdir = rundir.stage_dir(d, j.stage)
            sdir.mkdir(parents=True, exist_ok=True)
            # a stage array is followed as a whole (its array job id)
            (sdir / rundir.JOB_ID).write_text((str(job.job_id) if len(members) > 1 else prev) + "\n")
            (sdir / rundir.SBATCH).write_text(script)
        ids = prev if len(jobs) == 1 else f"{prev} (array of {len(jobs)})"
        queued.append(prev)
        console.queued_stage(j, ids, dep)
