"""A training stage's memory per GCD/GPU against the device (estimates.py counts it): refused at plan time with
the parts of the estimate and the changes that fit, each estimated; which sequence-parallel degrees fit."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from dfm_hpc import model_shape
from dfm_hpc.estimates import DEVICE_MEMORY_GB, MemoryEstimate, device_key, estimate_for
from dfm_hpc.tokens import sequence_parallel


def device_memory_gb(job, cluster) -> Optional[float]:
    """Memory of one device of this job, or None when it runs without GPUs (nothing to check)."""
    if not job.gpus_per_node:
        return None
    from dfm_hpc import lumi

    if getattr(cluster, "device_memory_gb", None):  # as the profile (or cluster=node's driver) says
        return float(cluster.device_memory_gb)
    # the GPU the profile names (cluster.device); else LUMI's GCD, a budget that fits most GPUs
    key = device_key(str(getattr(cluster, "device", None) or ""))
    return float(DEVICE_MEMORY_GB.get(key or "", lumi.GCD_MEMORY_GB))


def host_memory_gb_per_rank(job, cluster) -> Optional[float]:
    """Host memory a rank may use (for offloaded state), or None when the profile does not say."""
    from dfm_hpc import lumi

    try:
        if cluster.mem_per_gpu:
            return lumi.parse_mem_gb(cluster.mem_per_gpu) * max(1, job.gpus_per_node) / max(1, job.tasks_per_node)
        mem = lumi.parse_mem_gb(cluster.mem)
    except ValueError:
        return None
    if mem == 0 and cluster.system == "lumi":
        mem = float(lumi.NODE_MEMORY_GB)
    return mem / max(1, job.tasks_per_node) if mem else None


def check_fits(job, cfg) -> List[str]:
    """Problems (empty if none) when a training stage's estimate exceeds the device memory.

    The message names the estimate, its parts, and the alternatives that do fit (each estimated).
    Skipped for stages without GPUs (their memory is not a GCD's) and for a model whose shape is unknown.
    """
    st, cl = cfg[job.stage], cfg.cluster
    if str(st.precision) not in ("bf16", "fp32"):
        return [f"{job.stage}.precision={st.precision!r}: use bf16 or fp32"]
    device_gb = device_memory_gb(job, cl)
    if (device_gb is None or str(cfg.peft.method) not in ("none", "lora", "qlora")
            or not 0 <= int(cfg.deepspeed.stage) <= 3 or int(st.micro_batch_size) < 1 or job.world_size < 1):
        return []  # nothing to check, or reported elsewhere
    shape = model_shape.of(cfg)
    if not shape:
        return []  # nothing to estimate from; the plan's summary says why (a guess could refuse a good run)
    host_gb = host_memory_gb_per_rank(job, cl)
    dev = "GCD" if cl.system == "lumi" else "GPU"

    def fits(e: MemoryEstimate) -> bool:
        return e.total <= device_gb and (host_gb is None or e.cpu <= host_gb)

    est = estimate_for(job, cfg, shape)
    problems: List[str] = []
    if host_gb is not None and est.cpu > host_gb:
        problems.append(f"{job.stage}: ~{est.cpu:.0f} GB of offloaded state per rank in host memory, "
                        f"over the {host_gb:.0f} GB a rank gets ({est.explain()})")
    if est.total <= device_gb:
        return problems

    s, ds, method = job.stage, cfg.deepspeed, str(cfg.peft.method)
    # single changes, each estimated; if none fits, pairs of them
    changes: List[Tuple[str, Dict[str, Any]]] = []
    if ds.stage < 3 and method != "qlora":
        changes.append(("deepspeed=zero3", dict(zero_stage=3, offload_optimizer=False, offload_params=False)))
    if method != "qlora" and not (ds.offload_optimizer and ds.offload_params and ds.stage == 3):
        changes.append(("deepspeed=zero3_offload", dict(zero_stage=3, offload_optimizer=True, offload_params=True)))
    if not st.gradient_checkpointing:
        changes.append((f"{s}.gradient_checkpointing=true", dict(gradient_checkpointing=True)))
    if method == "none":
        changes.append(("peft=lora", dict(peft_method="lora")))
    mb = int(st.micro_batch_size)
    smaller = [m for m in range(mb - 1, 0, -1) if st.global_batch_size % (job.world_size * m) == 0]
    estimated = ((label, estimate_for(job, cfg, shape, **ch)) for label, ch in changes)
    fitting = [(label, e) for label, e in estimated if fits(e)]
    for m in smaller:  # the largest micro-batch that fits alone
        e = estimate_for(job, cfg, shape, micro_batch=m)
        if fits(e):
            fitting.append((f"{s}.micro_batch_size={m}", e))
            break
    if not fitting:
        if smaller:
            changes.append((f"{s}.micro_batch_size={smaller[-1]}", dict(micro_batch=smaller[-1])))
        for i, (la, ca) in enumerate(changes):
            for lb, cb in changes[i + 1:]:
                if la.split("=")[0] == lb.split("=")[0]:
                    continue  # two values of the same key
                e = estimate_for(job, cfg, shape, **{**ca, **cb})
                if fits(e):
                    fitting.append((f"{la} {lb}", e))
    if not fitting and method != "qlora":  # last resort: a 4-bit base (not with ZeRO-3)
        e = estimate_for(job, cfg, shape, peft_method="qlora", zero_stage=min(int(ds.stage), 2), offload_params=False)
        if fits(e):
            fitting.append(("peft=qlora" + (" deepspeed=zero2" if ds.stage == 3 else ""), e))
    what = est.explain().replace("per device", f"per {dev}", 1)
    if fitting:
        options = ", or ".join(f"{label} (~{e.total:.0f} GB)" for label, e in fitting[:4])
        tail = f"fits: {options}"
    else:
        tail = (f"nothing simple fits; use more nodes with deepspeed=zero3, a shorter {s}.seq_len, "
                "or a smaller model")
    problems.append(f"{s}: {what} > {device_gb:.0f} GB per {dev}; {tail}")
    return problems


def plan_line(job, cfg) -> Optional[str]:
    """The plan's memory line of a training stage on GPUs: its estimate per device and, for sft, which
    sequence-parallel degrees (1/2/4/8) fit the device (each estimated; one line). None without GPUs or a shape."""
    device_gb = device_memory_gb(job, cfg.cluster)
    shape = model_shape.of(cfg)
    if device_gb is None or not shape or str(cfg.peft.method) not in ("none", "lora", "qlora"):
        return None
    dev = "GCD" if cfg.cluster.system == "lumi" else "GPU"
    st = cfg[job.stage]
    est = estimate_for(job, cfg, shape)
    line = f"~{est.total:.0f} GB per {dev} of {device_gb:.0f}"
    if "sequence_parallel" in st:
        degrees = [n for n in (1, 2, 4, 8) if not job.world_size % n and not st.seq_len % n]
        totals = {n: estimate_for(job, cfg, shape, sequence_parallel=n).total for n in degrees}
        fits = [f"{n} ~{gb:.0f} GB{' fits' if gb <= device_gb else ''}" for n, gb in totals.items()]
        line += (f" (sequence_parallel {sequence_parallel(st)}); at {st.seq_len:,} tokens sequence_parallel "
                 + ", ".join(fits))
        if shape.linear_attention_layers:
            line += " (only 1 for this model: linear-attention layers)"
    return line + (f"; {'; '.join(shape.notes)}" if shape.notes else "")
