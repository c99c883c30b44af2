"""The `fullft` part of the GPU benchmark (issue #21 item 6): full fine-tuning SFT of a ~1B Qwen3-shaped model.

Qwen3-1.7B's widths (hidden 2048, 16 heads, 8 KV heads, head_dim 128, qk-norm, MLP 6144, 151,936 vocabulary,
tied embeddings) at half its depth (14 layers): 1.03B parameters. Random weights, built from transformers'
Qwen3Config. One packed row of 8,192 tokens per step, sequence parallelism 1, bf16 autocast over fp32 weights
(what the Trainer's bf16=True keeps), SDPA, activation checkpointing, fused AdamW, gradient clipping at 1.0;
a plain torch loop. No hub access. Peak memory against the plan's estimate (gpu_parts.memory).

The rows are packed as sft.packing packs them: whole chats one after another, position ids reset per chat
(transformers then builds a block-causal mask from them, so chats do not attend to each other), the last
chat of a row cut at the row's end. The chats have real lengths: every root-to-assistant path of the 100
real English OASST trees (bench/data/oasst_chat_lengths.json keeps only their UTF-8 byte lengths; written by
`--lengths-from`), tokens ~ bytes / 4 as a 150k-vocabulary BPE tokenizes English, each message framed as
Qwen3's ChatML writes it (`<|im_start|>role\\n` 3 tokens, `<|im_end|>\\n` 2). The loss mask is each
assistant answer and its `<|im_end|>\\n` (labels -100 elsewhere). Token ids are random (speed only).

    python bench/gpu_fullft.py --lengths-from /work/shared/data/oasst/en_100_tree.jsonl.gz   # the data file
"""

from __future__ import annotations

import gc
import gzip
import json
import math
import random
import sys
import time
from pathlib import Path

LENGTHS = Path(__file__).resolve().parent / "data" / "oasst_chat_lengths.json"
BYTES_PER_TOKEN = 4  # English through a ~150k-vocabulary BPE (Qwen3's): ~4 characters a token
HEADER, FOOTER = 3, 2  # <|im_start|> role \n ... <|im_end|> \n

SHAPES = {  # a Qwen3Config's keys (the model is built from them; estimates count the built model's config)
    "gpu": {"qwen3": dict(hidden_size=2048, num_hidden_layers=14, num_attention_heads=16, num_key_value_heads=8,
                          head_dim=128, intermediate_size=6144, vocab_size=151936, tie_word_embeddings=True,
                          max_position_embeddings=40960, rms_norm_eps=1e-6),
            "seq": 8192, "rows_per_step": 1, "warmup": 3, "steps": 10},
    "smoke": {"qwen3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=16, intermediate_size=128, vocab_size=512, tie_word_embeddings=True,
                            max_position_embeddings=1024),
              "seq": 512, "rows_per_step": 1, "warmup": 1, "steps": 2},
}


def chat_masks(chats: list[list[int]]) -> list[list[bool]]:
    """Each chat's per-token loss mask: messages alternate user/assistant from the user's; an assistant message's
    answer and end tokens are trained, its header and every user token are not."""
    out = []
    for chat in chats:
        mask: list[bool] = []
        for i, nbytes in enumerate(chat):
            body = max(1, math.ceil(nbytes / BYTES_PER_TOKEN)) + FOOTER
            mask += [False] * HEADER + [i % 2 == 1] * body
        out.append(mask)
    return out


def pack(masks: list[list[bool]], seq: int, rows: int, seed: int = 0):
    """`rows` rows of `seq` tokens: chats in a seeded random order (reshuffled each pass), whole, one after another,
    the last one cut at the row's end. Returns (position_ids, loss_mask) as lists of rows."""
    rng = random.Random(seed)
    pos: list[list[int]] = []
    mask: list[list[bool]] = []
    order: list[int] = []
    while len(pos) < rows:
        p: list[int] = []
        m: list[bool] = []
        while len(p) < seq:
            if not order:
                order = list(range(len(masks)))
                rng.shuffle(order)
            take = masks[order.pop()][: seq - len(p)]
            p += range(len(take))
            m += take
        pos.append(p)
        mask.append(m)
    return pos, mask


def lengths_from(path: Path) -> dict:
    """bench/data/oasst_chat_lengths.json's content from OASST's export-tree JSONL(.gz): every root-to-assistant
    path's message byte lengths (no text)."""
    def walk(node, above):
        chat = above + [len(node["text"].encode())]
        want = "prompter" if len(above) % 2 == 0 else "assistant"
        if node["role"] != want:
            raise ValueError(f"{path}: message {node.get('message_id')} is {node['role']}, expected {want}")
        if want == "assistant":
            yield chat
        for child in node.get("replies", []):
            yield from walk(child, chat)

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        chats = [c for line in f if line.strip() for c in walk(json.loads(line)["prompt"], [])]
    return {"source": "LAION-AI/Open-Assistant f1e6ed9526f5817531f3ab85441a40b3671ddccb "
                      "model/model_eval/manual/data/en_100_tree.jsonl (Apache-2.0), via /work/shared/data/oasst",
            "what": "UTF-8 bytes of each message of every root-to-assistant path; user first, then alternating",
            "chats": chats}


def bench_fullft(s: dict, peak: float) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from dfm_hpc import estimates

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    seq, per_step, n_steps = s["seq"], s["rows_per_step"], s["warmup"] + s["steps"]
    chats = json.loads(LENGTHS.read_text())["chats"]
    pos, mask = pack(chat_masks(chats), seq, per_step * n_steps)
    pos_t = torch.tensor(pos, device=device)
    mask_t = torch.tensor(mask, device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, s["qwen3"]["vocab_size"], (len(pos), seq), generator=gen).to(device)
    labels = ids.masked_fill(~mask_t, -100)

    torch.manual_seed(0)
    cfg = Qwen3Config(**s["qwen3"], attn_implementation="sdpa", use_cache=False)
    with device:
        model = Qwen3ForCausalLM(cfg)  # fp32 weights; the steps run under bf16 autocast on the GPU
    if hasattr(model, "activation_checkpointing_enable"):  # its new name (the GPU image's transformers is older)
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **({"fused": True} if gpu else {}))
    shape = model.config.to_dict()
    if gpu:
        torch.cuda.reset_peak_memory_stats()

    losses = []
    for i in range(n_steps):
        if i == s["warmup"]:
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        rows = slice(i * per_step, (i + 1) * per_step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            loss = model(input_ids=ids[rows], position_ids=pos_t[rows], labels=labels[rows], use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    if gpu:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = per_step * seq * s["steps"] / dt
    mem = torch.cuda.max_memory_allocated() / 1e9 if gpu else None
    from gpu_parts import memory  # against the plan's estimate for this setup, before anything is freed

    vs_plan = memory(estimates.estimate_memory(shape, world_size=1, zero_stage=0, micro_batch=per_step, seq_len=seq,
                                               gradient_checkpointing=True, packing=True))
    built = sum(p.numel() for p in model.parameters())
    model = opt = None
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    timed = mask_t[s["warmup"] * per_step:]
    return {"model": "Qwen3-shaped", "params": estimates.param_count(shape), "params_built": built,
            "seq": seq, "rows_per_step": per_step, "sequence_parallel": 1, "warmup": s["warmup"],
            "steps": s["steps"], "precision": "bf16 autocast, fp32 weights + AdamW" if gpu else "fp32 (CPU)",
            "attention": "sdpa, block-causal per chat", "checkpointing": True,
            "chats_per_row": round(sum(r.count(0) for r in pos) / len(pos), 1),
            "trained_fraction": round(timed.float().mean().item(), 3),
            "tokens_per_s": round(tps, 1), "mfu": round(estimates.model_mfu(tps, shape, seq, peak), 4),
            "hfu": round(tps * estimates.model_flops_per_token(shape, seq, recompute=True) / (peak * 1e12), 4),
            "step_s": round(dt / s["steps"], 4), "peak_memory_gb": None if mem is None else round(mem, 1),
            "loss_first": round(losses[0].item(), 3), "loss_last": round(losses[-1].item(), 3), **vs_plan}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--lengths-from":
        data = lengths_from(Path(sys.argv[2]))
        LENGTHS.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"{LENGTHS}: {len(data['chats'])} chats")
    else:
        sys.exit(__doc__.rstrip().rsplit("\n", 1)[-1].strip())
