"""What a training stage asks of the devices beyond memory: Ulysses sequence parallelism (sft.sequence_parallel)
against the model's heads, the sequence, the world size, ZeRO and the attention; packing against linear-attention
layers; Liger's kernels need GPUs."""

from __future__ import annotations

from typing import List

from dfm_hpc import model_shape
from dfm_hpc.registry import TRAINED_STAGES
from dfm_hpc.tokens import sequence_parallel

# the attention Ulysses wraps (accelerate's DeepSpeedSequenceParallelConfig): eager builds an S x S mask it drops
SP_ATTENTION = ("sdpa", "flash_attention_2")


def check_sequence_parallel(cfg, jobs) -> List[str]:
    """sft.sequence_parallel=N, as DeepSpeed's UlyssesSPAttentionHF and accelerate will demand it at the start,
    said before anything is submitted."""
    out: List[str] = []
    for job in jobs:
        st = cfg[job.stage]
        n = sequence_parallel(st) if job.stage in TRAINED_STAGES else 1
        if n == 1:
            continue
        key = f"{job.stage}.sequence_parallel={n}"
        if job.world_size % n:
            out.append(f"{key}: the stage's world size {job.world_size} ({job.nodes} nodes x {job.tasks_per_node} "
                       f"ranks) is not a multiple of {n}; each group of {n} ranks shares one sequence")
        if st.seq_len % n:
            out.append(f"{key}: {job.stage}.seq_len={st.seq_len} is not divisible by {n} (each rank holds an equal "
                       f"chunk); e.g. {job.stage}.seq_len={st.seq_len // n * n or n}")
        if int(cfg.deepspeed.stage) != 3:
            out.append(f"{key}: sequence parallelism runs with ZeRO-3 here (the weights sharded over every rank, "
                       f"as in DeepSpeed's ALST recipe); use deepspeed=zero3 (now stage {cfg.deepspeed.stage})")
        if str(st.attn_implementation) not in SP_ATTENTION:
            out.append(f"{key}: {job.stage}.attn_implementation={st.attn_implementation} is not one Ulysses can wrap "
                       f"(it drops the S x S mask eager needs); use {' or '.join(SP_ATTENTION)}")
        if str(cfg.peft.method) == "qlora":
            out.append(f"{key}: QLoRA's 4-bit base is not partitioned by ZeRO-3; use peft=lora or peft=none")
        shape = model_shape.of(cfg)
        if not shape:
            continue  # runtime checks the heads; the plan's summary says why the shape is unknown
        if shape.heads % n:
            out.append(f"{key}: the model's {shape.heads} attention heads are not divisible by {n} "
                       f"(num_attention_heads in {shape.source}); Ulysses gives each rank heads/{n}")
        if shape.kv_heads % n and n % shape.kv_heads:
            out.append(f"{key}: the model's {shape.kv_heads} key/value heads and {n} do not divide one another "
                       f"(num_key_value_heads in {shape.source})")
        if shape.linear_attention_layers:
            out.append(f"{key}: {cfg.model.name_or_path} has {shape.linear_attention_layers} linear-attention "
                       "layers, whose recurrent state Ulysses would restart on every rank (accelerate refuses them); "
                       f"use {job.stage}.sequence_parallel=1 (with {job.stage}.liger_kernel=true at long context)")
    return out


def check_liger(cfg, jobs) -> List[str]:
    """Liger's kernels are Triton GPU kernels: refused for a stage without GPUs (local CPU runs, CPU partitions)."""
    return [f"{j.stage}.liger_kernel=true: Liger's kernels run on GPUs only, and this {j.stage} job has none "
            f"(cluster={cfg.cluster.name}, gpus_per_node=0); set {j.stage}.liger_kernel=false"
            for j in jobs if j.stage in TRAINED_STAGES and cfg[j.stage].get("liger_kernel") and not j.gpus_per_node]


def check_packing(cfg, jobs) -> List[str]:
    """sft.packing with linear-attention layers (Qwen3.5's Gated DeltaNet): transformers' torch path for them
    (causal_conv1d_fn, torch_chunk_gated_delta_rule) ignores the packed rows' boundaries (cu_seqlens), so each
    chat would start from the previous one's convolution and recurrent state; the kernels that honour them
    (causal-conv1d, flash-linear-attention) are not in the container."""
    if not any(j.stage == "sft" for j in jobs) or not cfg.sft.packing:
        return []
    shape = model_shape.of(cfg)
    if not shape or not shape.linear_attention_layers:
        return []
    return [f"sft.packing=true: {cfg.model.name_or_path} has {shape.linear_attention_layers} linear-attention layers "
            f"(layer_types in {shape.source}), whose recurrent state would run on across the chats packed into one "
            "row (transformers' torch path ignores their boundaries); set sft.packing=false"]
