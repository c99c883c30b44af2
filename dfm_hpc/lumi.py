"""LUMI facts used to validate plans and to bill them (sources in docs/lumi.md).

Pure data and arithmetic: imported on the login node.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

ACCOUNT_RE = re.compile(r"^project_\d{9}$")
USABLE_CORES_PER_NODE = 56  # low-noise mode reserves one core per 8-core L3 region
GCDS_PER_NODE = 8
GCD_MEMORY_GB = 64
NODE_MEMORY_GB = 480  # what a job may ask for with --mem on standard-g
# per GCD on small-g/dev-g: 8 x 64 GB slices would exceed the 480 GB a node has for jobs
MEM_PER_GCD_GB = NODE_MEMORY_GB // GCDS_PER_NODE
# GCD -> its closest cores (the GCD/NUMA map; the profile's CPU masks bind local rank i to these)
GCD_CORES = {0: range(49, 56), 1: range(57, 64), 2: range(17, 24), 3: range(25, 32),
             4: range(1, 8), 5: range(9, 16), 6: range(33, 40), 7: range(41, 48)}


@dataclass(frozen=True)
class Partition:
    name: str
    max_nodes: int
    max_hours: float
    whole_nodes: bool  # allocated (and billed) by the node
    max_jobs: int  # jobs one user may have submitted (queued + running) at a time
    max_running: int
    # "for debugging and quick testing purposes and not for production runs. Repeated abuse ... might
    # result in account suspension" (UG partitions.md): a stage that needs requeues is production
    dev: bool = False
    cpu: bool = False  # LUMI-C: no GPUs, billed in CPU core-hours from the project's CPU allocation

    @property
    def pool(self) -> str:
        """The allocation its billing draws on: GPU-hours or CPU core-hours (UG billing.md)."""
        return "CPU" if self.cpu else "GPU"


# UG partitions.md (@27f3bb3): walltime, max jobs (running), max nodes per job
PARTITIONS = {
    "standard-g": Partition("standard-g", 1024, max_hours=48, whole_nodes=True, max_jobs=210, max_running=200),
    "small-g": Partition("small-g", 4, max_hours=72, whole_nodes=False, max_jobs=210, max_running=200),
    "dev-g": Partition("dev-g", 32, max_hours=3, whole_nodes=False, max_jobs=2, max_running=1, dev=True),
    # LUMI-C: 128-core nodes; "serial pre/post-processing" belongs on small, not on a GPU slice
    "standard": Partition("standard", 512, max_hours=48, whole_nodes=True, max_jobs=120, max_running=100, cpu=True),
    "small": Partition("small", 4, max_hours=72, whole_nodes=False, max_jobs=220, max_running=200, cpu=True),
    "debug": Partition("debug", 4, max_hours=0.5, whole_nodes=False, max_jobs=2, max_running=1, dev=True, cpu=True),
}
CPU_CORES_PER_NODE = 128  # a LUMI-C node (2 x 64-core EPYC 7763)


@dataclass(frozen=True)
class FileSystem:
    name: str
    quota_gb: float  # the default quota (home: per user; the others: per project)
    max_files: int
    for_jobs: bool  # meant for job data (checkpoints): scratch and flash


# UG storage/index.md. home 20 GB / 100k files and project 50 GB (extendable to 500 GB) / 100k files:
# two 7B checkpoints of ~100 GB each fill either mid-run
FILESYSTEMS = {
    "users": FileSystem("home (/users)", 20, 100_000, for_jobs=False),
    "project": FileSystem("/project", 50, 100_000, for_jobs=False),
    "scratch": FileSystem("/scratch", 50_000, 2_000_000, for_jobs=True),
    "flash": FileSystem("/flash", 2_000, 1_000_000, for_jobs=True),
}
# the mount points, or their Lustre paths (/pfs/lustref1/flash/...; projappl: /project's old name)
_FS_RE = re.compile(r"^/(?:pfs/lustre\w+/)?(users|project|projappl|scratch|flash)(?:/|$)")


def filesystem(path: str) -> Optional[FileSystem]:
    """The LUMI file system an absolute path is on, or None (not a LUMI path, e.g. a dry run elsewhere)."""
    m = _FS_RE.match(path)
    return FILESYSTEMS["project" if m.group(1) == "projappl" else m.group(1)] if m else None


def parse_mem_gb(mem: Optional[str]) -> Optional[float]:
    """'480G' -> 480.0, '60000M' -> 58.6, '0' -> 0.0 (all of the node); None stays None."""
    if mem is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(mem), re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read memory size {mem!r} (use e.g. 480G or 60000M)")
    value, unit = float(m.group(1)), m.group(2).upper() or "M"  # Slurm's default unit is MB
    return value * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[unit]


def billing_units(partition: str, nodes: int, hours: float, gcds_per_node: int, cpus_per_node: int,
                  mem_gb_per_node: Optional[float]) -> float:
    """LUMI billing units of the partition's pool (UG billing.md): GPU-hours on LUMI-G, core-hours on LUMI-C.

    LUMI-G (1 unit = one MI250X module = 2 GCDs for one hour): standard-g bills whole nodes, 4 units
    per node-hour; small-g and dev-g the largest of the GCD, core (8 per GCD) and memory (64 GB per
    GCD) slices, at half a unit per slice-hour. `mem_gb_per_node` 0 (--mem=0) is all of the node's
    memory: all 8 slices. LUMI-C: standard bills 128 core-hours per node-hour; small and debug the
    larger of the cores and the 2 GB memory slices, per hour.
    """
    part = PARTITIONS.get(partition, PARTITIONS["standard-g"])
    if part.cpu:
        if part.whole_nodes:
            return float(CPU_CORES_PER_NODE * nodes * hours)
        return float(max(cpus_per_node, math.ceil((mem_gb_per_node or 0) / 2))) * nodes * hours
    if part.whole_nodes:
        return 4.0 * nodes * hours
    whole = mem_gb_per_node is not None and mem_gb_per_node == 0
    mem_slices = GCDS_PER_NODE if whole else math.ceil((mem_gb_per_node or 0) / GCD_MEMORY_GB)
    slices = max(math.ceil(cpus_per_node / 8), mem_slices, gcds_per_node)
    return 0.5 * slices * nodes * hours


def on_lumi() -> bool:
    import os

    return os.environ.get("LMOD_SYSTEM_NAME", "").upper() == "LUMI" or os.path.isdir("/appl/lumi")
