"""Tiny random-weight versions of today's open decoder families, real-shaped in miniature.

Each `tiny:<family>` is built from transformers' own config class for the family's text model, with
the values of dfm_hpc/tiny/configs/<family>.json (the plan's estimates read the same file:
model_shape.py), so the saved config.json carries those values verbatim. What makes each family is kept:

    llama3      Llama-3.1-8B: GQA, untied embeddings, llama3 RoPE scaling
    qwen3       Qwen3-8B: GQA, q/k RMSNorm, untied
    qwen3_5     Qwen3.5-9B's text model (qwen3_5_text): 3 gated-delta-net linear-attention layers to
                1 full-attention layer, gated attention output, partial RoPE, untied
    gemma3      Gemma-3's text model (gemma3_text): sliding-window and global layers with their own RoPE,
                q/k norm, query_pre_attn_scalar, tied embeddings scaled by sqrt(hidden)
    gemma4      Gemma-4's text model (gemma4_text): sliding/global layers, a wider head on the global
                layer (per_layer_config), proportional partial RoPE there, per-layer input embeddings,
                final logit soft-capping, tied
    apertus     Apertus-8B: xIELU activation, q/k norm, llama3 RoPE scaling, untied
    ministral3  Ministral-3-8B's text model (ministral3): GQA, YaRN RoPE with Llama-4 attention scaling

The sliding window (16) is shorter than the tests' sequences, so the windowed path really runs. The
tokenizer is the family's own in miniature (tokenizers.build_family_tokenizer: its special tokens and
chat template); bos/eos/pad ids in config.json and generation_config.json are the tokenizer's.
Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from dfm_hpc.model_shape import tiny_config

FAMILIES = ("llama3", "qwen3", "qwen3_5", "gemma3", "gemma4", "apertus", "ministral3")


def family_tokenizer(family: str, vocab_size: int, model_max_length: int):
    """The family's tiny tokenizer, exactly vocab_size tokens long (the model's embedding rows)."""
    from dfm_hpc.tiny.tokenizers import build_family_tokenizer

    tokenizer = build_family_tokenizer(family, vocab_size, model_max_length)
    if len(tokenizer) != vocab_size:  # every id the model can emit must be a token, and no more
        raise RuntimeError(f"tiny {family} tokenizer has {len(tokenizer)} tokens, {family}.json says {vocab_size}")
    return tokenizer


def build_tiny_family(family: str, out_dir, seed: int = 0) -> Path:
    """A random-weight <family>ForCausalLM + the family's tiny tokenizer, saved with save_pretrained."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from dfm_hpc.tiny.models import _save_tokenizer, _write_info

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = tiny_config(family)
    tokenizer = family_tokenizer(family, spec["vocab_size"], spec["max_position_embeddings"])
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model(spec["model_type"], **{k: v for k, v in spec.items() if k != "model_type"}, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    _write_info(out, kind=family, seed=seed)  # the shape: config.json beside it
    return out


BUILDERS = {family: partial(build_tiny_family, family) for family in FAMILIES}
