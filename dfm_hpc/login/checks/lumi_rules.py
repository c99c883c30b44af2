"""LUMI's usage rules (LUMI's facts: lumi.py, sources in docs/lumi.md): dev partitions run no stage that needs
requeues (refused, from the predictions), checkpoints belong on /scratch or /flash (a warning with the predicted
size against the quota of the file system runs_root is on), and a translator runs on what the job pays for
(ctranslate2 on GPU nodes refused without a GPU build)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from dfm_hpc import estimates, lumi, model_shape
from dfm_hpc.registry import TRAINED_STAGES

OPTIMIZER_BYTES = 12  # fp32 master weights + Adam's two moments, per trainable parameter
WEIGHT_BYTES = 2  # bf16 weights as the Trainer saves them (ZeRO-3 gathers 16-bit weights on save)


def check_predictions(cfg, records: List[Dict]) -> List[str]:
    """A stage on a dev partition (dev-g) predicted to need more than one start: production work there
    is "abuse ... [that] might result in account suspension" (LUMI user guide, partitions.md)."""
    if cfg.cluster.system != "lumi":
        return []
    out = []
    for r in records:
        part, p = lumi.PARTITIONS.get(r.get("partition") or ""), r["prediction"]
        if part is None or not part.dev or not p.get("starts") or p["starts"] <= 1:
            continue
        wall = f"{r['minutes'] // 60}:{r['minutes'] % 60:02d}"
        out.append(f"{r['stage']}: predicted {p['hours']:,.1f} h, {p['starts']} starts of its {wall} walltime "
                   f"({p['requeues']} requeue{'s' * (p['requeues'] != 1)}) on {part.name}; {part.name} is for "
                   "debugging and quick testing, not production runs (LUMI's user guide: repeated abuse may lead "
                   f"to account suspension). Use cluster=lumi (standard-g) or cluster=lumi_small, or give "
                   f"{r['stage']} work that fits one start (fewer {r['stage']}.max_steps)")
    return out


def check_translator(cfg, jobs) -> List[str]:
    """translator.backend=ctranslate2 on LUMI-G: CTranslate2's PyPI wheel has no HIP and its ROCm wheels (v4.7+,
    GitHub releases only) are built for RDNA (gfx1030-gfx1201), not the MI250X's gfx90a, so each rank would
    translate on its 7 cores while the GCDs it is billed for idle. Refused unless the image declares a GPU build."""
    cl = cfg.cluster
    if cl.system != "lumi" or str(cfg.translator.backend) != "ctranslate2" or cl.container.get("ctranslate2_gpu"):
        return []
    out = []
    for j in (j for j in jobs if j.stage == "translate" and j.gpus_per_node):
        out.append(f"translate: translator.backend=ctranslate2 on {j.partition} would run on the CPU: CTranslate2's "
                   "PyPI wheel has no HIP, and its ROCm wheels (v4.7+, GitHub releases only) are built for RDNA "
                   "GPUs (gfx1030-gfx1201), not LUMI's MI250X (gfx90a); its "
                   f"{j.nodes * j.gpus_per_node * j.array} GCDs would idle while each rank translates on "
                   f"{j.cpus_per_task} cores. Use translator.backend=hf (transformers on the GCDs), or, with an "
                   "image whose CTranslate2 is a gfx90a source build, cluster.container.ctranslate2_gpu=true")
    return out


def checkpoint_gb(cfg, stage: str) -> Optional[float]:
    """A training stage's files at their largest, in GB: `keep_checkpoints` checkpoints (the trained weights
    and their optimizer state) and the saved model (an adapter, and with merge_adapter the merged model).
    None when the model's shape is unknown."""
    shape = model_shape.of(cfg)
    if not shape:
        return None
    st, n = cfg[stage], estimates.param_count(shape)
    full = stage == "cpt" or cfg.peft.method == "none"
    trained = n if full else estimates.lora_params(shape, cfg.peft.r, list(cfg.peft.target_modules))
    ckpt = trained * (WEIGHT_BYTES + OPTIMIZER_BYTES)
    model = trained * WEIGHT_BYTES + (n * WEIGHT_BYTES if not full and st.get("merge_adapter") else 0)
    return (st.keep_checkpoints * ckpt + model) / estimates.GB


def storage_warnings(cfg) -> List[str]:
    """On LUMI, a runs_root outside /scratch and /flash: what this run's checkpoints take against the
    quota of the file system it is on (home 20 GB, /project 50 GB)."""
    if cfg.cluster.system != "lumi":
        return []
    where = os.path.abspath(os.path.expanduser(str(cfg.runs_root)))
    fs = lumi.filesystem(where)
    if fs is not None and fs.for_jobs:
        return []
    sizes = {s: checkpoint_gb(cfg, s) for s in cfg.stages if s in TRAINED_STAGES}
    known = {s: gb for s, gb in sizes.items() if gb is not None}
    total = sum(known.values())
    each = ", ".join(f"{s}: {gb:,.1f} GB, {cfg[s].keep_checkpoints} checkpoints + the model" for s, gb in known.items())
    size = f"; this run's training files take ~{total:,.1f} GB at their largest ({each})" if known else ""
    on = "not on a LUMI file system" if fs is None else f"on {fs.name}"
    quota = ""
    if fs is not None:
        quota = f", whose quota is {fs.quota_gb:g} GB and {fs.max_files:,} files"
        if total > fs.quota_gb:
            quota += ": the run would fill it and fail mid-run"
    root = str(cfg.runs_root) + (f" ({where})" if where != str(cfg.runs_root) else "")
    account = cfg.cluster.account or "<project>"
    return [f"runs_root={root} is {on}{quota}{size}. Job data belongs on /scratch (or /flash): "
            f"runs_root=/scratch/{account}/runs"]
