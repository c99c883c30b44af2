"""Training arithmetic: peak FLOP/s, FLOPs per token, MFU, parameter counts and per-device memory.

Pure arithmetic (no torch): the login node imports it to refuse configs that cannot fit, and the
compute-side stages import it to log MFU. A model's shape is its config.json's (model_shape.py): a Shape,
or a config.json dict. Formulas, sources and limits: docs/performance.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from dfm_hpc import model_shape
from dfm_hpc.model_shape import Shape

# ---------------------------------------------------------------- peak FLOP/s (the MFU denominator)

# Dense bf16 matrix peak in TFLOP/s per device as Slurm/ROCm/CUDA see it. An MI250X package is two
# GCDs (383 TF): the LUMI "GPU" is one GCD, so its denominator is 191.5, never 383.
PEAK_TFLOPS: Dict[str, float] = {
    "mi250x_gcd": 191.5,  # LUMI-G, Frontier
    "mi300x": 1307.4,
    "a100": 312.0,
    "h100_sxm": 989.0,
    "h100_pcie": 756.0,
    "h200": 989.0,  # same compute as H100 SXM, more memory
}

# substrings of torch.cuda.get_device_name() -> table key (first match wins)
_DEVICE_NAMES: Tuple[Tuple[str, str], ...] = (
    ("mi250", "mi250x_gcd"), ("mi300x", "mi300x"), ("h200", "h200"), ("h100 pcie", "h100_pcie"),
    ("h100", "h100_sxm"), ("a100", "a100"),
)


def device_key(device_name: str) -> Optional[str]:
    """'AMD Instinct MI250X' -> 'mi250x_gcd', 'NVIDIA H100 80GB HBM3' -> 'h100_sxm'; None if unknown."""
    low = device_name.lower()
    if low in PEAK_TFLOPS:
        return low
    return next((key for sub, key in _DEVICE_NAMES if sub in low), None)


def pick_peak_tflops(device: Union[str, float, None] = None, override: Optional[float] = None) -> float:
    """The MFU denominator in TFLOP/s per device.

    `override` (or the DFM_PEAK_TFLOPS environment variable) wins; else `device` as a number, a
    table key or a device name (torch.cuda.get_device_name()); None means LUMI's GCD.
    """
    if override is None and os.environ.get("DFM_PEAK_TFLOPS"):
        override = float(os.environ["DFM_PEAK_TFLOPS"])
    if override is not None:
        return float(override)
    if device is None:
        return PEAK_TFLOPS["mi250x_gcd"]
    if isinstance(device, (int, float)):
        return float(device)
    key = device_key(device)
    if key is None:
        raise ValueError(f"no peak FLOP/s known for device {device!r}; known: {', '.join(PEAK_TFLOPS)}; "
                         "pass override= or set DFM_PEAK_TFLOPS")
    return PEAK_TFLOPS[key]


# ---------------------------------------------------------------- FLOPs per token and MFU

def flops_per_token(n_params: float, n_layers: int, hidden: int, seq_len: int, recompute: bool = False) -> float:
    """Training FLOPs per token: 6·N + 12·L·H·S (PaLM appendix B; llm-foundry and nanoGPT use it too).

    6·N: a multiply-add (2 FLOPs) per parameter and token in the forward pass, twice that backward.
    12·L·H·S: QK^T and attention·V (2·2·H·S per layer forward, x3 for training), H = heads·head_dim,
    not halved for the causal mask. N is *all* parameters, as both anchors' sources count it
    (their models tie the embedding to the output head, so N's embedding is exactly the head's
    matmul; for untied Llama/Mistral the input embedding adds V·H/N ≈ 1.8 % that no matmul does).
    recompute=True counts one extra forward (full activation checkpointing): 8·N + 16·L·H·S, the
    "hardware FLOPs" behind HFU and Megatron's reported TFLOP/s.

    Why this convention: it is the one both published anchors were computed with, so it reproduces
    them (tests/test_estimates.py): Megatron-DeepSpeed 7B on LUMI (N 6.65e9, L 32, H 4096, S 2048;
    19.4 samples/s x 2048 / 32 GCDs = 1,242 tok/s/GCD): 43.1 GFLOP/token -> MFU 28.0 % of 191.5
    (HFU 37.3 %; Megatron reported 70.9 TF = 37.0 %); llm-foundry MPT-7B on H100 (N 6.659e9, S 2048,
    10,643 tok/s/GPU): MFU 46.5 % of 989 (published 46.44 %). 6·N alone would give 25.9 % and 43.0 %.
    """
    passes = 4 if recompute else 3
    return passes * (2.0 * n_params + 4.0 * n_layers * hidden * seq_len)


def mfu(tokens_per_s_per_device: float, n_params: float, n_layers: int, hidden: int, seq_len: int,
        peak_tflops: Union[str, float, None] = None) -> float:
    """Model FLOPs utilization as a fraction (0.28 = 28 %) of the device's dense bf16 peak."""
    peak = pick_peak_tflops(peak_tflops) * 1e12
    return tokens_per_s_per_device * flops_per_token(n_params, n_layers, hidden, seq_len) / peak


def hfu(tokens_per_s_per_device: float, n_params: float, n_layers: int, hidden: int, seq_len: int,
        peak_tflops: Union[str, float, None] = None) -> float:
    """Hardware FLOPs utilization with full activation recomputation (= 4/3 · MFU)."""
    peak = pick_peak_tflops(peak_tflops) * 1e12
    return tokens_per_s_per_device * flops_per_token(n_params, n_layers, hidden, seq_len, recompute=True) / peak


def model_flops_per_token(model: Any, seq_len: int, recompute: bool = False) -> float:
    """flops_per_token of a model's shape (a model_shape.Shape or a config.json dict); H is heads x head_dim."""
    s = _shape(model)
    return flops_per_token(param_count(s), s.layers, s.q_dim, seq_len, recompute=recompute)


# ---------------------------------------------------------------- parameter count (Llama/Mistral)

def _shape(model: Any) -> Shape:
    """A model_shape.Shape, or a config.json dict read by model_shape (what the tests and benchmarks pass)."""
    if isinstance(model, dict):
        model = model_shape.from_config(model, "a config.json dict")
    if not isinstance(model, Shape):
        raise ValueError(f"model shape unknown: {model.reason}")
    return model


def _linears(s: Shape) -> Dict[str, Tuple[int, int]]:
    """One decoder layer's projections: name -> (in, out)."""
    h, q, kv, i = s.hidden, s.q_dim, s.kv_dim, s.intermediate
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def _layer_params(s: Shape) -> int:
    return sum(a * b for a, b in _linears(s).values()) + 2 * s.hidden  # + two RMSNorms


def param_count(model: Any) -> int:
    """Llama/Mistral parameters: the embedding, the output head unless tied to it, L x (GQA attention + SwiGLU MLP
    + 2 norms) + final norm. Mistral-7B-v0.1: 7,241,732,096; Llama-2-7B: 6,738,415,616."""
    s = _shape(model)
    return (1 if s.tied else 2) * s.vocab * s.hidden + s.layers * _layer_params(s) + s.hidden


def lora_params(model: Any, r: int, target_modules: Sequence[str]) -> int:
    """Trainable LoRA parameters: r·(in + out) per targeted projection per layer ("all-linear": all 7).
    Names other than the Llama projections are not counted."""
    s = _shape(model)
    linears = _linears(s)
    names = set(linears) if "all-linear" in target_modules else set(target_modules)
    return s.layers * sum(r * (a + b) for name, (a, b) in linears.items() if name in names)


# ---------------------------------------------------------------- memory per device

GB = 1e9  # decimal GB: 7.24e9 params x 2 bytes = 14.5 GB (a 64 GB GCD holds 64 GiB = 68.7e9 bytes)
CONTEXT_GB = 2.0  # ROCm/CUDA context, RCCL and DeepSpeed communication buckets
FRAGMENTATION = 0.10  # caching allocator slack, on top of everything else
QLORA_BYTES_PER_PARAM = 0.53  # NF4 (0.5) + double-quantized block constants and bitsandbytes state

# Activation bytes per token saved by one HF Llama/Mistral decoder layer (bf16 elements x 2 bytes),
# SDPA/flash attention (no S x S scores): 2 RMSNorms ~3h each (fp32 copy + bf16 output), rotary
# q/k in and out (2q + 2kv), attention q/k/v/out (2q + 2kv), SwiGLU gate/up/act/product (4I);
# q = heads x head_dim (= h unless config.json's head_dim says otherwise), kv the same for the KV heads.
_LOGIT_BYTES_PER_VOCAB = 10  # bf16 logits (2) + fp32 upcast for the loss (4) + fp32 log-softmax (4)


@dataclass
class MemoryEstimate:
    """Per-device memory (GB) of one training rank, and what was offloaded to host memory."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    cpu: float  # host memory per rank taken by offloaded state
    n_params: int
    trainable_params: int
    method: str  # "full fine-tuning", "LoRA", "QLoRA"
    setup: str  # "ZeRO-3 on 8 ranks, micro-batch 1 x 4096 tokens, checkpointing"
    notes: List[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def breakdown(self) -> str:
        parts = (f"weights {self.weights:.1f}, grads {self.gradients:.1f}, optimizer {self.optimizer:.1f}, "
                 f"activations {self.activations:.1f}, overhead {self.overhead:.1f}")
        return parts + (f"; {self.cpu:.0f} GB offloaded to host memory" if self.cpu >= 0.05 else "")

    def explain(self) -> str:
        return (f"~{self.total:.0f} GB per device for {self.method} of a {self.n_params / 1e9:.1f}B model "
                f"with {self.setup} ({'; '.join([self.breakdown(), *self.notes])})")


def estimate_memory(model: Any, *, world_size: int, zero_stage: int, precision: str = "bf16",
                    peft_method: str = "none", lora_r: int = 16,
                    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                    micro_batch: int = 1, seq_len: int = 4096, gradient_checkpointing: bool = True,
                    offload_optimizer: bool = False, offload_params: bool = False,
                    sequences_per_sample: int = 1, reference_model: bool = False,
                    attention: str = "sdpa") -> MemoryEstimate:
    """Peak memory of one rank, as in the ZeRO paper (Rajbhandari et al. 2020), in GB.

    Mixed-precision Adam keeps 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, m, v) bytes per
    trained parameter; fp32 training 4 + 4 + 8. ZeRO-1 shards the optimizer state over the ranks,
    ZeRO-2 the gradients too, ZeRO-3 the weights too (plus two gathered layers in flight).
    offload_optimizer (ZeRO >= 1) moves optimizer state and fp32 gradients to host memory;
    offload_params (ZeRO-3) the weights. LoRA/QLoRA freeze the base (bf16, or ~0.53 byte/param in
    4 bits for the layers' projections) and train adapters with full Adam state.
    DPO: sequences_per_sample=2 (chosen + rejected in one forward), reference_model=True for a
    separate frozen copy (full fine-tuning without precomputed reference log-probs).
    """
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision={precision!r}: bf16 or fp32")
    if peft_method not in ("none", "lora", "qlora"):
        raise ValueError(f"peft_method={peft_method!r}: none, lora or qlora")
    if not 0 <= zero_stage <= 3:
        raise ValueError(f"zero_stage={zero_stage}: 0, 1, 2 or 3")
    s = _shape(model)
    w = max(1, int(world_size))
    n = param_count(s)
    half = precision == "bf16"
    wbytes = 2 if half else 4  # weights/activations element size
    notes: List[str] = []
    if (offload_optimizer and zero_stage == 0) or (offload_params and zero_stage < 3):
        notes.append("offload ignored: optimizer offload needs ZeRO >= 1, parameter offload ZeRO-3")
    offload_optimizer = offload_optimizer and zero_stage >= 1
    offload_params = offload_params and zero_stage == 3
    # the largest block ZeRO-3 gathers at once: a decoder layer or the embedding/head matrix
    block = max(_layer_params(s), s.vocab * s.hidden)

    def shard(total_bytes: float, on: bool) -> float:
        return total_bytes / w if on else total_bytes

    cpu = 0.0
    # weights: trained (full FT) or frozen base + adapters (PEFT), plus a DPO reference copy
    if peft_method == "none":
        method, trainable = "full fine-tuning", n
        weight_bytes = wbytes * n
    else:
        method = "LoRA" if peft_method == "lora" else "QLoRA"
        trainable = lora_params(s, lora_r, target_modules)
        if peft_method == "qlora":  # projections in 4 bits; embeddings, head and norms stay bf16
            proj = s.layers * sum(a * b for a, b in _linears(s).values())
            base = QLORA_BYTES_PER_PARAM * proj + 2 * (n - proj) + 2 * _layer_params(s)  # + one dequantized layer
        else:
            base = wbytes * n
        weight_bytes = base + wbytes * trainable
    if reference_model:
        weight_bytes += wbytes * n
        notes.append("weights include a frozen reference copy (dpo.precompute_ref_log_probs=true drops it)")
    sharded = zero_stage == 3 and peft_method != "qlora"  # 4-bit bases are not partitioned by ZeRO-3
    if sharded and offload_params:
        weights = 2 * block * wbytes
        cpu += weight_bytes / w
    elif sharded:
        weights = weight_bytes / w + (2 * block * wbytes if w > 1 else 0)
    else:
        weights = weight_bytes

    grad_bytes = (2 if half else 4) * trainable
    opt_bytes = (12 if half else 8) * trainable
    if offload_optimizer:
        optimizer = 0.0
        cpu += opt_bytes / w + 4 * trainable / w  # fp32 master/m/v + fp32 gradient partition
        gradients = 0.0 if zero_stage >= 2 else grad_bytes  # ZeRO-2/3 stream gradients out in buckets
    else:
        optimizer = shard(opt_bytes, zero_stage >= 1)
        gradients = shard(grad_bytes, zero_stage >= 2)

    # activations per token (bytes), see docs/performance.md
    layer = (6 * s.hidden + 4 * s.q_dim + 4 * s.kv_dim + 4 * s.intermediate) * wbytes
    if attention == "eager":  # S x S scores: fp32 softmax output + bf16 probabilities per head
        layer += 3 * s.heads * seq_len * wbytes
    if gradient_checkpointing:  # layer inputs kept; one layer's activations live while recomputed
        per_token = s.layers * s.hidden * wbytes + layer
    else:
        per_token = s.layers * layer
    per_token += _LOGIT_BYTES_PER_VOCAB * s.vocab
    tokens = micro_batch * sequences_per_sample * seq_len
    activations = per_token * tokens

    sub = weights + gradients + optimizer + activations
    overhead = CONTEXT_GB * GB + FRAGMENTATION * sub

    setup = f"ZeRO-{zero_stage}"
    if offload_optimizer or offload_params:
        setup += "+offload (" + ", ".join(k for k, v in (("optimizer", offload_optimizer),
                                                         ("params", offload_params)) if v) + ")"
    setup += (f" on {w} rank{'s' if w > 1 else ''}, micro-batch {micro_batch}"
              f"{f' x {sequences_per_sample} sequences' if sequences_per_sample > 1 else ''} x {seq_len} tokens"
              f"{', checkpointing' if gradient_checkpointing else ', no checkpointing'}")
    return MemoryEstimate(weights=weights / GB, gradients=gradients / GB, optimizer=optimizer / GB,
                          activations=activations / GB, overhead=overhead / GB, cpu=cpu / GB, n_params=n,
                          trainable_params=trainable, method=method, setup=setup, notes=notes)


# ---------------------------------------------------------------- the login-node check

def device_memory_gb(job, cluster) -> Optional[float]:
    """Memory of one device of this job, or None when it runs without GPUs (nothing to check)."""
    if not job.gpus_per_node:
        return None
    from dfm_hpc import lumi

    return float(lumi.GCD_MEMORY_GB)  # LUMI's GCD; other GPU clusters are held to the same budget


def host_memory_gb_per_rank(job, cluster) -> Optional[float]:
    """Host memory a rank may use (for offloaded state), or None when the profile does not say."""
    from dfm_hpc import lumi

    try:
        if cluster.mem_per_gpu:
            return lumi.parse_mem_gb(cluster.mem_per_gpu) * max(1, job.gpus_per_node) / max(1, job.tasks_per_node)
        mem = lumi.parse_mem_gb(cluster.mem)
    except ValueError:
        return None
    if mem == 0 and cluster.system == "lumi":
        mem = float(lumi.NODE_MEMORY_GB)
    return mem / max(1, job.tasks_per_node) if mem else None


def estimate_for(job, cfg, shape: Shape, **change) -> MemoryEstimate:
    """estimate_memory for a planned training stage of a composed config; `change` overrides its args."""
    st, ds, peft = cfg[job.stage], cfg.deepspeed, cfg.peft
    args = dict(world_size=job.world_size, zero_stage=int(ds.stage), precision=str(st.precision),
                peft_method=str(peft.method), lora_r=int(peft.r), target_modules=list(peft.target_modules),
                micro_batch=int(st.micro_batch_size), seq_len=int(st.seq_len),
                gradient_checkpointing=bool(st.gradient_checkpointing),
                offload_optimizer=bool(ds.offload_optimizer), offload_params=bool(ds.offload_params),
                sequences_per_sample=2 if job.stage == "dpo" else 1,
                attention="eager" if str(st.get("attn_implementation", "sdpa")) == "eager" else "sdpa")
    args.update(change)
    args["reference_model"] = (job.stage == "dpo" and args["peft_method"] == "none"
                               and not bool(st.get("precompute_ref_log_probs", False)))
    return estimate_memory(shape, **args)


def check_fits(job, cfg) -> List[str]:
    """Problems (empty if none) when a training stage's estimate exceeds the device memory.

    The message names the estimate, its parts, and the alternatives that do fit (each estimated).
    Skipped for stages without GPUs (their memory is not a GCD's) and for a model whose shape is unknown.
    """
    st, cl = cfg[job.stage], cfg.cluster
    if str(st.precision) not in ("bf16", "fp32"):
        return [f"{job.stage}.precision={st.precision!r}: use bf16 or fp32"]
    device_gb = device_memory_gb(job, cl)
    if (device_gb is None or str(cfg.peft.method) not in ("none", "lora", "qlora")
            or not 0 <= int(cfg.deepspeed.stage) <= 3 or int(st.micro_batch_size) < 1 or job.world_size < 1):
        return []  # nothing to check, or reported elsewhere
    shape = model_shape.of(cfg)
    if not shape:
        return []  # nothing to estimate from; the plan's summary says why (a guess could refuse a good run)
    host_gb = host_memory_gb_per_rank(job, cl)
    dev = "GCD" if cl.system == "lumi" else "GPU"

    def fits(e: MemoryEstimate) -> bool:
        return e.total <= device_gb and (host_gb is None or e.cpu <= host_gb)

    est = estimate_for(job, cfg, shape)
    problems: List[str] = []
    if host_gb is not None and est.cpu > host_gb:
        problems.append(f"{job.stage}: ~{est.cpu:.0f} GB of offloaded state per rank in host memory, "
                        f"over the {host_gb:.0f} GB a rank gets ({est.explain()})")
    if est.total <= device_gb:
        return problems

    s, ds, method = job.stage, cfg.deepspeed, str(cfg.peft.method)
    # single changes, each estimated; if none fits, pairs of them
    changes: List[Tuple[str, Dict[str, Any]]] = []
    if ds.stage < 3 and method != "qlora":
        changes.append(("deepspeed=zero3", dict(zero_stage=3, offload_optimizer=False, offload_params=False)))
    if method != "qlora" and not (ds.offload_optimizer and ds.offload_params and ds.stage == 3):
        changes.append(("deepspeed=zero3_offload", dict(zero_stage=3, offload_optimizer=True, offload_params=True)))
    if not st.gradient_checkpointing:
        changes.append((f"{s}.gradient_checkpointing=true", dict(gradient_checkpointing=True)))
    if method == "none":
        changes.append(("peft=lora", dict(peft_method="lora")))
    mb = int(st.micro_batch_size)
    smaller = [m for m in range(mb - 1, 0, -1) if st.global_batch_size % (job.world_size * m) == 0]
    estimated = ((label, estimate_for(job, cfg, shape, **ch)) for label, ch in changes)
    fitting = [(label, e) for label, e in estimated if fits(e)]
    for m in smaller:  # the largest micro-batch that fits alone
        e = estimate_for(job, cfg, shape, micro_batch=m)
        if fits(e):
            fitting.append((f"{s}.micro_batch_size={m}", e))
            break
    if not fitting:
        if smaller:
            changes.append((f"{s}.micro_batch_size={smaller[-1]}", dict(micro_batch=smaller[-1])))
        for i, (la, ca) in enumerate(changes):
            for lb, cb in changes[i + 1:]:
                if la.split("=")[0] == lb.split("=")[0]:
                    continue  # two values of the same key
                e = estimate_for(job, cfg, shape, **{**ca, **cb})
                if fits(e):
                    fitting.append((f"{la} {lb}", e))
    if not fitting and method != "qlora":  # last resort: a 4-bit base (not with ZeRO-3)
        e = estimate_for(job, cfg, shape, peft_method="qlora", zero_stage=min(int(ds.stage), 2), offload_params=False)
        if fits(e):
            fitting.append(("peft=qlora" + (" deepspeed=zero2" if ds.stage == 3 else ""), e))
    what = est.explain().replace("per device", f"per {dev}", 1)
    if fitting:
        options = ", or ".join(f"{label} (~{e.total:.0f} GB)" for label, e in fitting[:4])
        tail = f"fits: {options}"
    else:
        tail = (f"nothing simple fits; use more nodes with deepspeed=zero3, a shorter {s}.seq_len, "
                "or a smaller model")
    problems.append(f"{s}: {what} > {device_gb:.0f} GB per {dev}; {tail}")
    return problems
