"""The `deepspeed` config group rendered into DeepSpeed's JSON (pure: used at plan time and in jobs).

Batch sizes are written out, not "auto": the plan already knows the world size, and the same
numbers go into the run dir for people to read. `train_batch_size` is left for DeepSpeed to derive
(micro x accumulation x world size), so the file is valid whatever world size parses it.
"""

from __future__ import annotations

from typing import Any, Dict


def render(ds, stage_cfg, world_size: int) -> Dict[str, Any]:
    per_step = world_size * stage_cfg.micro_batch_size
    zero: Dict[str, Any] = {
        "stage": ds.stage,
        "overlap_comm": ds.overlap_comm,
        "contiguous_gradients": ds.contiguous_gradients,
        "reduce_bucket_size": ds.reduce_bucket_size,
    }
    if ds.offload_optimizer and ds.stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params and ds.stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if ds.stage == 3:
        # full weights gathered on save, so checkpoints and adapters are not empty (peft#2892, trl#4416)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": stage_cfg.micro_batch_size,
        "gradient_accumulation_steps": max(1, stage_cfg.global_batch_size // per_step),
        "gradient_clipping": 1.0,
        "bf16": {"enabled": stage_cfg.precision == "bf16"},
        "zero_optimization": zero,
        "steps_per_print": stage_cfg.log_every_steps,
        "wall_clock_breakdown": False,
    }
