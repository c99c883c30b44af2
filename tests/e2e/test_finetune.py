"""SFT and DPO with LoRA under DeepSpeed ZeRO-3 on 2 CPU ranks; saved adapters are complete."""

from __future__ import annotations

import pytest

from helpers import dfm, run_dirs
from helpers.outputs import check_finetune

pytest.importorskip("deepspeed")
pytest.importorskip("trl")


def test_sft_and_dpo_with_lora_under_zero3_locally(tmp_path):
    p = dfm("+experiment=sft_tiny", "sft.merge_adapter=true", "dpo.merge_adapter=true", cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    check_finetune(run, merged=True)
