"""What every task runs: `run_stage(run_dir, stage)`.

Called by submitit on Slurm (one task per rank, or one per node with launcher=torchrun) and by
the local launcher (`python -m dfm_hpc.job.rank RUN_DIR STAGE`). Reads the snapshotted config (never
re-composes Hydra), exports the distributed env, writes its log to stages/<stage>/logs/, runs
the stage module, and marks completion with plain files.
"""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dfm_hpc import config_io, dist, rundir
from dfm_hpc.job import heartbeat
from dfm_hpc.predict import duration
from dfm_hpc.registry import STAGES

# Known, harmless library warnings, silenced at their source by category and module (and message):
# (category, module regex, message regex, why). Any other warning still shows in the rank logs;
# verbose=true shows these too. docs/logging.md lists them with the versions they were seen with.
KNOWN_WARNINGS = (
    (FutureWarning, r"torch\.distributed\.c10d_logger",
     r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
     "DeepSpeed 0.19's ZeRO collectives use the names torch 2.13 deprecated; once per call, per rank"),
    (FutureWarning, r"transformers\.modeling_utils", r"`is_gradient_checkpointing` is deprecated",
     "TRL/PEFT ask the old name on every step (transformers 5.24)"),
    (UserWarning, r"torch\.utils\.data\.dataloader", r"'pin_memory' argument is set as true but no accelerator",
     "CPU runs: the Trainer asks for pinned memory, there is no GPU to pin for"),
)
# The libraries' own verbosity and progress bars, read when they are imported (verbose=false only).
# Progress bars from several ranks interleave and fill logs with carriage returns; dfm_hpc's own
# progress lines (steps, chunks, with ETA) replace them.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
    "LMEVAL_LOG_LEVEL": "ERROR",  # lm-eval's per-task notices (evaluate)
}
QUIET_LOGGERS = ("accelerate", "DeepSpeed", "torch.distributed.elastic")  # to WARNING/ERROR, below


def quiet_libraries(verbose: bool, gpus: int) -> None:
    """Silence the known library noise at its source (before any library is imported)."""
    import logging
    import warnings

    os.environ["DFM_HPC_VERBOSE"] = "1" if verbose else "0"  # train.py reads it (the Trainer's printers)
    if gpus == 0:  # DeepSpeed would warn that it found no GPU and falls back to its CPU accelerator
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category, module, message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # e.g. its GA-steps notice when DeepSpeed's wins
    for name in QUIET_LOGGERS[1:]:
        logging.getLogger(name).setLevel(logging.WARNING)


class Preempted(Exception):
    """Raised by a stage at a safe point after Slurm's pre-timeout signal; its progress is on disk."""


@dataclass
class StageContext:
    run_dir: Path
    stage_dir: Path
    env: dist.DistEnv
    stop_requested: bool = False  # set by the pre-timeout signal (USR2, see executor_params)
    array_index: int = 0  # which copy of a stage with array > 1
    array_size: int = 1
    beat: Optional[heartbeat.Heartbeat] = None  # the hang watchdog's heartbeat (Slurm), else None
    safe_points: int = 0

    def should_stop(self, what: str = "") -> bool:
        """Whether to stop at this safe point (a step end, a chunk, a shard); passing one is progress."""
        self.safe_points += 1
        if self.beat is not None:
            self.beat.progress(what or f"safe point {self.safe_points}")
        return self.stop_requested

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0 of the first array copy: the one that writes shared files."""
        return self.env.rank == 0 and self.array_index == 0

    @property
    def worker(self) -> int:
        """This process's index among all workers of the stage (array copies x ranks)."""
        return self.array_index * self.env.world_size + self.env.rank

    @property
    def num_workers(self) -> int:
        return self.array_size * self.env.world_size

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} rank {self.rank}/{self.world_size}] {msg}", flush=True)


def agree(decision: int, device=None) -> int:
    """The largest decision of all ranks (all_reduce MAX on the default group): one int, so that the
    ranks act together (train.py: save, stop). The device is the backend's (cuda for NCCL/RCCL)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return decision
    t = torch.tensor([decision], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _redirect_output(log_file: Path) -> None:
    """Send this process's stdout/stderr (C level too: RCCL, DeepSpeed) to its rank log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def _spawn_torchrun(run_dir: Path, stage: str, array_index: int) -> int:
    """launcher=torchrun: this task is one per node; torchrun starts the node's ranks."""
    e = os.environ
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nnodes={e.get('SLURM_JOB_NUM_NODES', '1')}", f"--node-rank={e.get('SLURM_NODEID', '0')}",
           f"--nproc-per-node={e.get('DFM_HPC_NPROC_PER_NODE', '1')}",
           f"--master-addr={e['MASTER_ADDR']}", f"--master-port={e['MASTER_PORT']}",
           *shlex.split(e.get("DFM_HPC_TORCHRUN_ARGS", "")),  # LUMI: --numa-binding=exclusive
           "-m", "dfm_hpc.job.rank", str(run_dir), stage, str(array_index)]
    print("dfm_hpc: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


class CannotResume(RuntimeError):
    """The stage stopped early and must not be requeued: it cannot resume, or its restarts are used up."""


class Refused(RuntimeError):
    """A stage ends FAILED on purpose, a verdict and not a crash (job/gate.py: a regression): its FAILED marker
    holds the reason alone, which status prints, and the chain stops as after any failure."""


def _restarts() -> int:
    """How often Slurm has restarted this job (requeues, node failures); 0 on its first start."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def _fail(ctx: StageContext, why: str) -> None:
    """The stage fails with its reason (status shows it, `rerun` continues it); the step exits non-zero."""
    (ctx.stage_dir / rundir.FAILED).write_text(f"worker {ctx.worker}\n{why}\n")
    ctx.log(why)
    raise CannotResume(why)


def _requeue(ctx: StageContext, stage: str, cfg, why: str) -> None:
    """Ask for the job to go back in the queue; the next start resumes from the stage's files. Any
    rank that stops early asks (in a data stage the others may have finished their shards already).
    The rank runs in the container, which has no scontrol on LUMI: it leaves a marker, and the
    batch script requeues the job host side when the step has ended (login/slurm.host_side).
    A stage that cannot resume, or has used up cluster.max_restarts, fails instead."""
    job = os.environ.get("SLURM_JOB_ID")  # each array copy is a job of its own
    if not job:
        return
    if not STAGES[stage].resumable:
        _fail(ctx, f"{stage} stopped early ({why}) and cannot resume, so it is not requeued; "
                   f"`python -m dfm_hpc rerun RUN_DIR` starts it again (with more time: {stage}.time)")
    cap = cfg.cluster.max_restarts
    if _restarts() >= cap:
        _fail(ctx, f"{stage} stopped early ({why}) after {_restarts()} restart(s), the most "
                   f"cluster.max_restarts={cap} allows: not requeued; `python -m dfm_hpc rerun RUN_DIR` continues it")
    marker = os.environ.get("DFM_HPC_REQUEUE_MARKER")
    if not marker:
        ctx.log(f"job {job} is not requeued: its batch script set no DFM_HPC_REQUEUE_MARKER; rerun the run")
        return
    with open(marker, "a") as f:  # several ranks may ask; one line each
        f.write(f"{job} worker {ctx.worker}\n")
    ctx.log(f"requeue of job {job} requested: the batch script requeues it when this step ends")


def _job_done(ctx: StageContext) -> None:
    """Tell the batch script that this job's part of the stage is finished (DFM_HPC_DONE_MARKER): the
    stage is DONE, or every worker of this array copy is. Without it, or a requeue request, the
    script fails the job: Slurm never sees COMPLETED on an unfinished stage."""
    marker = os.environ.get("DFM_HPC_DONE_MARKER")
    if not marker:
        return
    ws, base = ctx.world_size, ctx.array_index * ctx.world_size
    ranks = ctx.stage_dir / rundir.RANKS
    if (ctx.stage_dir / rundir.DONE).exists() or all((ranks / f"{w}.done").exists() for w in range(base, base + ws)):
        Path(marker).write_text(f"{os.environ.get('SLURM_JOB_ID', '')}\n")


def run_stage(run_dir: str, stage: str, array_index: int = 0) -> None:
    run_dir = Path(run_dir).resolve()
    sdir = rundir.stage_dir(run_dir, stage)
    if os.environ.get("DFM_HPC_LAUNCHER") == "torchrun" and "TORCHELASTIC_RUN_ID" not in os.environ:
        # the pre-timeout USR2 reaches every process of the step: the ranks stop themselves; this
        # process and torchrun (an ignored signal stays ignored across exec) must not die of it, nor
        # run submitit's handler (scontrol, which the container lacks)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        code = _spawn_torchrun(run_dir, stage, array_index)
        if code:
            raise RuntimeError(f"torchrun exited with {code}; see {sdir / rundir.LOGS}")
        return
    env = dist.setup_env()
    cfg = config_io.load_config(run_dir)
    size = cfg[stage].array
    _redirect_output(rundir.rank_log(sdir, env.rank, array_index if size > 1 else None))
    planned = {r["stage"]: r for r in rundir.read_plan(run_dir) or []}.get(stage, {})
    quiet_libraries(bool(cfg.get("verbose", False)), planned.get("gpus_per_node", 1))
    started = time.time()
    ctx = StageContext(run_dir, sdir, env, array_index=array_index, array_size=size)
    # Replaces submitit's handler: stages stop at their next safe point instead of being cut off
    signal.signal(signal.SIGUSR2, lambda *_: setattr(ctx, "stop_requested", True))
    host = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    ctx.log(f"stage {stage} on {host} (local rank {env.local_rank}, {dist.describe_gpu()}, "
            f"master {env.master_addr}:{env.master_port}, "
            f"job {os.environ.get('SLURM_JOB_ID', 'local')}, pid {os.getpid()})")
    if ctx.is_main and planned:  # what it runs, on what, and how long the plan expects it to take
        p = planned.get("prediction") or {}
        gpus = planned["gpus_per_node"]
        where = f"{planned['nodes']} node(s) x {planned['tasks_per_node']} rank(s), " + (
            f"{gpus} GPU(s)/node" if gpus else "CPU") + (f", array of {size}" if size > 1 else "")
        eta = "" if p.get("hours") is None else f"; predicted {p['hours'] * 60:.1f} min ({p['work']}, {p['device']})"
        ctx.log(f"{stage}: {p.get('summary', stage)}; {where}{eta}")
    if (sdir / rundir.DONE).exists():
        ctx.log("already DONE; nothing to do")
        _job_done(ctx)
        return
    if _restarts() > cfg.cluster.max_restarts:  # Slurm's own requeues (a node failure) count too
        _fail(ctx, f"{stage}: job restarted {_restarts()} times, more than cluster.max_restarts="
                   f"{cfg.cluster.max_restarts}; `python -m dfm_hpc rerun RUN_DIR` continues it")
    ctx.beat = heartbeat.start(sdir, ctx.worker, host, first=env.rank == 0)
    try:
        module = importlib.import_module(STAGES[stage].module)
        module.run(cfg, ctx)
    except Preempted as e:
        ctx.log(f"stopping for the time limit: {e}")
        _requeue(ctx, stage, cfg, str(e))
        return
    except Refused as e:
        (sdir / rundir.FAILED).write_text(f"worker {ctx.worker}\n{e}\n")
        ctx.log(f"stage {stage} FAILED: {e}")
        raise CannotResume(str(e)) from None
    except BaseException:
        (sdir / rundir.FAILED).write_text(f"worker {ctx.worker}\n{traceback.format_exc()}")
        traceback.print_exc()
        raise
    finally:  # finished, stopped or failed: not hung; the others may go on without this rank
        if ctx.beat is not None:
            ctx.beat.stop()
    # The stage is done when every rank is: each leaves a marker, whoever completes the set writes DONE.
    ranks = sdir / rundir.RANKS
    ranks.mkdir(exist_ok=True)
    (ranks / f"{ctx.worker}.done").touch()
    if len(list(ranks.glob("*.done"))) >= ctx.num_workers:
        (sdir / rundir.DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    _job_done(ctx)
    ctx.log(f"stage {stage} finished in {duration(time.time() - started)}")


if __name__ == "__main__":
    # the module under its own name: stages raise its Preempted/Refused, which __main__'s copies would not catch
    from dfm_hpc.job import rank

    rank.run_stage(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
