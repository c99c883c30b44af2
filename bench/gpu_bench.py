"""The GPU check behind bench/gpu.sh (issues #14, #21, #25): one call of ~8 minutes on one GPU, random weights,
no hub access. Each part runs in a process of its own, under a time cap and the whole check's deadline, so a part
that hangs, runs out of memory or lacks a package is recorded (error, or skipped with why) and the others still run:

1. env: the device, its memory and peak, the image's versions, and the carried wheels checked against them;
2. cpt, cpt_zero2, cpt_zero3: tokens/s and MFU of a ~1B Qwen3-shaped model at 4,096 tokens, bf16: a plain torch
   loop, then DeepSpeed ZeRO-2 and ZeRO-3 (where DeepSpeed runs), peak memory against the plan's estimate;
3. sft_lora: LoRA SFT tokens/s on the same model, peak memory against the estimate;
4. translate: a MADLAD-3B-shaped T5 with dfm_hpc's hf translator, sorted token budget against the naive loop;
5. pipeline: `python -m dfm_hpc +experiment=pipeline_tiny cluster=node` end to end on the GPU (translate ... card);
6. fullft (bench/gpu_fullft.py, issue #21): full fine-tuning SFT of the same model at 8,192 tokens, packed chats.

    python bench/gpu_bench.py --out DIR [--smoke] [--strict] [--only cpt,sft,...] [--deadline S]

--smoke: tiny shapes on the CPU, the pipeline as a dry run (tests/test_gpu_bench.py, so the script cannot rot).
Writes DIR/gpu_bench.json (after every part: what finished is kept if the call is cut short), DIR/gpu_bench.md
and DIR/gpu_bench.log (each part's output). --strict: a part's error fails the run (a skip does not).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # gpu_parts, gpu_fullft, translate_throughput's segments()
sys.path.insert(1, str(HERE.parent))  # dfm_hpc where it is not installed (the GPU image)

import gpu_fullft  # noqa: E402

_QWEN3 = gpu_fullft.SHAPES
SHAPES = {
    "gpu": {"qwen3": _QWEN3["gpu"]["qwen3"], "seq": 4096, "micros": [8, 4, 2, 1], "warmup": 2, "steps": 6,
            "lora_r": 16, "t5": dict(d_model=1024, num_layers=32, num_heads=16, d_ff=8192, vocab_size=256000),
            "t5_tokens": 32000, "segments": 256, "budget": 16384, "naive_batch": 16, "dtype": "bfloat16",
            "fullft": _QWEN3["gpu"]},
    "smoke": {"qwen3": _QWEN3["smoke"]["qwen3"], "seq": 64, "micros": [2], "warmup": 1, "steps": 2, "lora_r": 4,
              "t5": dict(d_model=64, num_layers=2, num_heads=4, d_ff=128, vocab_size=1000),
              "t5_tokens": 500, "segments": 12, "budget": 512, "naive_batch": 4, "dtype": "float32",
              "fullft": _QWEN3["smoke"]},
}
# key: (--only group, seconds it may take on the GPU, at most). Order: the figures first, fullft last.
PARTS = {"env": ("env", 60), "cpt": ("cpt", 75), "cpt_zero2": ("cpt", 90), "cpt_zero3": ("cpt", 90),
         "sft_lora": ("sft", 60), "translate": ("translate", 150), "pipeline": ("pipeline", 240),
         "fullft": ("fullft", 70)}
MIN_S = 30  # a part is not started with less left than this
PIPELINE = "+experiment=pipeline_tiny cluster=node"
TARGETS = {"cpt_mfu_h100_class": 0.40, "translate_hf_sorted_vs_naive": 2.5}


def run_part(key: str, mode: str, work: Path, timeout: float) -> dict:
    """In this process (the child): one part's result."""
    import gpu_parts
    import torch

    from dfm_hpc import estimates

    s = SHAPES[mode]
    if mode == "smoke":
        torch.set_num_threads(1)  # tiny shapes: threads only fight over the cores
    try:  # the rank logs' filters; where hydra is missing (the image without the carried wheels) unfiltered
        from dfm_hpc.job.rank import quiet_libraries
        quiet_libraries(verbose=False, gpus=torch.cuda.device_count())
    except ImportError:
        pass
    on = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if on else "cpu"
    peak = estimates.pick_peak_tflops(name if on else 1.0)
    if key == "env":
        out = {"device": name, "peak_tflops": peak, "torch": torch.__version__, "cuda": torch.version.cuda,
               "python": sys.version.split()[0], "gpus": torch.cuda.device_count()}
        if on:
            out["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
        import gpu_wheels

        out["carried"] = gpu_wheels.installed(json.loads(gpu_wheels.RECORD.read_text()))
        return out
    if key.startswith("cpt"):
        return gpu_parts.cpt(s, int(key[-1]) if key[-1].isdigit() else 0, peak)
    if key == "sft_lora":
        return gpu_parts.sft_lora(s, peak)
    if key == "translate":
        return gpu_parts.translate(s, work)
    if key == "fullft":
        return gpu_fullft.bench_fullft(s["fullft"], peak)
    if key == "pipeline":
        args = os.environ.get("BENCH_PIPELINE", PIPELINE).split() + (["dry_run=true"] if mode == "smoke" else [])
        return gpu_parts.pipeline(args, work, timeout - 5)
    raise ValueError(key)


def child(args) -> int:
    import gpu_parts

    try:
        res = run_part(args.part, "smoke" if args.smoke else "gpu", Path(args.work), args.timeout)
    except gpu_parts.Skip as e:
        res = {"skipped": str(e)}
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    Path(args.result).write_text(json.dumps(res, indent=1, default=str))
    return 0


def spawn(key: str, args, work: Path, timeout: float, log) -> dict:
    """The part in a process group of its own, killed whole at `timeout` (the pipeline's ranks too)."""
    result = work / f"{key}.json"
    cmd = [sys.executable, __file__, "--part", key, "--result", str(result), "--work", str(work),
           "--timeout", str(timeout)] + (["--smoke"] if args.smoke else [])
    log.write(f"\n===== {key} (cap {timeout:.0f} s)\n")
    log.flush()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        return {"skipped": f"not done in its {timeout:.0f} s (killed)"}
    if result.exists():
        return json.loads(result.read_text())
    return {"error": f"the part's process exited {p.returncode} with no result (see gpu_bench.log)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--strict", action="store_true", help="a part's error fails the run")
    ap.add_argument("--only", default=",".join(dict.fromkeys(g for g, _ in PARTS.values())))
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("BENCH_DEADLINE", 450)),
                    help="seconds for all parts (default 450, BENCH_DEADLINE)")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        return child(args)
    if not args.out:
        ap.error("--out is required")
    mode = "smoke" if args.smoke else "gpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) | {"env"}
    res = {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M"), "shapes": SHAPES[mode], "targets": TARGETS,
           "pipeline": os.environ.get("BENCH_PIPELINE", PIPELINE), "parts": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_WORK")) as work, \
            open(out / "gpu_bench.log", "w") as log:
        for key, (group, cap) in PARTS.items():
            if group not in only:
                continue
            left = args.deadline - (time.perf_counter() - t0)
            t = time.perf_counter()
            if left < MIN_S:
                r = {"skipped": f"the check's {args.deadline:.0f} s were spent"}
            else:
                part_dir = Path(work, key)
                part_dir.mkdir()
                r = spawn(key, args, part_dir, min(left, cap or left) if mode == "gpu" else left, log)
            r["wall_s"] = round(time.perf_counter() - t, 1)
            res["parts"][key] = r
            status = "error" if "error" in r else "skipped" if "skipped" in r else "done"
            print(f"gpu_bench: {key} {status} in {r['wall_s']} s" +
                  (f": {r.get('error') or r.get('skipped')}"[:300] if status != "done" else ""), flush=True)
            (out / "gpu_bench.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    from gpu_report import markdown

    (out / "gpu_bench.md").write_text(markdown(res))
    print(markdown(res))
    failed = [k for k, r in res["parts"].items() if "error" in r]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
