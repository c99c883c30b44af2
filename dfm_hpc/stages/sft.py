"""SFT stage: TRL's SFTTrainer on Danish chats, LoRA/QLoRA (PEFT) or full fine-tuning, DeepSpeed ZeRO.

Data (`sft.dataset`): unset = this run's PII-filtered chats (`stages/pii/sft.parquet`), else its merge
stage's (`stages/merge/sft.parquet`); a run dir with those; a Parquet/JSONL file with a `messages` column; a hub id; or `tiny:chats`.
Loss on assistant tokens only (the tokenizer's chat template marks them). The adapter (or the full
model) goes to stages/sft/model/; under ZeRO-3 the weights are gathered on save, so it is complete.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from dfm_hpc import train

_WORDS = ["en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni", "ti"]


def tiny_chats(path: Path, kind: str, n: int = 200, seed: int = 0) -> Path:
    """A learnable toy chat set: 'what comes after X?' -> 'After X comes Y.' (DPO: a wrong answer rejected)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks may write it at the same time
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(n):
            k = rng.randrange(len(_WORDS) - 1)
            q = {"role": "user", "content": f"Hvad kommer efter {_WORDS[k]}?"}
            good = {"role": "assistant", "content": f"Efter {_WORDS[k]} kommer {_WORDS[k + 1]}."}
            bad = {"role": "assistant", "content": f"Efter {_WORDS[k]} kommer {_WORDS[(k + 5) % len(_WORDS)]}."}
            row = {"messages": [q, good]} if kind == "sft" else {"prompt": [q], "chosen": [good], "rejected": [bad]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_chats(source, ctx, kind: str):
    """The `sft` or `dpo` view (see the module docstring for what `source` may be)."""
    import datasets

    if source is None:
        source = str(ctx.run_dir)
    if source.startswith("tiny:"):
        source = str(tiny_chats(ctx.run_dir / "cache" / f"tiny_{kind}.jsonl", kind))
    p = Path(source)
    for stage in ("pii", "merge"):  # a run dir: its PII-filtered view when it has one
        if p.is_dir() and (p / "stages" / stage / f"{kind}.parquet").exists():
            p = p / "stages" / stage / f"{kind}.parquet"
            break
    ctx.log(f"{kind} data: {p}")
    if p.is_file():
        ds = datasets.load_dataset("parquet" if p.suffix == ".parquet" else "json", data_files=str(p), split="train")
    else:
        ds = datasets.load_dataset(source, split="train")
    keep = ["messages"] if kind == "sft" else ["prompt", "chosen", "rejected"]
    return ds.select_columns(keep)


def split(ds, fraction: float = 0.05, seed: int = 0):
    n_eval = max(1, int(len(ds) * fraction))
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def peft_config(cfg):
    if cfg.peft.method == "none":
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.peft.r, lora_alpha=cfg.peft.alpha, lora_dropout=cfg.peft.dropout,
                      target_modules=list(cfg.peft.target_modules), task_type="CAUSAL_LM")


def load_base(cfg, ctx, st, stage: str):
    """(model, tokenizer, where the model came from). The model to fine-tune: `init_from` (a run dir: its sft or cpt model), else the model an
    earlier stage of this run made (dpo after sft, sft after cpt), else `model.name_or_path`.
    QLoRA loads the base in 4 bits (bitsandbytes; on MI250X only if the container's build supports it)."""
    from transformers import AutoTokenizer

    path = train.model_path(cfg, ctx)
    before = list(cfg.stages)[: list(cfg.stages).index(stage)] if stage in cfg.stages else []
    init = st.init_from or (str(ctx.run_dir) if {"sft", "cpt"} & set(before) else None)
    if init:
        for prev in ("sft", "cpt"):
            cand = Path(init) / "stages" / prev / "model"
            if cand.is_dir():
                path = str(cand)
                break
    tokenizer = AutoTokenizer.from_pretrained(path)
    if cfg.peft.method == "qlora":
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return AutoModelForCausalLM.from_pretrained(path, quantization_config=q), tokenizer, path
    return train.load_model_or_adapter(path, st), tokenizer, path


def run(cfg, ctx) -> None:
    import trl

    st = cfg.sft
    train.accelerate_deepspeed_cpu_compat()
    model, tokenizer, base = load_base(cfg, ctx, st, "sft")
    train_ds, eval_ds = split(load_chats(st.dataset, ctx, "sft"))
    args = trl.SFTConfig(**train.training_args(cfg, ctx, st), max_length=st.seq_len, packing=st.packing,
                         assistant_only_loss=True)
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=st.global_batch_size * st.seq_len)
    trainer = trl.SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=train_ds,
                             eval_dataset=eval_ds, peft_config=peft_config(cfg), callbacks=[callback])
    train.fit(trainer, ctx, callback, tokenizer, f"SFT of {cfg.model.name} ({cfg.peft.method}, ZeRO-{cfg.deepspeed.stage})",
              base=base, st=st)
