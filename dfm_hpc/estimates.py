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

# Dense bf16 matrix peak in TFLOP/s per device as Slurm/ROCm/CUDA see it, never the 2:4-sparsity figure
# (NVIDIA's datasheets print that first: twice the dense one). An MI250X package is two GCDs (383 TF): the
# LUMI "GPU" is one GCD, so its denominator is 191.5, never 383. PEAK_SOURCES says where each comes from.
PEAK_TFLOPS: Dict[str, float] = {
    "mi250x_gcd": 191.5,  # LUMI-G, Frontier
    "mi300x": 1307.4,
    "a100": 312.0,
    "h100_sxm": 989.0,
    "h100_pcie": 756.0,
    "h200": 989.0,  # same compute as H100 SXM, more memory
    "b200": 2250.0,  # HGX B200 at 1,000 W (GB200's B200 at 1,200 W: 2,500)
    "cpu": 0.1,  # the figure conf/throughput's cpu MFUs are relative to
    "lumi_c": 1.25,  # LUMI-C's cpu_only place: 16 cores; no training runs there, the entry only names its peak
}
PEAK_SOURCES: Dict[str, str] = {
    "mi250x_gcd": "[derived] 383.0 TF bf16 per MI250X / 2 GCDs: "
                  "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250x.html",
    "mi300x": "[pub] 1,307.4 TF bf16 dense: https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html",
    "a100": "[pub] 312 TF bf16 (624 sparse): https://www.nvidia.com/en-us/data-center/a100/",
    "h100_sxm": "[pub] 989 TF bf16 (1,979 sparse), H100 SXM: https://www.nvidia.com/en-us/data-center/h100/",
    "h100_pcie": "[pub] 756 TF bf16 (1,513 sparse), H100 PCIe: https://www.nvidia.com/en-us/data-center/h100/",
    "h200": "[pub] 989 TF bf16 (1,979 sparse), H200 SXM: https://www.nvidia.com/en-us/data-center/h200/",
    "b200": "[derived] HGX B200 36 PF bf16 with sparsity per 8 GPUs / 8 / 2: "
            "https://www.nvidia.com/en-us/data-center/hgx/",
    "cpu": "[assumed] nominal for 2 x86 cores (the dev VM); only tiny runs are predicted from it",
    "lumi_c": "[derived] 16 cores (cluster.cpu_only) of an AMD EPYC 7763 x 2.45 GHz x 32 FP32 FLOP/cycle "
              "(AVX2, 2 FMA units): https://docs.lumi-supercomputer.eu/hardware/lumic/",
}

# Memory per device (GB) the plan's memory check holds a training rank to, by the same keys (the datasheets
# above). A100 is left out: it comes with 40, 64 (Leonardo) or 80 GB; unknown devices get LUMI's GCD, 64 GB.
DEVICE_MEMORY_GB: Dict[str, float] = {"mi250x_gcd": 64, "mi300x": 192, "h100_sxm": 80, "h100_pcie": 80,
                                      "h200": 141, "b200": 180}

# substrings of torch.cuda.get_device_name() -> table key (first match wins)
_DEVICE_NAMES: Tuple[Tuple[str, str], ...] = (
    ("mi250", "mi250x_gcd"), ("mi300x", "mi300x"), ("h200", "h200"), ("h100 pcie", "h100_pcie"),
    ("h100", "h100_sxm"), ("a100", "a100"), ("b200", "b200"),
)


def device_key(device_name: str) -> Optional[str]:
    """'AMD Instinct MI250X' -> 'mi250x_gcd', 'NVIDIA H100 80GB HBM3' -> 'h100_sxm', 'h100' (a throughput.devices
    key) -> 'h100_sxm'; None if unknown."""
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


def attention_span(model: Any, seq_len: int) -> int:
    """Σ over the attention layers of heads·head_dim x the tokens each attends to: L·H·S for a Llama, less where a
    layer's sliding window is shorter than the sequence; linear-attention layers attend to no sequence."""
    s = _shape(model)
    return sum(la.o * min(seq_len, la.window or seq_len) for la in s.per_layer if la.kind != "linear_attention")


def model_flops_per_token(model: Any, seq_len: int, recompute: bool = False) -> float:
    """flops_per_token of a model's shape (a model_shape.Shape or a config.json dict): 6·N + 12·Σ(H·S) over its
    attention layers (= 12·L·H·S for a Llama; sliding layers count their window, linear-attention layers none)."""
    s = _shape(model)
    passes = 4 if recompute else 3
    return passes * (2.0 * param_count(s) + 4.0 * attention_span(s, seq_len))


def model_mfu(tokens_per_s_per_device: float, model: Any, seq_len: int,
              peak_tflops: Union[str, float, None] = None) -> float:
    """mfu() of a model's shape, its attention counted per layer (model_flops_per_token)."""
    return tokens_per_s_per_device * model_flops_per_token(model, seq_len) / (pick_peak_tflops(peak_tflops) * 1e12)


# ---------------------------------------------------------------- parameter count (Llama/Mistral)

def _shape(model: Any) -> Shape:
    """A model_shape.Shape, or a config.json dict read by model_shape (what the tests and benchmarks pass)."""
    if isinstance(model, dict):
        model = model_shape.from_config(model, "a config.json dict")
    if not isinstance(model, Shape):
        raise ValueError(f"model shape unknown: {model.reason}")
    return model


def _linears(la, h: int) -> Dict[str, Tuple[int, int]]:
    """One decoder layer's projections: name -> (in, out); a Gated DeltaNet layer's in-projections as one."""
    out: Dict[str, Tuple[int, int]] = {}
    if la.kind == "linear_attention":
        out.update(in_proj=(h, la.linear), out_proj=(la.linear_out, h))
    else:
        out.update(q_proj=(h, la.q), k_proj=(h, la.k), v_proj=(h, la.v), o_proj=(la.o, h))
    if la.mlp_matrices == 3:
        out["gate_proj"] = (h, la.mlp)
    out.update(up_proj=(h, la.mlp), down_proj=(la.mlp, h))
    return out


def _layer_params(la, h: int) -> int:
    return sum(a * b for a, b in _linears(la, h).values()) + la.extra  # + norms and small weights


def _max_layer(s: Shape) -> int:
    return max(_layer_params(la, s.hidden) for la in s.per_layer)


def param_count(model: Any) -> int:
    """Parameters as transformers builds the (text) model: the embedding, the output head unless tied to it, each
    layer's attention (or Gated DeltaNet) and MLP projections, norms and small weights, the final norm.
    Mistral-7B-v0.1: 7,241,732,096; Llama-2-7B: 6,738,415,616 (tests/test_estimates.py checks each family against
    transformers' own count of the model)."""
    s = _shape(model)
    layers = sum(_layer_params(la, s.hidden) for la in s.per_layer)
    return (1 if s.tied else 2) * s.vocab * s.hidden + layers + s.hidden + s.embed_extra


def lora_params(model: Any, r: int, target_modules: Sequence[str]) -> int:
    """Trainable LoRA parameters: r·(in + out) per targeted projection per layer ("all-linear": all of them;
    a Gated DeltaNet layer's four in-projections count as r·(4·in + out)). Other names are not counted."""
    s = _shape(model)
    total = 0
    for la in s.per_layer:
        linears = _linears(la, s.hidden)
        names = set(linears) if "all-linear" in target_modules else set(target_modules)
        for name, (a, b) in linears.items():
            if name in names and b:
                total += r * ((4 * a if name == "in_proj" else a) + b)
    return total


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
                    attention: str = "sdpa", sequence_parallel: int = 1, packing: bool = False,
                    liger_kernel: bool = False) -> MemoryEstimate:
    """Peak memory of one rank, as in the ZeRO paper (Rajbhandari et al. 2020), in GB.

    Mixed-precision Adam keeps 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, m, v) bytes per
    trained parameter; fp32 training 4 + 4 + 8. ZeRO-1 shards the optimizer state over the ranks,
    ZeRO-2 the gradients too, ZeRO-3 the weights too (plus two gathered layers in flight).
    offload_optimizer (ZeRO >= 1) moves optimizer state and fp32 gradients to host memory;
    offload_params (ZeRO-3) the weights. LoRA/QLoRA freeze the base (bf16, or ~0.53 byte/param in
    4 bits for the layers' projections) and train adapters with full Adam state.
    DPO: sequences_per_sample=2 (chosen + rejected in one forward), reference_model=True for a
    separate frozen copy (full fine-tuning without precomputed reference log-probs).
    sequence_parallel=N: Ulysses, each rank holds 1/N of every sequence's activations. packing: rows are full
    (seq_len tokens, the case counted anyway) and, unless flash attention, carry an S x S mask. liger_kernel:
    no whole logits.
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
    block = max(_max_layer(s), s.vocab * s.hidden)

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
            proj = sum(a * b for la in s.per_layer for a, b in _linears(la, s.hidden).values())
            base = QLORA_BYTES_PER_PARAM * proj + 2 * (n - proj) + 2 * _max_layer(s)  # + one dequantized layer
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

    # activations per token (bytes), see docs/performance.md; each rank holds seq_len / sequence_parallel tokens
    # (Ulysses gives attention the whole sequence for 1/N of the heads: the same bytes)
    def layer_bytes(la) -> float:
        if la.kind == "linear_attention":  # projections in and out, the gated output, the chunked recurrence
            act = 6 * s.hidden + 4 * la.linear + 4 * la.linear_out
        else:
            act = 6 * s.hidden + 4 * la.q + 4 * la.k + 4 * max(la.v, la.k)
            if attention == "eager":  # S x S scores: fp32 softmax output + bf16 probabilities per head
                act += 3 * s.heads * seq_len
        return (act + (4 if la.mlp_matrices == 3 else 3) * la.mlp) * wbytes

    per_layer = [layer_bytes(la) for la in s.per_layer]
    if gradient_checkpointing:  # layer inputs kept; one layer's activations live while recomputed
        per_token = s.layers * s.hidden * wbytes + max(per_layer)
    else:
        per_token = sum(per_layer)
    if liger_kernel:  # fused linear cross-entropy: the logits never exist whole, a chunk at a time
        notes.append("logits not counted: liger's fused cross-entropy computes them in chunks")
    else:
        per_token += _LOGIT_BYTES_PER_VOCAB * s.vocab
    sp = max(1, int(sequence_parallel))
    tokens = micro_batch * sequences_per_sample * seq_len / sp
    activations = per_token * tokens
    if packing and attention != "flash_attention_2":  # packed rows: a block-causal S x S mask (bool) per row
        activations += micro_batch * sequences_per_sample * seq_len * seq_len

    sub = weights + gradients + optimizer + activations
    overhead = CONTEXT_GB * GB + FRAGMENTATION * sub

    setup = f"ZeRO-{zero_stage}"
    if offload_optimizer or offload_params:
        setup += "+offload (" + ", ".join(k for k, v in (("optimizer", offload_optimizer),
                                                         ("params", offload_params)) if v) + ")"
    setup += (f" on {w} rank{'s' if w > 1 else ''}, micro-batch {micro_batch}"
              f"{f' x {sequences_per_sample} sequences' if sequences_per_sample > 1 else ''} x {seq_len} tokens"
              f"{f', sequence parallel {sequence_parallel}' if sequence_parallel > 1 else ''}"
              f"{', packed' if packing else ''}{', liger' if liger_kernel else ''}"
              f"{', checkpointing' if gradient_checkpointing else ', no checkpointing'}")
    return MemoryEstimate(weights=weights / GB, gradients=gradients / GB, optimizer=optimizer / GB,
                          activations=activations / GB, overhead=overhead / GB, cpu=cpu / GB, n_params=n,
                          trainable_params=trainable, method=method, setup=setup, notes=notes)


# ---------------------------------------------------------------- a planned stage's estimate

def estimate_for(job, cfg, shape: Shape, **change) -> MemoryEstimate:
    """estimate_memory for a planned training stage of a composed config; `change` overrides its args."""
    st, ds, peft = cfg[job.stage], cfg.deepspeed, cfg.peft
    args = dict(world_size=job.world_size, zero_stage=int(ds.stage), precision=str(st.precision),
                peft_method=str(peft.method), lora_r=int(peft.r), target_modules=list(peft.target_modules),
                micro_batch=int(st.micro_batch_size), seq_len=int(st.seq_len),
                gradient_checkpointing=bool(st.gradient_checkpointing),
                offload_optimizer=bool(ds.offload_optimizer), offload_params=bool(ds.offload_params),
                sequences_per_sample=2 if job.stage == "dpo" else 1,
                attention=str(st.get("attn_implementation", "sdpa")),
                sequence_parallel=int(st.get("sequence_parallel", 1)), packing=bool(st.get("packing", False)),
                liger_kernel=bool(st.get("liger_kernel", False)))
    args.update(change)
    args["reference_model"] = (job.stage == "dpo" and args["peft_method"] == "none"
                               and not bool(st.get("precompute_ref_log_probs", False)))
    return estimate_memory(shape, **args)
