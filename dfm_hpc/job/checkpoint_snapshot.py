"""Checkpoint evaluations, the training side (`<stage>.eval_checkpoints`): rank 0, at each N-th save, keeps the
checkpoint's weights for its evaluate job and names it to the batch script (docs/evaluation.md#checkpoint-evaluation).

The Trainer's checkpoint-<N>/ holds loadable weights already: the adapter under LoRA, model.safetensors under
full fine-tuning (ZeRO-3 gathers the 16-bit weights on save: ds_config's stage3_gather_16bit_weights_on_model_save),
so no consolidation is needed. Its weight files are hard-linked into checkpoint_evals/step-<N>/ (no bytes copied;
the rotation of keep_checkpoints unlinks only its own name), its small files copied; an adapter's config names the
base it was trained on (train.record_adapter_base's rule). The optimizer state stays behind. Counting is by saves
in order, across restarts (checkpoint_evals/saves: one step per line).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

from dfm_hpc.rundir import CHECKPOINT_EVALS, CHECKPOINT_QUEUE_ENV

LINKED = (".safetensors", ".bin")  # weights: linked; everything else at the checkpoint's top level is small
LEFT = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "latest", "zero_to_fp32.py",
        "zero_to_torch.py")


def snapshot(ckpt: Path, out: Path, base: str = "") -> Path:
    """checkpoint-<N>/ -> out/ (weights hard-linked, or copied across file systems; no optimizer state)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(ckpt.iterdir()):
        if not f.is_file() or f.name in LEFT or f.name.startswith("rng_state"):
            continue
        if f.name.endswith(LINKED):
            try:
                os.link(f, tmp / f.name)
                continue
            except OSError:  # another file system: a copy
                pass
        shutil.copy2(f, tmp / f.name)
    if base:
        from dfm_hpc.job.train import record_adapter_base

        record_adapter_base(tmp, base)  # PEFT writes the merged-in base's origin; the scored model is on `base`
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def due(saves_file: Path, step: int, every: int) -> bool:
    """Record this save (once per step) and say whether it is an N-th one."""
    steps: List[int] = [int(x) for x in saves_file.read_text().split()] if saves_file.exists() else []
    if step not in steps:
        steps.append(step)
        saves_file.write_text("".join(f"{s}\n" for s in steps))
    return (steps.index(step) + 1) % every == 0


def request(queue: Path, run_dir: Path, stage: str, step: int) -> None:
    """Name the checkpoint to the batch script's loop (written whole, then renamed: it never reads half)."""
    queue.mkdir(parents=True, exist_ok=True)
    tmp = queue / f".step-{step}"
    tmp.write_text(f"{Path(run_dir).resolve()}\n{stage}\n{step}\n")
    tmp.rename(queue / f"step-{step}")


def callbacks(cfg, ctx, st, stage: str, base: str = "") -> list:
    """[the TrainerCallback] when `<stage>.eval_checkpoints` is on, else []. `base`: an adapter's base (sft)."""
    every = getattr(st, "eval_checkpoints", None) or 0
    if not every:
        return []
    from transformers import TrainerCallback

    out_dir = ctx.stage_dir / CHECKPOINT_EVALS

    class Snapshot(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if not ctx.is_main:
                return
            step = state.global_step
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "logs").mkdir(exist_ok=True)
                if not due(out_dir / "saves", step, every):
                    return
                snapshot(Path(args.output_dir) / f"checkpoint-{step}", out_dir / f"step-{step}", base)
                queue = os.environ.get(CHECKPOINT_QUEUE_ENV)
                if queue:  # Slurm: the batch script queues its job; else (cluster=local) scored after the stage
                    request(Path(queue), ctx.run_dir, stage, step)
            except OSError as e:  # an evaluation lost, never the training (a full disk shows at the next save)
                ctx.log(f"checkpoint at step {step}: not kept for its evaluation: {e}")
                return
            ctx.log(f"checkpoint at step {step}: kept for its evaluation ({out_dir / f'step-{step}'})")

    return [Snapshot()]
