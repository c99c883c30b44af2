"""Stage job + cluster profile -> submitit parameters, sbatch script, srun line; submission.

submitit renders the sbatch script and pickles the call `rank.run_stage(run_dir, stage)` that every
task runs. A dry run renders the same script through the same submitit function, without sbatch.

The batch script runs on the host, the ranks in the container, where LUMI's images have no Slurm
tools: everything that needs Slurm (MASTER_ADDR, requeue, accounting) is in the script (`host_side`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from dfm_hpc import accounting
from dfm_hpc.dist import PORT_BASE, PORT_SPAN
from dfm_hpc.login import checkpoint_evals, shell, watchdog
from dfm_hpc.plan import StageJob
from dfm_hpc.registry import STAGES

# the test cluster's container stand-in (a checkout's slurm/, like the cluster it belongs to)
SANDBOX = Path(__file__).resolve().parents[2] / "slurm" / "sandbox.sh"
HARNESS_MOUNT = "/harness-software"  # where the harness overlay's venv was built (containers/build_harness.sh)


def python_command(cluster, stage: Optional[str] = None) -> str:
    """The interpreter that unpickles the job: host python, or python inside the container (the evaluate job's
    with the harness overlay mounted too: EuroEval's and inspect's environment, at HARNESS_MOUNT)."""
    import sys

    c = cluster.container
    if c.runtime == "bwrap":  # cluster=slurm: the host's python, without Slurm's commands
        return " ".join(shlex.quote(x) for x in [str(SANDBOX), sys.executable])
    if not c.image:
        return shlex.quote(sys.executable)
    # with the bindings module, the system paths are its business; older images need them bound
    binds = list(c.binds) + ([] if c.bindings_module else list(c.host_binds))
    if c.overlay:
        binds.append(f"{c.overlay}:/user-software:image-src=/")
    if c.harness_overlay and stage == "evaluate":
        binds.append(f"{c.harness_overlay}:{HARNESS_MOUNT}:image-src=/")
    bind = ["-B", ",".join(binds)] if binds else []
    return " ".join(shlex.quote(x) for x in [c.runtime, c.verb, *([c.gpu_flag] if c.gpu_flag else []), *bind,
                                              c.image, c.python])


def setup_lines(cluster, job: StageJob) -> List[str]:
    lines = [f"# dfm_hpc: environment of cluster={cluster.name}"]
    c = cluster.container
    if c.image and c.bindings_module:  # LAIF: the module binds what the container needs from the host
        lines += ["module purge  # its warnings are harmless",
                  *([f"module use {shlex.quote(c.module_path)}"] if c.module_path else []),
                  f"module load {shlex.quote(c.bindings_module)}"]
    # literal values ($NAME expands only in the explicit `expand:` form); secrets by name (shell.py)
    lines += shell.env_lines(cluster.env)
    if cluster.container.image and cluster.container.overlay:
        lines.append('export SINGULARITYENV_PREPEND_PATH="/user-software/bin"')
    lines += [
        "# rendezvous: first host of the allocation, a port derived from the job id",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export MASTER_PORT=$(( {PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN} ))",
        f"export DFM_HPC_LAUNCHER={cluster.launcher}",
        f"export DFM_HPC_NPROC_PER_NODE={job.tasks_per_node}",
    ]
    if cluster.launcher == "torchrun" and cluster.torchrun_args:
        lines.append(f"export DFM_HPC_TORCHRUN_ARGS={shell.quote_value(shlex.join(cluster.torchrun_args))}")
    return lines + list(cluster.setup) + (list(cluster.evaluate_setup) if job.stage == "evaluate" else [])


def host_side(params: Dict[str, Any], folder: Path, job: Optional[StageJob] = None) -> Dict[str, Any]:
    """The job's host-side lines around its step. A rank that stops early (the pre-timeout signal)
    leaves a requeue marker; one that finishes this job's part of the stage leaves a done marker.
    Beside the step runs the hang watchdog (login/watchdog.py; `job` gives its limit). After the
    step the script records the job's accounting (the card reads it), handles a hang, then decides
    the job's end state (docs/lumi.md, the end-state rule): requeued when asked for, else failed if
    the requeue fails, or if the stage is neither finished nor requeued: Slurm never sees COMPLETED
    on an unfinished stage, so `afterok` never starts a dependent on it."""
    per_job = '."$SLURM_JOB_ID"'  # an array's copies and a sweep's points share the folder
    setup = list(params.get("setup") or []) + [
        f"export DFM_HPC_REQUEUE_MARKER={shlex.quote(str(Path(folder) / 'requeue'))}{per_job}",
        f"export DFM_HPC_DONE_MARKER={shlex.quote(str(Path(folder) / 'done'))}{per_job}",
        'rm -f "$DFM_HPC_REQUEUE_MARKER" "$DFM_HPC_DONE_MARKER"  # a requeued job keeps its id',
        "trap '' USR2  # the pre-timeout signal is for the ranks; this script lives on to requeue",
        "# this job alone: an array task by its own id (the task that holds the array's id would requeue them all)",
        'DFM_HPC_JOB=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
        'DFM_HPC_JOB=${DFM_HPC_JOB:-$SLURM_JOB_ID}',
        *(watchdog.setup_lines(folder, job, STAGES[job.stage].resumable) if job else []),
        *(checkpoint_evals.setup_lines(folder, job) if job else [])]
    teardown = [
        "dfm_hpc_rc=$?  # the step's exit status",
        "# host side: the container has no Slurm tools",
        accounting.record_line(folder),
        *(checkpoint_evals.teardown_lines(job) if job else []),
        *(watchdog.teardown_lines(job) if job else []),
        'if [ -e "$DFM_HPC_REQUEUE_MARKER" ] && [ "$dfm_hpc_rc" -eq 0 ]; then',
        '  rm -f "$DFM_HPC_REQUEUE_MARKER"',
        '  scontrol requeue "$DFM_HPC_JOB" && exit 0',
        '  echo "dfm_hpc: the stage stopped early and needs a requeue, but scontrol requeue failed'
        ' (SBATCH_NO_REQUEUE?): the job fails; rerun the run to continue" >&2',
        "  exit 1",
        "fi",
        'if [ "$dfm_hpc_rc" -eq 0 ] && [ ! -e "$DFM_HPC_DONE_MARKER" ]; then',
        '  echo "dfm_hpc: the step ended with the stage unfinished and no requeue pending: the job fails" >&2',
        "  dfm_hpc_rc=1",
        "fi",
        'rm -f "$DFM_HPC_REQUEUE_MARKER" "$DFM_HPC_DONE_MARKER"',
        "exit $dfm_hpc_rc",
    ]
    return {**params, "setup": setup, "teardown": teardown}


def executor_params(job: StageJob, cluster, job_name: str, dependency: Optional[str] = None) -> Dict[str, Any]:
    per_node = job.tasks_per_node if cluster.launcher == "srun" else 1
    cpus = job.cpus_per_task if cluster.launcher == "srun" else job.cpus_per_task * job.tasks_per_node
    # Slurm >= 22.05: srun does not inherit --cpus-per-task from sbatch, so pass it again
    srun_args = [f"--cpus-per-task={cpus}", "--kill-on-bad-exit=1"]
    if cluster.cpu_bind and cluster.launcher == "srun":
        srun_args.append(f"--cpu-bind={cluster.cpu_bind}")
    srun_args += list(cluster.srun_args)
    params: Dict[str, Any] = {
        "job_name": job_name,
        "time": job.minutes,
        "nodes": job.nodes,
        "ntasks_per_node": per_node,
        "cpus_per_task": cpus,
        "signal_delay_s": cluster.signal_delay_s,
        "setup": setup_lines(cluster, job),
        "srun_args": srun_args,
        # requeue: a stage stopped by the pre-timeout signal has its job put back (host_side)
        "additional_parameters": {"kill-on-invalid-dep": "yes", "requeue": True, **dict(cluster.sbatch_extra)},
        "wckey": cluster.wckey,  # None: no --wckey (submitit's default "submitit" is refused on some sites)
    }
    optional = {"partition": job.partition, "account": cluster.account, "qos": cluster.qos,
                "mail_type": ",".join(str(t) for t in cluster.mail_type) or None, "mail_user": cluster.mail_user,
                "gpus_per_node": job.gpus_per_node or None, "mem": cluster.mem,
                "mem_per_gpu": cluster.mem_per_gpu if job.gpus_per_node else None,
                "exclusive": True if cluster.exclusive else None, "dependency": dependency}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def render(params: Dict[str, Any], folder: Path, python: str, array_size: Optional[int] = None,
           job: Optional[StageJob] = None) -> str:
    """The sbatch script submitit would write for these parameters (and `job`'s watchdog)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    extra = {"map_count": array_size} if array_size and array_size > 1 else {}
    shell.check_params([params, str(folder), python])
    if job is not None and job.eval_checkpoints:  # the checkpoint evaluations' job script, rendered now, beside this
        ej = checkpoint_evals.eval_job(job)
        ep = executor_params(ej, ej.cluster, f"{params['job_name']}-ckpt-eval")
        checkpoint_evals.write_script({**ep, **({"exclude": params["exclude"]} if params.get("exclude") else {})},
                                      folder, job, python_command(ej.cluster))
    return _make_sbatch_string(command=command, folder=folder, **host_side(params, folder, job), **extra)


def srun_line(script: str) -> str:
    return next((line for line in script.splitlines() if line.startswith("srun ")), "")


def submit(params: Dict[str, Any], folder: Path, python: str, calls: Sequence[tuple],
           job: Optional[StageJob] = None) -> List[Any]:
    """Queue one job, or one array task per call (run_dir, stage, array_index); returns the submitit
    jobs without waiting for them."""
    import submitit

    from dfm_hpc.job import rank

    shell.check_params([params, str(folder), python])
    ex = submitit.SlurmExecutor(folder=folder, python=python, max_num_timeout=3)
    ex.update_parameters(**host_side(params, folder, job))
    if len(calls) == 1:
        return [ex.submit(rank.run_stage, *calls[0])]
    with ex.batch():
        jobs = [ex.submit(rank.run_stage, *c) for c in calls]
    return jobs
