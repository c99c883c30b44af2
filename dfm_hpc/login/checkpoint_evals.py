"""Checkpoint evaluations (`sft.eval_checkpoints` / `cpt.eval_checkpoints`), login side: the training job's
host-side lines, the small evaluate job's script (rendered at plan time, beside the training job's), the local
route, and the checks. docs/evaluation.md#checkpoint-evaluation.

Training never waits for a score:
- rank 0, at each N-th save, links the checkpoint's weights into stages/<stage>/checkpoint_evals/step-<N>/ (hard
  links: no copy, and the Trainer's rotation (`keep_checkpoints`) can delete checkpoint-<N> meanwhile) and names
  it in the job's queue folder (job/checkpoint_snapshot.py);
- the batch script, on the host where sbatch is, runs checkpoint_evals.sh's loop beside the step: each named
  checkpoint gets its own one-device job (LUMI: a small-g GCD, cluster.single_device) running
  `python -m dfm_hpc.job.checkpoint_eval RUN STAGE STEP`; a last pass after the step queues the final save's;
- with cluster=local there is no sbatch: the checkpoints are scored one after the other once the stage's ranks
  have exited, before the next stage starts (`score_local`).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from dfm_hpc import rundir
from dfm_hpc.plan import StageJob

SCRIPT = Path(__file__).with_name("checkpoint_evals.sh")
EVAL_SCRIPT = "checkpoint_eval.sh"  # in the training job's submitit folder: the evaluate job's batch script
TICK_S = 10  # how often the loop looks for a checkpoint to queue (only latency: training never waits)
ENTRY = "-u -m dfm_hpc.job.checkpoint_eval"


_MERGED: Dict[int, tuple] = {}  # id of a frozen cluster -> (it, its single_device merge): ~15 ms each


def eval_job(job: StageJob) -> StageJob:
    """One checkpoint's evaluate job: one process on one device, in the profile's single-device place (LUMI: a
    small-g GCD) when it has one, else one of the training job's GPUs."""
    from omegaconf import OmegaConf

    cl = job.cluster
    sd = cl.get("single_device")
    if sd:
        hit = _MERGED.get(id(cl))
        if hit is None or hit[0] is not cl:
            merged = OmegaConf.merge(cl, {**sd, "single_device": None, "cpu_only": None})
            hit = (cl, merged)
            if OmegaConf.is_readonly(cl):  # a frozen cluster cannot change: a sweep's points share their jobs'
                OmegaConf.set_readonly(merged, True)
                if len(_MERGED) > 64:
                    _MERGED.clear()
                _MERGED[id(cl)] = hit
        cl = hit[1]
    gpus = cl.gpus_per_node if sd else min(job.gpus_per_node, 1)
    return StageJob(stage=job.stage, nodes=1, tasks_per_node=1, gpus_per_node=gpus,
                    cpus_per_task=cl.cpus_per_task if sd else job.cpus_per_task, minutes=job.eval_minutes,
                    partition=cl.partition if sd else job.partition, after=None, cluster=cl)


def script(params: Dict[str, Any], folder: Path, job: StageJob, python: str) -> str:
    """The evaluate job's batch script from its own executor parameters (slurm.executor_params of eval_job): the
    training job's environment and container, one device, no requeue; its arguments (RUN STAGE STEP) come from
    the host side's sbatch."""
    from submitit.slurm.slurm import _make_sbatch_string

    from dfm_hpc.login import shell

    extra = {k: v for k, v in params["additional_parameters"].items() if k not in ("requeue", "kill-on-invalid-dep")}
    params = {**params, "additional_parameters": extra}
    shell.check_params([params, str(folder), python])
    head = [f"# dfm_hpc: one checkpoint of {job.stage}, scored (login/checkpoint_evals.py); queued by the training "
            "job's host side with RUN_DIR STAGE STEP"]
    text = _make_sbatch_string(command=f'{python} {ENTRY} "$@"', folder=Path(folder) / rundir.CHECKPOINT_EVALS,
                               **params)
    first, rest = text.split("\n", 1)
    return "\n".join([first, *head, rest])


def write_script(params: Dict[str, Any], folder: Path, job: StageJob, python: str) -> None:
    (Path(folder) / rundir.CHECKPOINT_EVALS).mkdir(parents=True, exist_ok=True)  # srun's output goes there
    (Path(folder) / EVAL_SCRIPT).write_text(script(params, folder, job, python))


def setup_lines(folder: Path, job: StageJob) -> List[str]:
    """Before the step: the queue folder rank 0 writes to, the evaluate job's script, the loop in the background."""
    if not job.eval_checkpoints:
        return []
    f = shlex.quote(str(folder))
    n = job.eval_checkpoints
    nth = "each saved checkpoint" if n == 1 else f"one saved checkpoint in {n} (counted in order)"
    return [
        f"# checkpoint evaluations: {nth} is scored by its own job ({f}/{EVAL_SCRIPT}: 1 task, "
        f"{eval_job(job).gpus_per_node} GPU, {job.eval_minutes} min); training never waits for it "
        "(docs/evaluation.md#checkpoint-evaluation)",
        f'export {rundir.CHECKPOINT_QUEUE_ENV}={f}/checkpoint_queue."$SLURM_JOB_ID"',
        f'mkdir -p "${rundir.CHECKPOINT_QUEUE_ENV}"',
        f"DFM_HPC_CHECKPOINT_SCRIPT={f}/{EVAL_SCRIPT} DFM_HPC_CHECKPOINT_TICK_S={TICK_S}",
        *SCRIPT.read_text().rstrip().splitlines(),
        "dfm_hpc_checkpoint_evals & dfm_hpc_checkpoint_evals_pid=$!",
    ]


def teardown_lines(job: StageJob) -> List[str]:
    """After the step: stop the loop, then one last pass (the checkpoint saved as the step ended)."""
    if not job.eval_checkpoints:
        return []
    return ['kill "$dfm_hpc_checkpoint_evals_pid" 2>/dev/null', "dfm_hpc_queue_checkpoint_evals"]


def score_local(run_dir: Path, job: StageJob, out=sys.stdout) -> int:
    """cluster=local: the stage's checkpoints still unscored, one process after the stage's ranks exited. A failure
    is said and returned, and the run goes on (as a failed evaluate job on Slurm leaves the chain alone)."""
    from dfm_hpc import checkpoint_scores

    sdir = rundir.stage_dir(run_dir, job.stage)
    if not job.eval_checkpoints or not checkpoint_scores.waiting(sdir):
        return 0
    out.write(f"dfm_hpc: scoring {job.stage}'s kept checkpoints (cluster=local: after the stage, one process)\n")
    out.flush()
    code = subprocess.run([sys.executable, *ENTRY.split(), str(run_dir), job.stage, "pending"]).returncode
    if code:
        out.write(f"dfm_hpc: scoring {job.stage}'s checkpoints failed (exit {code}; "
                  f"{sdir / rundir.CHECKPOINT_EVALS / 'logs'}); the run goes on\n")
    return code
