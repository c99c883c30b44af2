"""A loaded model's own scores, in this process: loading it (adapters merged), held-out loss and perplexity,
greedy generations. The evaluate stage and the checkpoint evaluations use them (docs/evaluation.md)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Dict, List, Tuple


def load(path: str):
    """Model (adapters merged in) and tokenizer, on the GPU when there is one; eval mode."""
    import torch
    from transformers import AutoTokenizer

    from dfm_hpc.job import train

    st = SimpleNamespace(precision="bf16", attn_implementation="sdpa")
    model = train.load_model_or_adapter(path, st)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if torch.cuda.is_available():
        from dfm_hpc.job.device import torch_device

        model = model.to(torch_device())  # this rank's GPU, not always GPU 0
    return model.eval(), tokenizer


def max_positions(model, tokenizer) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 10**7:  # transformers' "no limit" is a huge int
        n = min(n, tok_max) if n else tok_max
    return int(n or 2048)


def perplexity(model, tokenizer, texts: List[str], batch_tokens: int = 8192) -> Dict[str, float]:
    """Token-weighted mean NLL of next-token prediction over the texts (each truncated to the model's
    max positions); texts of under 2 tokens are skipped. Batches of similar length, padded right."""
    import torch
    import torch.nn.functional as F

    limit = max_positions(model, tokenizer)
    seqs = [ids[:limit] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    seqs = sorted((s for s in seqs if len(s) >= 2), key=len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    nll, tokens, i = 0.0, 0, 0
    with torch.no_grad():
        while i < len(seqs):
            j = i + 1
            while j < len(seqs) and len(seqs[j]) * (j - i + 1) <= batch_tokens:
                j += 1
            batch = seqs[i:j]
            longest = max(len(s) for s in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for k, s in enumerate(batch):
                ids[k, : len(s)] = torch.tensor(s)
                mask[k, : len(s)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                   ignore_index=-100, reduction="sum").item()
            tokens += int((target != -100).sum())
            i = j
    loss = nll / tokens if tokens else float("nan")
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 700)) if tokens else float("nan"),
            "eval_texts": len(seqs), "eval_tokens": tokens}


def generate(model, tokenizer, prompts: List[str], max_new_tokens: int) -> List[str]:
    """Greedy continuations, one prompt at a time (no padding effects); chat template when there is one."""
    import torch

    device = next(model.parameters()).device
    outs = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        outs.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return outs


def eval_texts(cfg, ctx) -> Tuple[str, List[str]]:
    """(source, texts) of data.eval_text: tiny:eval, a local JSONL/Parquet (`text`), or a hub id."""
    from dfm_hpc.job import data

    source = cfg.data.eval_text
    if not source:
        return held_out(cfg, ctx)
    cache = ctx.run_dir / "cache"
    texts = data.load_texts(source, cache)
    return source, texts[: cfg.evaluate.max_eval_texts]


def held_out(cfg, ctx) -> Tuple[str, List[str]]:
    """No data.eval_text: text this run's training held out (never trained on). CPT's held-out
    documents (the corpus's last `cpt.eval_fraction`), else the SFT (or DPO) stage's held-out chats
    (the same split it evaluated on), one text per conversation. Validation makes sure one exists."""
    if "cpt" in cfg.stages:
        from dfm_hpc.job import data

        texts = data.load_texts(data.corpus_source(cfg, ctx), ctx.run_dir / "cache")
        n_eval = max(1, int(len(texts) * cfg.cpt.eval_fraction))
        return f"held-out CPT documents ({n_eval})", texts[-n_eval:][: cfg.evaluate.max_eval_texts]
    for stage in ("sft", "dpo"):  # DPO: the prompt and its chosen reply
        if stage in cfg.stages:
            from dfm_hpc.job import data

            _, rows = data.split(data.load_chats(cfg[stage].dataset, ctx, stage))
            chats = [row["messages"] if stage == "sft" else row["prompt"] + row["chosen"] for row in rows]
            texts = ["\n\n".join(m["content"] for m in chat) for chat in chats]
            return (f"held-out {stage.upper()} chats ({len(texts)} conversations)",
                    texts[: cfg.evaluate.max_eval_texts])
    raise ValueError("evaluate needs held-out text: set data.eval_text (a JSONL/Parquet file with a `text` "
                     "column, a hub dataset id, or tiny:eval)")
