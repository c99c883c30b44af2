"""bench/gpu.sh in its CPU smoke mode (tiny shapes): every part runs, the JSON and the Markdown table
are written, so the GPU benchmark cannot rot between the sessions that have a GPU. The fullft part's
packing (bench/gpu_fullft.py) is checked on its own: rows, masks, and chats that do not see each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_fullft  # noqa: E402


@pytest.mark.e2e
def test_gpu_bench_smoke_mode_runs_every_part(tmp_path):
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "BENCH_WORK": str(tmp_path),
           "PYTHON": sys.executable}  # the interpreter running the tests, wherever its venv lives
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke", "--strict"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())
    assert res["mode"] == "smoke" and set(res["parts"]) == {"fullft", "cpt_zero2", "cpt_zero3", "sft_lora",
                                                             "translate"}
    ft = res["parts"]["fullft"]
    assert ft["tokens_per_s"] > 0 and 0 < ft["mfu"] < ft["hfu"] and ft["params"] == ft["params_built"], ft
    assert ft["seq"] == 512 and ft["sequence_parallel"] == 1 and ft["checkpointing"] and ft["chats_per_row"] > 1
    assert 0 < ft["trained_fraction"] < 1 and ft["loss_first"] > 0 and "peak_memory_gb" in ft
    for key in ("cpt_zero2", "cpt_zero3", "sft_lora"):
        assert res["parts"][key]["tokens_per_s"] > 0 and 0 < res["parts"][key]["mfu"], res["parts"][key]
    tr = res["parts"]["translate"]
    for run in ("hf_naive", "hf_sorted", "ct2_sorted"):
        assert tr[run]["segments_per_s"] > 0 and tr[run]["source_tokens_per_s"] > 0
    assert tr["sorted_vs_naive"] > 0 and tr["ct2_vs_hf_sorted"] > 0
    md = (tmp_path / "out" / "gpu_bench.md").read_text()
    assert "| full FT SFT tiny Qwen3, 512 tokens, SP 1 |" in md and "| CPT tiny Llama, ZeRO-3 |" in md
    assert "| hf_sorted |" in md and "sorted vs naive (hf)" in md
    assert "FutureWarning" not in p.stdout + p.stderr  # the rank logs' filters apply here too


def test_gpu_mode_refuses_without_a_gpu(tmp_path):
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out")}
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh")], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2 and "--smoke" in p.stderr and not (tmp_path / "out").exists()


def test_fullft_packs_whole_chats_with_their_masks():
    masks = gpu_fullft.chat_masks([[8, 12], [4, 40, 9, 20]])  # bytes; user, assistant, ...
    assert masks[0] == [False] * 3 + [False] * 4 + [False] * 3 + [True] * 5  # header, 2+2 user, header, 3+2
    assert sum(masks[1]) == 12 + 7 and len(masks[1]) == 4 * 3 + 3 + 12 + 5 + 7
    pos, mask = gpu_fullft.pack(masks, seq=16, rows=5)
    assert [len(r) for r in pos] == [16] * 5 and [len(r) for r in mask] == [16] * 5
    for p, m in zip(pos, mask):
        starts = [i for i, x in enumerate(p) if x == 0]
        assert starts[0] == 0  # each chat from its first token, positions counting from 0
        for a, b in zip(starts, starts[1:] + [16]):
            assert p[a:b] == list(range(b - a)) and m[a:b] in (ms[: b - a] for ms in masks)


def test_fullft_chats_in_a_packed_row_do_not_attend_to_each_other():
    """What the benchmark times is the block-causal path: a chat's logits in a packed row (position ids reset, no
    attention mask) are its logits alone."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**gpu_fullft.SHAPES["smoke"]["qwen3"], attn_implementation="sdpa",
                                         use_cache=False)).eval()
    ids = torch.randint(0, 512, (1, 20))
    pos = torch.tensor([list(range(8)) + list(range(12))])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        alone = model(input_ids=ids[:, 8:], use_cache=False).logits
    torch.testing.assert_close(packed[:, 8:], alone, rtol=1e-4, atol=1e-4)
