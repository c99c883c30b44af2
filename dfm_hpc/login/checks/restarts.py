"""The restart cap against the plan: a Slurm job whose stage is predicted to need more requeues than
`cluster.max_restarts` allows would fail unfinished at the cap (job/rank.py), days into a run. Refused
at plan time instead, naming the stage, its predicted starts, and the two keys that fix it."""

from __future__ import annotations

import math
from typing import Dict, List

from dfm_hpc import lumi


def check_restarts(cfg, records: List[Dict]) -> List[str]:
    """Every stage's predicted requeues (plan.json's prediction) within cluster.max_restarts."""
    if cfg.cluster.scheduler != "slurm":  # the local launcher never requeues
        return []
    cap, out = cfg.cluster.max_restarts, []
    for r in records:
        p = r["prediction"]
        if not p.get("resumable") or not p.get("requeues") or p["requeues"] <= cap:
            continue  # one that cannot resume and needs requeues is refused by predict.problems
        dev = cfg.throughput.devices.get(p["device"])
        startup = dev.startup_s if dev else 0.0
        work_s = p["hours"] * 3600 - p["starts"] * startup  # the stage's work, without its start-ups
        need = math.ceil((work_s / (cap + 1) + startup) / 60 * 1.1)  # cap + 1 starts, 10 % room
        part = lumi.PARTITIONS.get(r.get("partition") or "") if cfg.cluster.system == "lumi" else None
        longer = "" if part and need > part.max_hours * 60 else (  # past the partition's limit: no advice
            f", or {r['stage']}.time={need // 60:02d}:{need % 60:02d}:00 or longer (fewer starts)")
        wall = f"{r['minutes'] // 60}:{r['minutes'] % 60:02d}"
        out.append(f"{r['stage']}: predicted {p['hours']:,.1f} h, {p['starts']} starts of its {wall} walltime "
                   f"({p['requeues']} requeues), more than cluster.max_restarts={cap} allows: it would fail "
                   f"unfinished after {cap} restart{'s' * (cap != 1)}. Set cluster.max_restarts={p['requeues'] + 2} "
                   f"or more (room for node failures){longer}")
    return out
