"""bench/gpu.sh in its CPU smoke mode (tiny shapes): every part runs, the JSON and the Markdown table
are written, so the GPU check cannot rot between the sessions that have a GPU; a part that cannot run is skipped
with the reason (bench/gpu_wheels.py's dry mode: tests/test_gpu_wheels.py). The fullft part's
packing (bench/gpu_fullft.py) is checked on its own: rows, masks, and chats that do not see each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_bench  # noqa: E402
import gpu_fullft  # noqa: E402
from gpu_report import markdown  # noqa: E402


@pytest.mark.e2e
def test_gpu_bench_smoke_mode_runs_every_part(tmp_path):
    """~2.5 min on 2 shared cores: each part starts a Python of its own (torch, transformers, DeepSpeed)."""
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "BENCH_WORK": str(tmp_path),
           "PYTHON": sys.executable}  # the interpreter running the tests, wherever its venv lives
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke", "--strict"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())
    parts = res["parts"]
    assert res["mode"] == "smoke" and list(parts) == list(gpu_bench.PARTS)
    assert not [k for k, r in parts.items() if "error" in r or "skipped" in r], parts
    assert parts["env"]["device"] == "cpu" and parts["env"]["carried"]["python"]
    ft = parts["fullft"]
    assert ft["tokens_per_s"] > 0 and 0 < ft["mfu"] < ft["hfu"] and ft["params"] == ft["params_built"], ft
    assert ft["seq"] == 512 and ft["sequence_parallel"] == 1 and ft["checkpointing"] and ft["chats_per_row"] > 1
    assert 0 < ft["trained_fraction"] < 1 and ft["loss_first"] > 0 and "peak_memory_gb" in ft
    for key, zero in (("cpt", 0), ("cpt_zero2", 2), ("cpt_zero3", 3), ("sft_lora", 0), ("fullft", 0)):
        r = parts[key]
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"], r
        assert r["estimate_gb"] > 0 and f"ZeRO-{zero} on 1 rank" in r["estimate_setup"], r  # the plan's estimate
    assert parts["cpt"]["zero"] == 0 and parts["cpt_zero3"]["zero"] == 3 and parts["cpt"]["micro_batch"] == 2
    tr = parts["translate"]
    for run in ("hf_naive", "hf_sorted"):
        assert tr[run]["segments_per_s"] > 0 and tr[run]["source_tokens_per_s"] > 0
    assert tr["sorted_vs_naive"] > 0
    pl = parts["pipeline"]
    assert pl["command"].endswith("cluster=node dry_run=true") and "dry run: nothing was submitted" in pl["output_tail"]
    md = (tmp_path / "out" / "gpu_bench.md").read_text()
    assert "| CPT, DeepSpeed ZeRO-3 | " in md and "| LoRA SFT (r 4, q/k/v/o) | " in md and "| hf_sorted |" in md
    assert "| full-FT SFT, packed chats | " in md and "sorted vs naive (hf)" in md and "Pipeline (" in md
    assert "===== cpt_zero2" in (tmp_path / "out" / "gpu_bench.log").read_text()
    assert "FutureWarning" not in p.stdout + p.stderr  # the rank logs' filters apply here too


@pytest.mark.e2e
def test_a_part_that_fails_or_runs_long_is_skipped_with_why(tmp_path):
    """~15 s: the pipeline's command fails (an unknown experiment): skipped with its exit and last lines; a part
    past the check's deadline is not started; the run still exits 0 under --strict (a skip is no error)."""
    env = {**os.environ, "BENCH_PIPELINE": "+experiment=no_such_experiment cluster=node", "BENCH_WORK": str(tmp_path)}
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--out", str(tmp_path / "out"),
                        "--smoke", "--strict", "--only", "pipeline"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    parts = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())["parts"]
    assert list(parts) == ["env", "pipeline"]
    assert parts["pipeline"]["skipped"].startswith("+experiment=no_such_experiment cluster=node dry_run=true exited 2")
    assert "Pipeline (`python -m dfm_hpc +experiment=no_such_experiment cluster=node`): skipped: " in \
        (tmp_path / "out" / "gpu_bench.md").read_text()
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--out", str(tmp_path / "late"),
                        "--smoke", "--only", "translate", "--deadline", "5"], capture_output=True, text=True,
                       env=env, timeout=300)
    parts = json.loads((tmp_path / "late" / "gpu_bench.json").read_text())["parts"]
    assert p.returncode == 0 and parts["translate"] == {"skipped": "the check's 5 s were spent", "wall_s": 0.0}


def test_report_says_why_a_part_is_missing():
    res = {"mode": "gpu", "date": "2026-12-06 23:00", "shapes": gpu_bench.SHAPES["gpu"],
           "targets": gpu_bench.TARGETS, "pipeline": gpu_bench.PIPELINE,
           "parts": {"env": {"device": "NVIDIA H100 80GB HBM3", "memory_gb": 85.0, "torch": "2.11.0", "cuda": "13.0",
                             "python": "3.12.3", "peak_tflops": 989.0,
                             "carried": {"problems": ["datasets needs fsspec<=2026.9.0: 2026.10.0"]}},
                     "cpt": {"zero": 0, "seq": 4096, "micro_batch": 4, "tokens_per_s": 41000.0, "mfu": 0.4123,
                             "step_s": 0.4, "device_used_gb": 60.2, "estimate_gb": 55.0, "estimate_error": -0.086},
                     "cpt_zero2": {"skipped": "no DeepSpeed here (No module named 'deepspeed')"},
                     "sft_lora": {"error": "OutOfMemoryError: CUDA out of memory"},
                     "translate": {"skipped": "not done in its 100 s (killed)"}}}
    md = markdown(res)
    assert md.startswith("GPU check (gpu): NVIDIA H100 80GB HBM3, 85.0 GB, torch 2.11.0 (CUDA 13.0)")
    assert "| CPT, plain torch (no ZeRO) | 41,000 | 41.2% | 4 x 4,096 | 60.2 | 55.0 (-9%) |" in md
    assert "| CPT, DeepSpeed ZeRO-2 | - | - | - | - | - | skipped: no DeepSpeed here" in md
    assert "| LoRA SFT (r 16, q/k/v/o) | - | - | - | - | - | failed: OutOfMemoryError" in md
    assert "Translate: skipped: not done in its 100 s (killed)" in md
    assert "carried wheels against the installed versions: datasets needs fsspec" in md


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
