"""The GPU check's parts (bench/gpu_bench.py runs each in a process of its own): random weights, no hub access.

cpt: tokens/s and MFU of a ~1B Qwen3-shaped model (gpu_fullft's shape: GQA, qk-norm, 152k tied vocabulary),
bf16, SDPA, 4,096 tokens a row, a plain torch loop (zero=0) or DeepSpeed ZeRO-2/3 on the one GPU; sft_lora:
LoRA (r 16, q/k/v/o, PEFT) on the same model; translate: a MADLAD-3B-shaped T5 through dfm_hpc's hf translator,
sorted token-budget batches against the naive loop; pipeline: `python -m dfm_hpc +experiment=pipeline_tiny
cluster=node`. Each training part records its peak memory next to dfm_hpc.estimates.estimate_memory's figure for
the same setup (the plan's memory check), and the micro-batch is the largest the estimate fits in 85 % of the GPU.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """A part that cannot run here (a package the image lacks, a command that fails): recorded, not a failure."""


def gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def sync():
    import torch

    if gpu():
        torch.cuda.synchronize()


def timed(step, warmup: int, steps: int) -> float:
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        step()
    sync()
    return time.perf_counter() - t0


def memory(est) -> dict:
    """Peak memory of this process against the plan's estimate. device_used: what the GPU holds for the process as
    the timed steps end (the allocator's cache, the CUDA context, NCCL), the figure the estimate's total is for."""
    import torch

    out = {"estimate_gb": round(est.total, 1), "estimate": est.breakdown(), "estimate_setup": est.setup}
    if gpu():
        free, total = torch.cuda.mem_get_info()
        out.update(peak_allocated_gb=round(torch.cuda.max_memory_allocated() / 1e9, 1),
                   peak_reserved_gb=round(torch.cuda.max_memory_reserved() / 1e9, 1),
                   device_used_gb=round((total - free) / 1e9, 1))
        out["estimate_error"] = round(est.total / out["device_used_gb"] - 1, 3)  # > 0: the estimate is higher
    return out


def pick_micro(shape: dict, s: dict, **kw) -> tuple[int, object]:
    """The largest micro-batch of s['micros'] whose estimate fits 85 % of this GPU (the first one on the CPU)."""
    import torch

    from dfm_hpc import estimates

    cap = torch.cuda.mem_get_info()[1] / 1e9 * 0.85 if gpu() else float("inf")
    for micro in s["micros"]:
        est = estimates.estimate_memory(shape, world_size=1, micro_batch=micro, seq_len=s["seq"], **kw)
        if est.total <= cap:
            return micro, est
    return micro, est


def _model(shape: dict, dtype):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda" if gpu() else "cpu"):
        model = Qwen3ForCausalLM(Qwen3Config(**shape, attn_implementation="sdpa", use_cache=False))
    return model.to(dtype)


def _init_dist():
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if gpu() else "gloo")


def _rates(tps: float, shape: dict, s: dict, peak: float, lora: bool) -> dict:
    from dfm_hpc import estimates

    fpt = estimates.model_flops_per_token(shape, s["seq"])
    return {"tokens_per_s": round(tps, 1), "mfu": round(tps * fpt * (2 / 3 if lora else 1) / (peak * 1e12), 4)}


def cpt(s: dict, zero: int, peak: float) -> dict:
    """Full-parameter causal-LM steps on random tokens; zero=0: bf16 autocast over fp32 weights, fused AdamW (the
    Trainer's bf16=True without DeepSpeed); 2/3: DeepSpeed's bf16 (bf16 weights, fp32 masters) and ZeRO stage."""
    import torch

    shape = s["qwen3"]
    micro, est = pick_micro(shape, s, zero_stage=zero, gradient_checkpointing=False)
    on = gpu()
    if zero:
        try:
            import deepspeed
        except ImportError as e:
            raise Skip(f"no DeepSpeed here ({e}); carry its wheel (bench/carry_wheels.sh)")
        _init_dist()
        model = _model(shape, torch.float32)  # DeepSpeed casts to bf16 and keeps fp32 masters
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if on else {}))
        cfg = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": 1,
               "zero_optimization": {"stage": zero, "overlap_comm": True, "contiguous_gradients": True},
               "bf16": {"enabled": on}, "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9}
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
        ids = torch.randint(0, shape["vocab_size"], (micro, s["seq"]), device=engine.device)

        def step():
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
    else:
        model = _model(shape, torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if on else {}))
        ids = torch.randint(0, shape["vocab_size"], (micro, s["seq"]), device=model.device)

        def step():
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=on):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    if on:
        torch.cuda.reset_peak_memory_stats()
    dt = timed(step, s["warmup"], s["steps"])
    tps = micro * s["seq"] * s["steps"] / dt
    from dfm_hpc import estimates

    return {"zero": zero, "params": estimates.param_count(shape), "seq": s["seq"], "micro_batch": micro,
            "checkpointing": False, **_rates(tps, shape, s, peak, False), "step_s": round(dt / s["steps"], 4),
            **memory(est)}


def sft_lora(s: dict, peak: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    shape = s["qwen3"]
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    micro, est = pick_micro(shape, s, zero_stage=0, peft_method="lora", lora_r=s["lora_r"], target_modules=targets,
                            gradient_checkpointing=False)
    model = _model(shape, torch.bfloat16 if gpu() else torch.float32)
    model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, shape["vocab_size"], (micro, s["seq"]), device=model.device)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if gpu():
        torch.cuda.reset_peak_memory_stats()
    dt = timed(step, s["warmup"], s["steps"])
    tps = micro * s["seq"] * s["steps"] / dt
    return {"lora_r": s["lora_r"], "target_modules": targets, "seq": s["seq"], "micro_batch": micro,
            **_rates(tps, shape, s, peak, True), "step_s": round(dt / s["steps"], 4), **memory(est)}


def translate(s: dict, work: Path) -> dict:
    """hf backend: the naive loop (input order, a fixed batch) against sorted token-budget batches; ctranslate2 as
    well where it is installed (the image has none). Random weights never emit EOS: every batch decodes to its cap."""
    import torch
    from translate_throughput import segments

    from dfm_hpc.text import translators

    t0 = time.perf_counter()
    path = _madlad_shaped(work / "t5", s["t5"], s["t5_tokens"])
    out = {"segments": s["segments"], "build_s": round(time.perf_counter() - t0, 1), "tokenizer": s["t5_tokens"]}
    texts = segments(s["segments"])
    hf = translators.make_translator("hf", path, dtype=s["dtype"], max_batch_tokens=s["budget"])
    out["source_tokens"] = sum(hf.count_tokens(texts))
    hf.translate_ids(texts[:4], sort=True)  # warm-up: CUDA's and cuBLAS's first calls are timed in neither run
    if gpu():
        torch.cuda.reset_peak_memory_stats()
    runs = {}
    for name, fn in (("hf_sorted", lambda: hf.translate_ids(texts, sort=True)),
                     ("hf_naive", lambda: hf.translate_ids(texts, sort=False, batch_size=s["naive_batch"]))):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        runs[name] = time.perf_counter() - t
    if gpu():
        out["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        out["estimate"] = "none: the plan estimates training memory only"
    hf = None
    gc.collect()
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        out["ct2"] = "skipped: ctranslate2 is not installed (the GPU image has none; its wheel is ~40 MB)"
    else:
        ct2 = translators.make_translator("ctranslate2", path, dtype=s["dtype"], max_batch_tokens=s["budget"],
                                          cache_dir=work, quantization=None if s["dtype"] == "float32" else "bfloat16")
        t = time.perf_counter()
        ct2.translate_ids(texts, sort=True)
        runs["ct2_sorted"] = time.perf_counter() - t
    for name, secs in runs.items():
        out[name] = {"seconds": round(secs, 2), "segments_per_s": round(len(texts) / secs, 2),
                     "source_tokens_per_s": round(out["source_tokens"] / secs, 1)}
    out["sorted_vs_naive"] = round(runs["hf_naive"] / runs["hf_sorted"], 2)
    return out


def _madlad_shaped(out: Path, t5: dict, tokens: int) -> Path:
    """dfm_hpc's tiny T5 (models.build_tiny_t5) with a `tokens`-piece tokenizer, its model replaced by one of the
    `t5` shape, built on the GPU in bf16: training a 256k-piece SentencePiece takes minutes (>10 on 2 cores), and
    the extra rows of a wider embedding cost the same whether a tokenizer names them or not (ids past the
    tokenizer's are dropped when decoding)."""
    import json

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from dfm_hpc.tiny import models

    path = models.build_tiny_t5(out, d_model=64, num_layers=1, num_heads=4, d_ff=128, vocab_size=tokens)
    cfg = T5Config.from_pretrained(path)
    cfg.update(dict(d_model=t5["d_model"], d_kv=t5["d_model"] // t5["num_heads"], d_ff=t5["d_ff"],
                    num_layers=t5["num_layers"], num_decoder_layers=t5["num_layers"], num_heads=t5["num_heads"],
                    vocab_size=t5["vocab_size"]))
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if gpu() else torch.float32)
    try:
        with torch.device("cuda" if gpu() else "cpu"):
            model = T5ForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(dtype)
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():  # as build_tiny_t5: MADLAD's is untied
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight).normal_(0.0, 1.0))
        getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    model.save_pretrained(path)
    conf = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**conf, "tie_word_embeddings": False}, indent=2) + "\n")
    return path


def pipeline(args: list, work: Path, timeout: float) -> dict:
    """`python -m dfm_hpc ARGS` in `work` (its runs_root), dfm_hpc from this checkout: exit 0 or Skip with why."""
    cmd = [sys.executable, "-m", "dfm_hpc", *args, f"runs_root={work / 'runs'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Skip(f"{' '.join(args)}: not done in {timeout:.0f} s")
    wall = round(time.perf_counter() - t, 1)
    tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
    if p.returncode != 0:
        raise Skip(f"{' '.join(args)} exited {p.returncode}: " + " | ".join(tail[-4:])[-600:])
    runs = sorted((work / "runs").glob("*/*/"))
    stages = sorted(m.parent.name for m in runs[-1].glob("stages/*/DONE")) if runs else []
    return {"command": "python -m dfm_hpc " + " ".join(args), "wall_s": wall, "run_dir": runs[-1].name if runs else
            None, "stages_done": stages, "output_tail": tail}
