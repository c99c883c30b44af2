"""Demo stage: every rank all_reduces (rank + 1) * value over gloo; rank 0 writes the sum.

Proves the launch path end to end: env:// rendezvous from the launcher's variables, every rank
of every node taking part, outputs landing in the stage dir.
"""

from __future__ import annotations

import json
import os
import time

from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    try:
        if cfg.demo.sleep_s > 0:
            end = time.time() + cfg.demo.sleep_s
            while time.time() < end:
                ctx.log(f"working... {max(0.0, end - time.time()):.0f} s left")
                time.sleep(min(5.0, max(0.0, end - time.time())))
        if cfg.demo.fail:
            raise RuntimeError("demo.fail=true: failing on purpose")
        t = torch.tensor([(ctx.rank + 1) * cfg.demo.value], dtype=torch.float64)
        dist.all_reduce(t)
        hosts = [None] * ctx.world_size
        dist.all_gather_object(hosts, os.environ.get("SLURMD_NODENAME") or os.uname().nodename)
        w = ctx.world_size
        expected = cfg.demo.value * w * (w + 1) / 2
        ctx.log(f"all_reduce sum = {t.item()} (expected {expected})")
        if ctx.is_main:
            result = {"world_size": w, "sum": t.item(), "expected": expected, "hosts": hosts}
            (ctx.stage_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        if abs(t.item() - expected) > 1e-9:
            raise RuntimeError(f"all_reduce gave {t.item()}, expected {expected}")
        dist.barrier()
    finally:
        dist.destroy_process_group()
