"""Resume a DeepSpeed ZeRO checkpoint on another number of ranks, via DeepSpeed's universal checkpoint.

A ZeRO checkpoint (checkpoint-N/global_stepN/) holds one optimizer partition per rank, so DeepSpeed
loads it only on as many ranks as wrote it. When the checkpoint a job resumes from was written by
another number of ranks, rank 0 converts it with DeepSpeed's own `ds_to_universal` (fp32 weights and
Adam moments per parameter, independent of the partitioning; `--inject_missing_state` because the HF
Trainer does not record the universal-checkpoint info Megatron-DeepSpeed does) into
checkpoint-N/global_stepN_universal/ plus checkpoint-N/latest_universal, and every rank loads that
with DeepSpeed's `checkpoint.load_universal`. The Trainer's state (step, scheduler, data position) is
per run, not per rank, and the global batch stays the same (gradient accumulation makes up the
difference), so training continues at the same global sample.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional


def saved_world_size(ckpt: Path) -> Optional[int]:
    """How many ranks wrote a Trainer checkpoint's DeepSpeed state (one optimizer file each)."""
    latest = Path(ckpt) / "latest"
    if not latest.exists():
        return None
    files = list((Path(ckpt) / latest.read_text().strip()).glob("*_optim_states.pt"))
    return len(files) or None


def link(src: Path, dst: Path) -> None:
    """dst: a directory of symlinks to src's files (its DeepSpeed tag dir linked whole), so the
    conversion and later checkpoints land in this run, and the other run is only read."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not (tmp / f.name).exists() and not f.name.endswith("_universal"):
            (tmp / f.name).symlink_to(f.resolve(), target_is_directory=f.is_dir())
    tmp.replace(dst)


def convert(ckpt: Path, ctx) -> None:
    tag = (ckpt / "latest").read_text().strip()
    out = ckpt / f"{tag}_universal"
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt / tag),
           "--output_folder", str(out), "--inject_missing_state",
           "--num_extract_workers", str(min(4, os.cpu_count() or 1)), "--num_merge_workers", "1"]
    ctx.log("converting to a universal checkpoint: " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"ds_to_universal failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def prepare_resume(cfg, ctx) -> bool:
    """Make the checkpoint this job resumes from loadable here; True when it is a universal one.
    cpt.resume_from (a checkpoint of another run) is linked in when this run has none of its own."""
    from dfm_hpc.job import data, train

    ckpt = train.latest_checkpoint(ctx)
    if ckpt is None and cfg.cpt.resume_from:
        src = Path(cfg.cpt.resume_from).resolve()
        dst = ctx.stage_dir / "checkpoints" / src.name
        if ctx.is_main and not dst.exists():
            link(src, dst)
        data.wait_for([dst], "rank 0 to link cpt.resume_from", ctx)
        ckpt = str(dst)
    if ckpt is None:
        return False
    ckpt = Path(ckpt)
    n = saved_world_size(ckpt)
    if n is None or n == ctx.world_size:
        return False
    ctx.log(f"{ckpt.name} was written by {n} ranks; this job has {ctx.world_size}: "
            "loading it as a universal checkpoint")
    if ctx.is_main and not (ckpt / "latest_universal").exists():
        convert(ckpt, ctx)
    data.wait_for([ckpt / "latest_universal"], "rank 0 to convert the checkpoint", ctx)
    return True
