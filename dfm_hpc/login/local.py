"""cluster=local: run each stage's ranks as processes on this machine, in order, and wait.

Same entry point as on Slurm (`dfm_hpc.job.rank`); only the variables that srun would provide are
set here. Rank 0's log is echoed to the terminal so the user sees progress. The ranks run in their
own session: SIGINT or SIGTERM to the launcher stops them here and marks the stage CANCELLED (no
orphans that status would show as RUNNING).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

from dfm_hpc import jobenv, rundir
from dfm_hpc.dist import GPU_VARS
from dfm_hpc.plan import StageJob


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the launcher while a stage ran."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Interrupted(signum)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _echo(log: Path, pos: int, out) -> int:
    if log.exists():
        with open(log, "rb") as f:
            f.seek(pos)
            data = f.read()
        if data:
            out.write(data.decode(errors="replace"))
            out.flush()
        return pos + len(data)
    return pos


def run_ranks(run_dir: Path, job: StageJob, cluster, out=sys.stdout) -> int:
    """Run one stage's ranks; returns 0 when all succeed (the others are stopped on a failure)."""
    sdir = rundir.stage_dir(run_dir, job.stage)
    (sdir / rundir.LOGS).mkdir(parents=True, exist_ok=True)
    base = {**os.environ, **{k: jobenv.job_value(v) for k, v in cluster.env.items()},
            "DFM_HPC_RUN_DIR": str(Path(run_dir).resolve()),  # cancel checks it before signalling a pid
            "WORLD_SIZE": str(job.world_size), "LOCAL_WORLD_SIZE": str(job.tasks_per_node),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    for k in [k for k in base if k.startswith("SLURM_")]:
        del base[k]  # a local run inside an allocation must not look like an srun task
    if cluster.get("visible_devices"):  # cluster=node: the stage's GPUs, all of them to each rank (dist.gpu_index)
        node_gpus(base, cluster.visible_devices, job)
    t0 = time.time()
    procs: List[subprocess.Popen] = []
    main = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        for i in range(job.array):  # copies of an array stage run one after the other here
            code = _run_copy(run_dir, job, base, i, sdir, out, procs)
            if code:
                break
    except Interrupted as e:
        _stop(procs)
        (sdir / rundir.CANCELLED).write_text(f"{e}: the launcher was interrupted; its ranks were stopped\n")
        (sdir / rundir.PIDS).unlink(missing_ok=True)
        _add_elapsed(sdir, time.time() - t0, job)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _add_elapsed(sdir, time.time() - t0, job)
    (sdir / rundir.PIDS).unlink(missing_ok=True)
    if code and not (sdir / rundir.FAILED).exists():
        (sdir / rundir.FAILED).write_text(f"a rank exited with {code}\n")
    return code


def node_gpus(env: dict, visible: str, job: StageJob) -> None:
    """cluster=node: the variables that give a stage's ranks its first gpus_per_node GPUs (every rank sees them
    all and local rank r takes GPU r, as on Slurm: NCCL then reaches the others over CUDA IPC / NVLink), and
    threads for the cores each rank has. The other GPU variables go (HIP indexes one into another; empty hides)."""
    var, _, ids = visible.partition("=")
    for v in GPU_VARS:
        env.pop(v, None)
    env[var] = ",".join([i for i in ids.split(",") if i][:job.gpus_per_node])  # none: a stage without GPUs
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, job.tasks_per_node)))


def _add_elapsed(sdir: Path, seconds: float, job: StageJob) -> None:
    """Wall time of local runs (Slurm's is in sacct); a resumed stage adds to it. The card reports it."""
    import json

    path = sdir / rundir.ELAPSED
    before = json.loads(path.read_text())["elapsed_s"] if path.exists() else 0.0
    path.write_text(json.dumps({"elapsed_s": round(before + seconds, 1), "processes": job.world_size,
                                "gpus": job.nodes * job.gpus_per_node}) + "\n")


def _stop(procs: List[subprocess.Popen], grace: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _run_copy(run_dir: Path, job: StageJob, base: dict, index: int, sdir: Path, out,
              procs: List[subprocess.Popen]) -> int:
    procs.clear()
    for r in range(job.world_size):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen([sys.executable, "-m", "dfm_hpc.job.rank", str(run_dir), job.stage, str(index)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    rundir.write_pids(sdir, [p.pid for p in procs])
    log = rundir.rank_log(sdir, 0, index if job.array > 1 else None)
    pos, code = 0, 0
    while True:
        pos = _echo(log, pos, out)
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            code = failed[0]
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait()
            break
        if all(c == 0 for c in codes):
            break
        time.sleep(0.2)
    _echo(log, pos, out)
    return code
