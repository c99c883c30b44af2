"""cluster=node on the login side: what the plan says about the GPUs found here (dfm_hpc/gpus.py found them when
the config was composed; config.yaml records them in cluster.gpus and cluster.visible_devices)."""

from __future__ import annotations

from collections import Counter
from typing import List


def plan_lines(cfg) -> List[str]:
    """The plan's lines on this machine's GPUs; none for a profile that does not look for them (gpus: null)."""
    cl = cfg.cluster
    if cl.get("gpus") is None:
        return []
    found = [g.partition(": ")[2] for g in cl.gpus]
    var = (cl.visible_devices or "").partition("=")[0] or "CUDA_VISIBLE_DEVICES"
    if not found or not cl.gpus_per_node:
        why = "none found here (nvidia-smi, rocm-smi and the *_VISIBLE_DEVICES variables name none)" if not found \
            else f"{len(found)} found, none used (cluster.gpus_per_node=0)"
        return [f"GPUs: {why}: the ranks compute on the CPU, {cl.tasks_per_node} per stage (or the stage's own "
                f"tasks_per_node), as cluster=local"]
    kinds = ", ".join(f"{n} x {name}" for name, n in Counter(found).items())
    used = f"the first {cl.gpus_per_node} of {len(found)}" if cl.gpus_per_node < len(found) else "all"
    lines = [f"GPUs: {kinds} ({cl.visible_devices}); {used} used, one rank per GPU"]
    if all(f == "unknown GPU" for f in found):
        lines.append(f"  {var} names them, but neither nvidia-smi nor rocm-smi answered here: name and memory "
                     f"unknown; a rank whose torch finds no GPU computes on the CPU (fake GPUs, as the test cluster's)")
    named = {f.split(", ")[0] for f in found} - {"unknown GPU"}
    if not cl.device and str(cfg.throughput.device) == "auto":
        what = "the GPU is unknown"
        if len(named) == 1:
            what = f"{next(iter(named))} has no entry in the peak and throughput tables"
        elif named:
            what = f"mixed GPUs ({', '.join(sorted(named))}): no one entry stands for them"
        lines.append(f"  {what}: predicted as h100; set cluster.device (or throughput.device) to a "
                     f"throughput.devices entry ({', '.join(cfg.throughput.devices)})")
    return lines

