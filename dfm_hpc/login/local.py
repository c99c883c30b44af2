"""cluster=local: run each stage's ranks as processes on this machine, in order, and wait.

Same entry point as on Slurm (`dfm_hpc.job.rank`); only the variables that srun would provide are
set here. Rank 0's log is echoed to the terminal so the user sees progress.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from dfm_hpc import rundir
from dfm_hpc.plan import StageJob


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


def run_stage(run_dir: Path, job: StageJob, cluster, out=sys.stdout) -> int:
    """Run one stage's ranks; returns 0 when all succeed (the others are stopped on a failure)."""
    sdir = rundir.stage_dir(run_dir, job.stage)
    (sdir / "logs").mkdir(parents=True, exist_ok=True)
    base = {**os.environ, **{k: os.path.expandvars(str(v)) for k, v in cluster.env.items()},
            "WORLD_SIZE": str(job.world_size), "LOCAL_WORLD_SIZE": str(job.tasks_per_node),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    for k in [k for k in base if k.startswith("SLURM_")]:
        del base[k]  # a local run inside an allocation must not look like an srun task
    t0 = time.time()
    for i in range(job.array):  # copies of an array stage run one after the other here
        code = _run_copy(run_dir, job, base, i, sdir, out)
        if code:
            break
    _add_elapsed(sdir, time.time() - t0, job)
    (sdir / "pids").unlink(missing_ok=True)
    if code and not (sdir / "FAILED").exists():
        (sdir / "FAILED").write_text(f"a rank exited with {code}\n")
    return code


def _add_elapsed(sdir: Path, seconds: float, job: StageJob) -> None:
    """Wall time of local runs (Slurm's is in sacct); a resumed stage adds to it. The card reports it."""
    import json

    path = sdir / "elapsed.json"
    before = json.loads(path.read_text())["elapsed_s"] if path.exists() else 0.0
    path.write_text(json.dumps({"elapsed_s": round(before + seconds, 1), "processes": job.world_size,
                                "gpus": job.nodes * job.gpus_per_node}) + "\n")


def _run_copy(run_dir: Path, job: StageJob, base: dict, index: int, sdir: Path, out) -> int:
    procs: List[subprocess.Popen] = []
    for r in range(job.world_size):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen([sys.executable, "-m", "dfm_hpc.job.rank", str(run_dir), job.stage, str(index)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    (sdir / "pids").write_text(" ".join(str(p.pid) for p in procs) + "\n")
    log = sdir / "logs" / ("rank-0.log" if job.array == 1 else f"array-{index}-rank-0.log")
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
