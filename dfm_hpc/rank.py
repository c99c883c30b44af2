"""What every task runs: `run_stage(run_dir, stage)`.

Called by submitit on Slurm (one task per rank, or one per node with launcher=torchrun) and by
the local launcher (`python -m dfm_hpc.rank RUN_DIR STAGE`). Reads the snapshotted config (never
re-composes Hydra), exports the distributed env, writes its log to stages/<stage>/logs/, runs
the stage module, and marks completion with plain files.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from dfm_hpc import dist, rundir
from dfm_hpc.stages import STAGES


@dataclass
class StageContext:
    run_dir: Path
    stage_dir: Path
    env: dist.DistEnv

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} rank {self.rank}/{self.world_size}] {msg}", flush=True)


def load_config(run_dir: Path):
    """The run's resolved config, typed again by the schema."""
    from omegaconf import OmegaConf

    from dfm_hpc.schema import Config

    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(Path(run_dir) / "config.yaml"))


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


def _spawn_torchrun(run_dir: Path, stage: str) -> int:
    """launcher=torchrun: this task is one per node; torchrun starts the node's ranks."""
    e = os.environ
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nnodes={e.get('SLURM_JOB_NUM_NODES', '1')}", f"--node-rank={e.get('SLURM_NODEID', '0')}",
           f"--nproc-per-node={e.get('DFM_HPC_NPROC_PER_NODE', '1')}",
           f"--master-addr={e['MASTER_ADDR']}", f"--master-port={e['MASTER_PORT']}",
           "-m", "dfm_hpc.rank", str(run_dir), stage]
    print("dfm_hpc: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def run_stage(run_dir: str, stage: str) -> None:
    run_dir = Path(run_dir).resolve()
    sdir = rundir.stage_dir(run_dir, stage)
    if os.environ.get("DFM_HPC_LAUNCHER") == "torchrun" and "TORCHELASTIC_RUN_ID" not in os.environ:
        code = _spawn_torchrun(run_dir, stage)
        if code:
            raise RuntimeError(f"torchrun exited with {code}; see {sdir / 'logs'}")
        return
    env = dist.setup_env()
    _redirect_output(sdir / "logs" / f"rank-{env.rank}.log")
    ctx = StageContext(run_dir, sdir, env)
    host = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    ctx.log(f"stage {stage} on {host} (local rank {env.local_rank}, master {env.master_addr}:{env.master_port}, "
            f"job {os.environ.get('SLURM_JOB_ID', 'local')})")
    if (sdir / "DONE").exists():
        ctx.log("already DONE; nothing to do")
        return
    try:
        cfg = load_config(run_dir)
        module = importlib.import_module(STAGES[stage][0])
        module.run(cfg, ctx)
    except BaseException:
        (sdir / "FAILED").write_text(f"rank {env.rank}\n{traceback.format_exc()}")
        traceback.print_exc()
        raise
    # The stage is done when every rank is: each leaves a marker, whoever completes the set writes DONE.
    ranks = sdir / "ranks"
    ranks.mkdir(exist_ok=True)
    (ranks / f"{env.rank}.done").touch()
    if len(list(ranks.glob("*.done"))) >= env.world_size:
        (sdir / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    ctx.log(f"stage {stage} finished")


if __name__ == "__main__":
    run_stage(sys.argv[1], sys.argv[2])
