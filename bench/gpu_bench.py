"""The GPU benchmark behind bench/gpu.sh (issue #14), one process, random weights, no hub access:

1. CPT: tokens/s and MFU of a ~1B Llama-shaped model (TinyLlama-1.1B's shape), bf16, SDPA attention,
   DeepSpeed ZeRO-2 and ZeRO-3 on one GPU;
2. SFT: LoRA (r 16, q/k/v/o, PEFT) tokens/s and MFU on the same model;
3. translate: segments/s and source tokens/s of a MADLAD-3B-shaped T5 (d_model 1024, 32+32 layers,
   d_ff 8192, 256k vocabulary) with dfm_hpc's hf and ctranslate2 translators, sorted token-budget
   batches against the naive loop (input order, fixed batch size) on the same segments;
4. fullft (issue #21, bench/gpu_fullft.py, run first): full fine-tuning SFT of a ~1B Qwen3-shaped model at
   8,192 tokens, SP 1, bf16, SDPA, activation checkpointing, AdamW, a plain torch loop on packed
   real-length chats with an assistant mask: tokens/s, MFU and peak memory.

    python bench/gpu_bench.py --out DIR [--smoke] [--strict] [--only fullft,cpt,sft,translate]

--smoke: tiny shapes on the CPU (tests/test_gpu_bench.py runs it in make test, so the script cannot
rot). Writes DIR/gpu_bench.json and DIR/gpu_bench.md. A part that fails is recorded with its error
(the others still run) unless --strict. MFU: dfm_hpc.estimates (6N + 12LHS per token; LoRA counted as
2/3 of that, as the plan's predictions do) against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # translate_throughput's segments(), gpu_fullft
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # dfm_hpc where it is not installed (the GPU image)

SHAPES = {
    # llama: a config.json's keys (the model is built from them, estimates count them)
    "gpu": {"llama": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                          intermediate_size=5632, vocab_size=32000, tie_word_embeddings=False),
            "seq": 2048, "micro": 8, "steps": 10, "warmup": 3, "lora_r": 16,
            "t5": dict(d_model=1024, num_layers=32, num_heads=16, d_ff=8192, vocab_size=256000),
            "segments": 384, "budget": 16384, "naive_batch": 16, "dtype": "bfloat16"},
    "smoke": {"llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=512, tie_word_embeddings=False),
              "seq": 64, "micro": 2, "steps": 3, "warmup": 1, "lora_r": 4,
              "t5": dict(d_model=64, num_layers=2, num_heads=4, d_ff=128, vocab_size=1000),
              "segments": 12, "budget": 512, "naive_batch": 4, "dtype": "float32"},
}
TARGETS = {"cpt_mfu_h100_class": 0.40, "translate_hf_sorted_vs_naive": 2.5}


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _llama(shape: dict, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**shape, max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(_device()):
        return LlamaForCausalLM(cfg).to(dtype)


def _mfu(tps: float, s: dict, lora: bool, peak: float) -> float:
    from dfm_hpc import estimates

    fpt = estimates.model_flops_per_token(s["llama"], s["seq"])
    return tps * fpt * (2 / 3 if lora else 1) / (peak * 1e12)


def _timed_steps(step, s: dict) -> float:
    for i in range(s["warmup"] + s["steps"]):
        if i == s["warmup"]:
            _sync()
            t0 = time.perf_counter()
        step()
    _sync()
    return time.perf_counter() - t0


def _init_dist():
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if _device().type == "cuda" else "gloo")


def bench_cpt(s: dict, zero: int, peak: float) -> dict:
    import deepspeed
    import torch

    _init_dist()
    gpu = _device().type == "cuda"
    model = _llama(s["llama"], torch.float32)  # DeepSpeed keeps fp32 masters and casts to bf16
    model.config.use_cache = False
    cfg = {"train_micro_batch_size_per_gpu": s["micro"], "gradient_accumulation_steps": 1,
           "zero_optimization": {"stage": zero, "overlap_comm": True, "contiguous_gradients": True},
           "bf16": {"enabled": gpu}, "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if gpu else {}))
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    ids = torch.randint(0, s["llama"]["vocab_size"], (s["micro"], s["seq"]), device=engine.device)

    def step():
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()

    dt = _timed_steps(step, s)
    tps = s["micro"] * s["seq"] * s["steps"] / dt
    mem = torch.cuda.max_memory_allocated() / 1e9 if gpu else None
    engine = opt = model = None  # freed before the next part
    _free()
    return {"tokens_per_s": round(tps, 1), "mfu": round(_mfu(tps, s, False, peak), 4),
            "step_s": round(dt / s["steps"], 4), "peak_memory_gb": None if mem is None else round(mem, 1)}


def bench_sft_lora(s: dict, peak: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    gpu = _device().type == "cuda"
    model = _llama(s["llama"], torch.bfloat16 if gpu else torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, s["llama"]["vocab_size"], (s["micro"], s["seq"]), device=_device())

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dt = _timed_steps(step, s)
    tps = s["micro"] * s["seq"] * s["steps"] / dt
    model = opt = None
    _free()
    return {"tokens_per_s": round(tps, 1), "mfu": round(_mfu(tps, s, True, peak), 4),
            "step_s": round(dt / s["steps"], 4)}


def bench_translate(s: dict, work: Path) -> dict:
    from translate_throughput import segments

    from dfm_hpc.text import translators
    from dfm_hpc.tiny import models

    t0 = time.perf_counter()
    path = models.build_tiny_t5(work / "t5", **s["t5"])
    built = time.perf_counter() - t0
    texts = segments(s["segments"])
    out = {"segments": len(texts), "build_s": round(built, 1)}
    hf = translators.make_translator("hf", path, dtype=s["dtype"], max_batch_tokens=s["budget"])
    lengths = hf.count_tokens(texts)
    out["source_tokens"] = sum(lengths)
    runs = {}
    for name, fn in (("hf_naive", lambda: hf.translate_ids(texts, sort=False, batch_size=s["naive_batch"])),
                     ("hf_sorted", lambda: hf.translate_ids(texts, sort=True))):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        runs[name] = time.perf_counter() - t
    hf = None
    _free()
    try:
        quant = None if s["dtype"] == "float32" else "bfloat16"
        ct2 = translators.make_translator("ctranslate2", path, dtype=s["dtype"], max_batch_tokens=s["budget"],
                                          cache_dir=work, quantization=quant)
        t = time.perf_counter()
        ct2.translate_ids(texts, sort=True)
        runs["ct2_sorted"] = time.perf_counter() - t
    except Exception as e:  # e.g. a ctranslate2 build without this device
        out["ct2_error"] = f"{type(e).__name__}: {e}"
    for name, secs in runs.items():
        out[name] = {"seconds": round(secs, 2), "segments_per_s": round(len(texts) / secs, 2),
                     "source_tokens_per_s": round(out["source_tokens"] / secs, 1)}
    out["sorted_vs_naive"] = round(runs["hf_naive"] / runs["hf_sorted"], 2)
    if "ct2_sorted" in runs:
        out["ct2_vs_hf_sorted"] = round(runs["hf_sorted"] / runs["ct2_sorted"], 2)
    return out


def markdown(res: dict) -> str:
    lines = [f"GPU benchmark ({res['mode']}): {res['device']}, torch {res['torch']}, peak {res['peak_tflops']} TF "
             f"(dense bf16), {res['date']}", "", "| part | tokens/s | MFU | notes |", "|---|---|---|---|"]
    from dfm_hpc import estimates

    size = f"{estimates.param_count(res['shapes']['llama']) / 1e9:.2g}B" if res["mode"] == "gpu" else "tiny"
    for key, label in (("cpt_zero2", f"CPT {size} Llama, ZeRO-2"), ("cpt_zero3", f"CPT {size} Llama, ZeRO-3"),
                       ("sft_lora", "SFT LoRA, same model")):
        r = res["parts"].get(key)
        if r and "error" not in r:
            mem = f", peak {r['peak_memory_gb']} GB" if r.get("peak_memory_gb") else ""
            lines.append(f"| {label} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['step_s']} s/step{mem} |")
        elif r:
            lines.append(f"| {label} | - | - | failed: {r['error'][:80]} |")
    ft = res["parts"].get("fullft")
    if ft and "error" not in ft:
        mem = f", peak {ft['peak_memory_gb']} GB" if ft.get("peak_memory_gb") else ""
        fsize = f"{ft['params'] / 1e9:.2f}B" if res["mode"] == "gpu" else "tiny"
        lines.append(f"| full FT SFT {fsize} Qwen3, {ft['seq']:,} tokens, SP 1 | "
                     f"{ft['tokens_per_s']:,.0f} | {ft['mfu']:.1%} | {ft['step_s']} s/step, HFU {ft['hfu']:.1%}, "
                     f"{ft['chats_per_row']} chats/row{mem} |")
    elif ft:
        lines.append(f"| full FT SFT | - | - | failed: {ft['error'][:80]} |")
    tr = res["parts"].get("translate")
    if tr and "error" not in tr:
        t5 = "MADLAD-3B-shaped T5" if res["mode"] == "gpu" else "tiny T5"
        lines += ["", f"Translate, {t5}: {tr['segments']} segments, "
                  f"{tr['source_tokens']:,} source tokens",
                  "", "| run | seconds | segments/s | source tokens/s |", "|---|---|---|---|"]
        for key in ("hf_naive", "hf_sorted", "ct2_sorted"):
            if key in tr:
                r = tr[key]
                lines.append(f"| {key} | {r['seconds']} | {r['segments_per_s']} | {r['source_tokens_per_s']:,.0f} |")
        lines.append(f"\nsorted vs naive (hf): {tr['sorted_vs_naive']}x (target >= "
                     f"{TARGETS['translate_hf_sorted_vs_naive']}x)" +
                     (f"; ctranslate2 vs hf: {tr['ct2_vs_hf_sorted']}x" if "ct2_vs_hf_sorted" in tr else
                      f"; ctranslate2: {tr.get('ct2_error', '-')}"))
    elif tr:
        lines.append(f"\ntranslate failed: {tr['error'][:200]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--strict", action="store_true", help="a failing part fails the run")
    ap.add_argument("--only", default="fullft,cpt,sft,translate")
    args = ap.parse_args(argv)
    import torch

    from dfm_hpc import estimates

    mode = "smoke" if args.smoke else "gpu"
    try:  # the rank logs' filters: output to read. The GPU machine's image has no hydra, which rank imports
        from dfm_hpc.job.rank import quiet_libraries
    except ImportError as e:
        print(f"gpu_bench: no log filters ({e})", file=sys.stderr)
    else:
        quiet_libraries(verbose=False, gpus=torch.cuda.device_count())
    if mode == "smoke":
        torch.set_num_threads(1)  # tiny shapes: threads only fight over the cores
    if mode == "gpu" and not torch.cuda.is_available():
        print("gpu_bench: no GPU here; use --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    import gpu_fullft

    s = {**SHAPES[mode], "fullft": gpu_fullft.SHAPES[mode]}
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    peak = estimates.pick_peak_tflops(name if torch.cuda.is_available() else 1.0)
    res = {"mode": mode, "device": name, "peak_tflops": peak, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "shapes": s, "targets": TARGETS, "parts": {}}
    only = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # fullft first: its figure is kept if a later part runs past the time limit
    parts = [("fullft", "fullft", lambda: gpu_fullft.bench_fullft(s["fullft"], peak)),
             ("cpt_zero2", "cpt", lambda: bench_cpt(s, 2, peak)), ("cpt_zero3", "cpt", lambda: bench_cpt(s, 3, peak)),
             ("sft_lora", "sft", lambda: bench_sft_lora(s, peak))]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_WORK")) as work:
        parts.append(("translate", "translate", lambda: bench_translate(s, Path(work))))
        for key, group, fn in parts:
            if group not in only:
                continue
            t = time.perf_counter()
            try:
                res["parts"][key] = fn()
            except Exception as e:
                if args.strict:
                    raise
                res["parts"][key] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            res["parts"][key]["wall_s"] = round(time.perf_counter() - t, 1)
            print(f"gpu_bench: {key} done in {res['parts'][key]['wall_s']} s", flush=True)
            (out / "gpu_bench.json").write_text(json.dumps(res, indent=2) + "\n")  # what finished, if cut short
    (out / "gpu_bench.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
