"""Ulysses sequence parallelism (sft.sequence_parallel) on 2 CPU ranks (gloo): DeepSpeed's all-to-all and the
sequence-sharded dataloader run there, so the first step's loss with N=2 is compared with N=1 on the same chats.
~35 s (two full-FT SFT runs of 2 steps on tiny:llama)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import dfm, make_cfg, run_dirs

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

# Same 8 chats per step either way; what differs: N=2 pads rows to seq_len and reduces the loss over the group's
# tokens (DeepSpeed's sequence-tiled loss), N=1 averages per micro-batch: fp32 sums in another order. Seen: 0.0017.
LOSS_TOLERANCE = 0.01


def _first_loss(tmp_path, n: int) -> float:
    root = tmp_path / f"sp{n}"
    root.mkdir()
    p = dfm("+experiment=sft_tiny", "stages=[sft]", "peft=none", "sft.max_steps=2", f"sft.sequence_parallel={n}",
            cwd=root, timeout=600)
    (run,) = run_dirs(root)
    rows = [json.loads(line) for line in (run / "stages" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[0]["step"] == 1, p.stdout[-3000:] + p.stderr[-3000:]
    return rows[0]["loss"]


@pytest.mark.e2e
def test_sequence_parallel_2_gives_the_loss_of_1(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: mostly imports, one core each
        two, one = pool.map(lambda n: _first_loss(tmp_path, n), (2, 1))
    assert abs(two - one) <= LOSS_TOLERANCE, (two, one)


def test_training_args_carry_the_parallelism_config():
    """sft.sequence_parallel=2 reaches TrainingArguments as accelerate's ParallelismConfig (DeepSpeed backend),
    with DeepSpeed's batch counted over the data-parallel ranks (world 4 / 2)."""
    from dfm_hpc.job import train

    cfg = make_cfg("+experiment=sft_tiny", "sft.sequence_parallel=2", "sft.global_batch_size=8")
    ctx = SimpleNamespace(world_size=4, stage_dir=Path("/nonexistent"), is_main=True)
    args = train.training_args(cfg, ctx, cfg.sft)
    pc = args["parallelism_config"]
    assert (pc.sp_backend, pc.sp_size, pc.sp_handler.sp_seq_length) == ("deepspeed", 2, cfg.sft.seq_len)
    assert args["gradient_accumulation_steps"] == 8 // (2 * cfg.sft.micro_batch_size)
    assert args["deepspeed"]["gradient_accumulation_steps"] == args["gradient_accumulation_steps"]
    assert args["pad_to_multiple_of"] % 2 == 0
    plain = train.training_args(cfg, ctx, make_cfg("+experiment=sft_tiny").sft)
    assert "parallelism_config" not in plain and "use_liger_kernel" not in plain
    liger = make_cfg("+experiment=sft_tiny", "sft.liger_kernel=true").sft
    assert train.training_args(cfg, ctx, liger)["use_liger_kernel"] is True
