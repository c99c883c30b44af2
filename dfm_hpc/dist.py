"""Inside a task: map the launcher's environment to torch.distributed's env:// variables.

Works for srun tasks (SLURM_PROCID...), torchrun children (RANK... already set) and the local
launcher (which sets RANK... itself). Exported before torch.distributed starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# MASTER_PORT = base + job id % span, here and in the sbatch script: jobs sharing a node differ
PORT_BASE, PORT_SPAN = 20000, 20000


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
