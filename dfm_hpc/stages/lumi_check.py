"""lumi_check stage: the first run a LUMI user makes (`+experiment=lumi_check`), with a short verdict.

On 2 nodes: (1) all_reduce bus bandwidth at a few message sizes; (2) RCCL's log (NCCL_DEBUG=INFO)
must say `NET/OFI Selected Provider is cxi`, else inter-node traffic is on TCP sockets; (3) each rank
takes its own GCD (local rank r -> GPU r) and runs on that GCD's 7 cores: per rank, the cores it may run on
against the `mask_cpu` entry meant for its local rank and srun's `-c` (LUMI's course: `mask_cpu` "will not
always work together with `--cpus-per-task`", so the outcome is read, not assumed). RCCL (nccl) where there
are GPUs, gloo on CPUs: the local cluster checks the GPU choice and the bandwidth, and says what it
cannot check there. Outputs: result.json and verdict.md in the stage dir; the verdict in rank 0's log.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Dict, List, Optional, Tuple

from dfm_hpc import dist as dist_env
from dfm_hpc import lumi
from dfm_hpc.job.rank import StageContext
from dfm_hpc.rundir import rank_log
from dfm_hpc.schema import Config

CXI = re.compile(r"NET/OFI Selected Provider is cxi", re.IGNORECASE)


def bus_gbps(nbytes: int, seconds: float, world: int) -> float:
    """nccl-tests' bus bandwidth of an all_reduce: data size / time x 2(n-1)/n, in GB/s."""
    return nbytes / seconds * 2 * (world - 1) / max(world, 1) / 1e9


def rank_info(ctx: StageContext) -> Dict:
    return {"rank": ctx.rank, "host": os.environ.get("SLURMD_NODENAME") or os.uname().nodename,
            "local_rank": ctx.env.local_rank, "gpu": dist_env.gpu_index(), "visible": dist_env.visible_gpus(),
            "cores": sorted(os.sched_getaffinity(0))}


def mask_cores(cpu_bind: Optional[str]) -> Optional[List[List[int]]]:
    """The cores of each entry of srun's `--cpu-bind=mask_cpu:M0,M1,...` (local rank i gets entry i), or None."""
    m = re.search(r"mask_cpu:([0-9a-fA-Fx,]+)", cpu_bind or "")
    if not m:
        return None
    masks = [int(h, 16) for h in m.group(1).split(",") if h]
    return [[c for c in range(m.bit_length()) if m >> c & 1] for m in masks] or None


def binding(ranks: List[Dict], masks: Optional[List[List[int]]], cpus_per_task: Optional[int]) -> List[Dict]:
    """Per rank, the `-c`/`mask_cpu` outcome: the cores it may run on against the mask meant for its local rank
    (srun cycles the list) and the `-c` count. ok: True/False, None where there is no mask to hold it to."""
    rows = []
    for r in ranks:
        cores, meant = r["cores"], masks[r["local_rank"] % len(masks)] if masks else None
        if meant is not None:
            ok = cores == meant
            note = "as meant" if ok else ("the mask was not applied (more cores than it names)"
                                          if set(meant) < set(cores) else "other cores than the mask names")
        elif cpus_per_task and len(cores) < cpus_per_task:
            ok, note = False, f"fewer cores than -c {cpus_per_task} (srun did not get --cpus-per-task?)"
        else:
            ok, note = None, "no mask to hold it to"
        if ok and cpus_per_task and len(cores) != cpus_per_task:
            note += f"; {len(cores)} cores for -c {cpus_per_task}"
        rows.append({"rank": r["rank"], "host": r["host"], "local_rank": r["local_rank"], "cores": cores,
                     "mask": meant, "cpus_per_task": cpus_per_task, "ok": ok, "note": note})
    return rows


def binding_lines(rows: List[Dict]) -> List[str]:
    """The verdict's per-rank lines: allowed cores vs the mask meant for the rank."""
    out = []
    for b in rows:
        meant = _span(b["mask"]) if b["mask"] is not None else "none"
        mark = "ok" if b["ok"] else "n/a" if b["ok"] is None else "FAIL"
        out.append(f"    rank {b['rank']} ({b['host']}, local {b['local_rank']}): cores {_span(b['cores'])} "
                   f"({len(b['cores'])}), mask {meant}, -c {b['cpus_per_task']}: [{mark}] {b['note']}")
    return out


def verdict(ranks: List[Dict], backend: str, log_text: str, lumi_node: bool,
            bound: Optional[List[Dict]] = None) -> List[Tuple[str, Optional[bool], str]]:
    """(check, passed or None when it cannot be checked here, detail) for each check. `bound`: binding()'s rows."""
    out: List[Tuple[str, Optional[bool], str]] = []
    if all(r["gpu"] is None for r in ranks):
        out.append(("own GPU", None, "no GPU visible to the ranks"))
    else:
        wrong = [r for r in ranks if r["gpu"] != r["local_rank"] % max(r["visible"], 1)]
        by_node: Dict[str, List[int]] = {}
        for r in ranks:
            by_node.setdefault(r["host"], []).append(r["gpu"])
        shared = {h: g for h, g in by_node.items() if len(set(g)) < len(g)}
        ok = not wrong and not shared
        out.append(("own GPU", ok, "local rank r uses GPU r on every node" if ok else
                    f"ranks {[r['rank'] for r in wrong]} do not use the GPU of their local rank; shared: {shared}"))
    unmasked = [b["rank"] for b in bound or [] if b["ok"] is False]
    if lumi_node:
        off = [r["rank"] for r in ranks if r["gpu"] is not None and r["cores"] != list(lumi.GCD_CORES[r["gpu"]])]
        off = sorted(set(off) | set(unmasked))
        out.append(("bound to its GCD's cores", not off, "each rank on the 7 cores closest to its GCD" if not off else
                    f"ranks {off} run on other cores (launcher=torchrun needs --numa-binding; srun the CPU masks; "
                    "per rank below)"))
    elif any(b["mask"] is not None for b in bound or []):
        out.append(("bound to its GCD's cores", not unmasked, "each rank on its mask's cores" if not unmasked else
                    f"ranks {unmasked} are not on their mask's cores (per rank below)"))
    else:
        out.append(("bound to its GCD's cores", None, "no LUMI-G core map here; cores per rank: "
                    + ", ".join(f"{r['rank']}:{_span(r['cores'])}" for r in ranks)))
    if backend == "nccl":
        ok = bool(CXI.search(log_text))
        out.append(("RCCL on Slingshot (cxi)", ok, "NET/OFI Selected Provider is cxi" if ok else
                    "no 'Selected Provider is cxi' in RCCL's log: inter-node traffic is not on the cxi provider "
                    "(container, bindings module, aws-ofi-rccl plugin; docs/lumi.md)"))
    else:
        out.append(("RCCL on Slingshot (cxi)", None, f"{backend} here, no RCCL"))
    return out


def _meant(cfg: Config) -> Tuple[Optional[List[List[int]]], Optional[int]]:
    """The masks (srun launcher only: torchrun's one task per node takes none) and -c this job asked for."""
    from dfm_hpc.plan import stage_cluster

    cl, st = stage_cluster(cfg, "lumi_check"), cfg.lumi_check
    masks = mask_cores(cl.cpu_bind) if str(cl.launcher) == "srun" else None
    return masks, st.cpus_per_task if st.cpus_per_task is not None else cl.cpus_per_task


def _span(cores: List[int]) -> str:
    return f"{cores[0]}-{cores[-1]}" if cores and cores == list(range(cores[0], cores[-1] + 1)) else str(cores)


def measure(cfg: Config, ctx: StageContext, device) -> List[Dict]:
    import torch
    import torch.distributed as dist

    rows = []
    for mb in cfg.lumi_check.sizes_mb:
        n = max(1, int(mb * 1e6 / 4))
        t = torch.ones(n, dtype=torch.float32, device=device)
        dist.all_reduce(t)  # warm-up (and RCCL's connection setup)
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(cfg.lumi_check.iterations):
            dist.all_reduce(t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = (time.perf_counter() - t0) / cfg.lumi_check.iterations
        bus = round(bus_gbps(n * 4, secs, ctx.world_size), 3)
        rows.append({"size_mb": mb, "seconds": round(secs, 6), "bus_gbps": bus})
        ctx.log(f"all_reduce {mb:g} MB: {secs * 1e3:.2f} ms, bus {rows[-1]['bus_gbps']:.2f} GB/s")
    return rows


def run(cfg: Config, ctx: StageContext) -> None:
    import torch
    import torch.distributed as dist

    from dfm_hpc.job.device import torch_device

    device = torch.device(torch_device())
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://")
    try:
        rows = measure(cfg, ctx, device)
        infos: List[Optional[Dict]] = [None] * ctx.world_size
        dist.all_gather_object(infos, rank_info(ctx))
        if ctx.is_main:
            import sys

            sys.stdout.flush()  # RCCL writes to this rank's log (stdout); read what it said
            log = rank_log(ctx.stage_dir, 0).read_text(errors="replace")
            lumi_node = cfg.cluster.system == "lumi" and all(r["visible"] == lumi.GCDS_PER_NODE for r in infos)
            bound = binding(infos, *_meant(cfg))
            checks = verdict(infos, backend, log, lumi_node, bound)
            failed = [c for c in checks if c[1] is False]
            word = "PROBLEM" if failed else "OK"
            nodes = len({r["host"] for r in infos})
            lines = [f"lumi_check: {word} ({ctx.world_size} ranks on {nodes} nodes, {backend})"]
            lines += [f"  all_reduce {r['size_mb']:g} MB: bus {r['bus_gbps']:.2f} GB/s" for r in rows]
            lines += [f"  [{'ok' if ok else 'n/a' if ok is None else 'FAIL'}] {name}: {detail}"
                      for name, ok, detail in checks]
            lines += ["  cores per rank (-c and mask_cpu as the job asked):", *binding_lines(bound)]
            for line in lines:
                ctx.log(line)
            (ctx.stage_dir / "verdict.md").write_text("\n".join(lines) + "\n")
            (ctx.stage_dir / "result.json").write_text(json.dumps(
                {"verdict": word, "backend": backend, "bandwidth": rows, "ranks": infos, "binding": bound,
                 "checks": [{"check": n, "passed": ok, "detail": d} for n, ok, d in checks]}, indent=2) + "\n")
        dist.barrier()
    finally:
        dist.destroy_process_group()
