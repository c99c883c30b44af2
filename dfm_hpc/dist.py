"""Inside a task: map the launcher's environment to torch.distributed's env:// variables.

Works for srun tasks (SLURM_PROCID...), torchrun children (RANK... already set) and the local
launcher (which sets RANK... itself). Exported before torch.distributed starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# MASTER_PORT = base + job id % span, here and in the sbatch script: jobs sharing a node differ.
# 10000-19999 as LUMI's AI guide (1${SLURM_JOB_ID:0-4}): Linux hands out 32768-60999 to outgoing
# connections, so a port there can already be taken on the node
PORT_BASE, PORT_SPAN = 10000, 10000
# what Slurm (gres/gpu) and the LAIF runscript set: the GPUs this task may use
GPU_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int


def _first_host(nodelist: str) -> str:
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(nodelist)[0]


def setup_env() -> DistEnv:
    e = os.environ
    if "RANK" not in e and "SLURM_PROCID" in e:  # an srun task: one task per rank
        world = int(e["SLURM_NTASKS"])
        nnodes = int(e.get("SLURM_JOB_NUM_NODES", e.get("SLURM_NNODES", "1")))
        e["RANK"] = e["SLURM_PROCID"]
        e["LOCAL_RANK"] = e["SLURM_LOCALID"]
        e["WORLD_SIZE"] = str(world)
        e["LOCAL_WORLD_SIZE"] = str(max(1, world // nnodes))
        e["NODE_RANK"] = e.get("SLURM_NODEID", "0")
        e.setdefault("MASTER_ADDR", _first_host(e["SLURM_JOB_NODELIST"]))
        e.setdefault("MASTER_PORT", str(PORT_BASE + int(e["SLURM_JOB_ID"]) % PORT_SPAN))
    e.setdefault("RANK", "0")
    e.setdefault("LOCAL_RANK", "0")
    e.setdefault("WORLD_SIZE", "1")
    e.setdefault("LOCAL_WORLD_SIZE", e["WORLD_SIZE"])
    e.setdefault("NODE_RANK", str(int(e["RANK"]) // int(e["LOCAL_WORLD_SIZE"])))
    e.setdefault("MASTER_ADDR", "127.0.0.1")
    e.setdefault("MASTER_PORT", "29500")
    # one thread per CPU the task owns (torch reads this at import): no oversubscribed cores
    e.setdefault("OMP_NUM_THREADS", e.get("SLURM_CPUS_PER_TASK", "1"))
    for var in ("MIOPEN_USER_DB_PATH", "MIOPEN_CUSTOM_CACHE_DIR"):  # node-local caches must exist
        if e.get(var):
            os.makedirs(e[var], exist_ok=True)
    return DistEnv(int(e["RANK"]), int(e["LOCAL_RANK"]), int(e["WORLD_SIZE"]), int(e["LOCAL_WORLD_SIZE"]),
                   int(e["NODE_RANK"]), e["MASTER_ADDR"], int(e["MASTER_PORT"]))


def visible_gpus(env=None) -> int:
    """How many GPUs this task sees, from the list Slurm set (no torch: also for the fake GPUs of
    the test cluster). The narrowest list wins: HIP's indexes into ROCR's."""
    e = os.environ if env is None else env
    counts = [len([x for x in e[v].split(",") if x.strip()]) for v in GPU_VARS if e.get(v, "").strip()]
    return min(counts) if counts else 0


def gpu_index(env=None, visible: int | None = None):
    """The GPU this process uses among those its task sees, or None without one. With
    --gpus-per-node=8 Slurm gives each of a node's 8 tasks all 8 GCDs: local rank r takes GPU r
    (without this every process lands on GPU 0). A task that sees one GPU takes that one."""
    e = os.environ if env is None else env
    n = visible_gpus(e) if visible is None else visible
    if n <= 0:
        return None
    return int(e.get("LOCAL_RANK", e.get("SLURM_LOCALID", "0"))) % n


def describe_gpu(env=None) -> str:
    """For the rank log: which GPU this process takes, of how many its task sees."""
    e = os.environ if env is None else env
    i = gpu_index(e)
    if i is None:
        return "no GPU"
    var = next(v for v in GPU_VARS if e.get(v, "").strip())
    return f"GPU {i} of {visible_gpus(e)} ({var}={e[var]})"
