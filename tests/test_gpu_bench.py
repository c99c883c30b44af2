"""bench/gpu.sh in its CPU smoke mode (tiny shapes): every part runs, the JSON and the Markdown table
are written, so the GPU benchmark cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.e2e
def test_gpu_bench_smoke_mode_runs_every_part(tmp_path):
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "BENCH_WORK": str(tmp_path),
           "PYTHON": sys.executable}  # the interpreter running the tests, wherever its venv lives
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke", "--strict"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())
    assert res["mode"] == "smoke" and set(res["parts"]) == {"cpt_zero2", "cpt_zero3", "sft_lora", "translate"}
    for key in ("cpt_zero2", "cpt_zero3", "sft_lora"):
        assert res["parts"][key]["tokens_per_s"] > 0 and 0 < res["parts"][key]["mfu"], res["parts"][key]
    tr = res["parts"]["translate"]
    for run in ("hf_naive", "hf_sorted", "ct2_sorted"):
        assert tr[run]["segments_per_s"] > 0 and tr[run]["source_tokens_per_s"] > 0
    assert tr["sorted_vs_naive"] > 0 and tr["ct2_vs_hf_sorted"] > 0
    md = (tmp_path / "out" / "gpu_bench.md").read_text()
    assert "| CPT tiny Llama, ZeRO-3 |" in md and "| hf_sorted |" in md and "sorted vs naive (hf)" in md
    assert "FutureWarning" not in p.stdout + p.stderr  # the rank logs' filters apply here too


def test_gpu_mode_refuses_without_a_gpu(tmp_path):
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out")}
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh")], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2 and "--smoke" in p.stderr and not (tmp_path / "out").exists()
