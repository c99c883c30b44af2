"""This machine's GPUs, for cluster=node (one machine, no Slurm): found without torch, as the config is composed.

Where from, first that answers: nvidia-smi, then rocm-smi, then the NVIDIA driver's /proc files (model only),
then the visible-devices variables alone
(CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES: names and memory unknown). A visible-devices
variable also narrows what an smi tool lists, as it narrows what torch sees. The test cluster's way of faking GPUs
works here too: `CUDA_VISIBLE_DEVICES=0,1` on a machine without GPUs gives two "GPUs" whose ranks compute on the
CPU (torch finds no CUDA), as slurm/start.sh's GRES do. conf/cluster/node.yaml reads the result through the
`dfm_node` resolver (config_io.register), so config.yaml records what the run found. Pure: no torch, no login/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from dfm_hpc import estimates

CPU_RANKS = 2  # ranks per stage when no GPU is found: as cluster=local
SMI_TIMEOUT_S = 20  # nvidia-smi can take seconds on a node whose driver is cold (persistence mode off)
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]
ROCM_QUERY = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # the driver's own list: a last resort without nvidia-smi
# a PEAK_TFLOPS key -> the throughput.devices entry that stands for it (conf/throughput/default.yaml)
THROUGHPUT_KEY = {"h100_sxm": "h100", "h100_pcie": "h100"}


@dataclass(frozen=True)
class Gpu:
    id: str  # what the visible-devices variable names it by (an index, or a UUID)
    name: Optional[str] = None  # as the driver names it; None: unknown (only a visible-devices variable said)
    memory_mib: Optional[int] = None
    uuid: Optional[str] = None  # nvidia-smi's; CUDA_VISIBLE_DEVICES may name a GPU by (a prefix of) it

    def describe(self) -> str:
        mem = f", {self.memory_mib / 1024:.0f} GiB" if self.memory_mib else ""
        return f"{self.id}: {self.name or 'unknown GPU'}{mem}"


@dataclass(frozen=True)
class Found:
    gpus: Tuple[Gpu, ...]
    var: str  # the variable that hands GPUs to the ranks (CUDA_VISIBLE_DEVICES; HIP_VISIBLE_DEVICES on AMD)
    source: str  # nvidia-smi | rocm-smi | /proc/driver/nvidia/gpus | the variable's name | "none"


def parse_nvidia_smi(text: str) -> List[Gpu]:
    """Rows of NVIDIA_QUERY ('0, NVIDIA H100 80GB HBM3, 81559, GPU-...'); memory '[N/A]' stays unknown."""
    out = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 3 or not cols[0].isdigit() or not cols[1]:
            continue  # a warning line or a banner, not a row
        mem = int(cols[2]) if cols[2].isdigit() else None
        out.append(Gpu(cols[0], cols[1], mem, cols[3] if len(cols) > 3 and cols[3] else None))
    return out


def parse_rocm_smi(text: str) -> List[Gpu]:
    """ROCM_QUERY's JSON: {"card0": {"Card Series": ..., "VRAM Total Memory (B)": ...}, "system": ...}. The key
    spellings changed between ROCm versions ('Card series', 'Card Series', 'Device Name'): matched without case."""
    try:
        data = json.loads(text[text.find("{"):]) if "{" in text else {}
    except ValueError:
        return []
    out = []
    for card, fields in data.items():
        m = re.fullmatch(r"card(\d+)", card)
        if not m or not isinstance(fields, dict):
            continue
        low = {k.lower(): str(v) for k, v in fields.items()}
        name = low.get("card series") or low.get("device name") or low.get("card model")
        mem = low.get("vram total memory (b)", "")
        out.append(Gpu(m.group(1), name, int(mem) // 2**20 if mem.isdigit() else None))
    return sorted(out, key=lambda g: int(g.id))


def parse_nvidia_proc(infos: Sequence[str]) -> List[Gpu]:
    """The driver's /proc/driver/nvidia/gpus/<PCI bus id>/information files (in bus order): where nvidia-smi is
    missing (a container without it), the driver still says how many GPUs and their model; memory unknown."""
    out = []
    for text in infos:
        fields = {k.strip(): v.strip() for k, sep, v in (line.partition(":") for line in text.splitlines()) if sep}
        if fields.get("Model"):
            out.append(Gpu(str(len(out)), fields["Model"]))
    return out


def _nvidia_proc(root: Path = NVIDIA_PROC) -> Optional[str]:
    try:
        infos = [(d / "information").read_text() for d in sorted(root.iterdir()) if (d / "information").is_file()]
    except OSError:
        return None
    return json.dumps(infos) if infos else None


def _visible(env) -> Optional[Tuple[str, List[str]]]:
    """The visible-devices variable set here, narrowest first, and the ids it lists; None if none is set.
    An empty value or -1 hides every GPU."""
    for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        if var in env:
            ids = [x.strip() for x in env[var].split(",") if x.strip()]
            return var, ([] if ids[:1] == ["-1"] else ids)
    return None


def _narrow(gpus: List[Gpu], ids: Sequence[str]) -> List[Gpu]:
    """The listed GPUs a visible-devices variable names, in its order (by index or UUID prefix); one it names
    that the tool does not list stays, unknown (the ranks are given what the variable says)."""
    def pick(i: str) -> Gpu:
        hit = next((g for g in gpus if g.id == i or (g.uuid and not i.isdigit() and g.uuid.startswith(i))), None)
        return Gpu(i, hit.name, hit.memory_mib, hit.uuid) if hit else Gpu(i)
    return [pick(i) for i in ids]


def _run(cmd: List[str]) -> Optional[str]:
    if cmd[0] == str(NVIDIA_PROC):
        return _nvidia_proc()
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def discover(env=None, run=_run) -> Found:
    """This machine's GPUs as the ranks would see them."""
    env = os.environ if env is None else env
    visible = _visible(env)
    if visible and not visible[1]:
        return Found((), visible[0], visible[0])  # hidden on purpose
    for query, parse, var in ((NVIDIA_QUERY, parse_nvidia_smi, "CUDA_VISIBLE_DEVICES"),
                              (ROCM_QUERY, parse_rocm_smi, "HIP_VISIBLE_DEVICES"),
                              ([str(NVIDIA_PROC)], lambda t: parse_nvidia_proc(json.loads(t or "[]")),
                               "CUDA_VISIBLE_DEVICES")):
        listed = parse(run(query) or "")
        if listed:
            if visible:  # ids as the variable gives them; the ranks get the same variable, narrowed
                return Found(tuple(_narrow(listed, visible[1])), visible[0], query[0])
            return Found(tuple(listed), var, query[0])
    if visible:
        return Found(tuple(Gpu(i) for i in visible[1]), visible[0], visible[0])
    return Found((), "CUDA_VISIBLE_DEVICES", "none")


@lru_cache(maxsize=8)
def _cached(key: Tuple[Tuple[str, str], ...]) -> Found:
    return discover(dict(key))


def here() -> Found:
    """discover() once per process and environment: the resolver asks for several values of one answer."""
    return _cached(tuple(sorted((k, v) for k, v in os.environ.items() if k.endswith("VISIBLE_DEVICES")
                                or k == "PATH")))


def throughput_key(name: Optional[str]) -> Optional[str]:
    """'NVIDIA H100 80GB HBM3' -> 'h100' (a throughput.devices entry); None for a GPU the tables do not know."""
    key = estimates.device_key(name) if name else None
    return THROUGHPUT_KEY.get(key, key) if key else None


def resolve(what: str, gpus_per_node=None):
    """The `${dfm_node:WHAT}` resolver of conf/cluster/node.yaml."""
    found = here()
    if what == "count":
        return len(found.gpus)
    if what == "ranks":  # one per GPU the stage uses; CPU ranks without GPUs
        n = len(found.gpus) if gpus_per_node is None else int(gpus_per_node)
        return n if n > 0 else CPU_RANKS
    if what == "one":  # a one-process stage's GPUs
        return min(1, int(gpus_per_node))
    if what == "visible":
        return f"{found.var}={','.join(g.id for g in found.gpus)}"
    if what == "gpus":
        return [g.describe() for g in found.gpus]
    if what == "source":
        return found.source
    names = {g.name for g in found.gpus}
    one = names.pop() if len(names) == 1 else None  # a mixed machine: no single entry stands for it
    if what == "device":
        return throughput_key(one)
    if what == "memory_gb":
        mems = [g.memory_mib for g in found.gpus]
        # decimal GB, as estimates.py counts (81,559 MiB on an H100 SXM = 85.5 GB)
        return round(min(mems) * 2**20 / 1e9, 1) if mems and None not in mems else None
    raise ValueError(f"${{dfm_node:{what}}}: unknown; see conf/cluster/node.yaml")
