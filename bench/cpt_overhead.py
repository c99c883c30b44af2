"""dfm_hpc's CPT training loop against a bare HF Trainer loop (issue #4): same tiny model, same packed
data, same DeepSpeed config, one process, in one run; the runs alternate and each is repeated.

    python bench/cpt_overhead.py [--steps 200] [--repeat 3]

"dfm_hpc" = the Trainer as the cpt stage builds it (train.training_args, the metrics callback that
logs tokens/s, MFU and memory every step, the sample-recording dataset); "bare" = a Trainer with
the same hyperparameters and DeepSpeed dict and nothing else. Reported: the Trainer's own
train_runtime (model and engine set-up excluded), median over the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT="29731", OMP_NUM_THREADS="1")

    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging

    logging.set_verbosity_error()
    from dfm_hpc import dist, schema, tiny
    from dfm_hpc.job import data as cpt
    from dfm_hpc.job import train
    from dfm_hpc.job.rank import StageContext

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    exp = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "experiment" / "cpt_tiny.yaml")
    exp.pop("defaults")  # tiny_llama, tiny data, zero2: the schema's defaults already
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), exp)
    cfg.cpt.max_steps, cfg.cpt.save_every_steps, cfg.cpt.log_every_steps = args.steps, 10 ** 9, 1
    cfg.deepspeed.stage = 2
    path = tiny.resolve("tiny:llama", work / "cache")
    tok = AutoTokenizer.from_pretrained(path)
    blocks = cpt.pack(cpt.load_texts("tiny:corpus", work / "cache"), tok, cfg.cpt.seq_len)

    def ctx_for(name):
        d = work / name
        d.mkdir(exist_ok=True)
        return StageContext(work, d, dist.setup_env())

    def run_dfm(i):
        ctx = ctx_for(f"dfm{i}")
        kw = train.training_args(cfg, ctx, cfg.cpt)
        kw["report_to"] = []
        cb = train.metrics_callback(cfg, ctx, cfg.cpt, cfg.cpt.global_batch_size * cfg.cpt.seq_len)
        t = Trainer(model=train.load_model(path, cfg.cpt), args=TrainingArguments(**kw),
                    train_dataset=cpt.Blocks(blocks, []), callbacks=[cb])
        return t.train().metrics["train_runtime"]

    def run_bare(i):
        ctx = ctx_for(f"bare{i}")
        kw = train.training_args(cfg, ctx, cfg.cpt)  # same hyperparameters and DeepSpeed dict
        kw["report_to"] = []
        data = [{"input_ids": b, "labels": b} for b in blocks]
        t = Trainer(model=train.load_model(path, cfg.cpt), args=TrainingArguments(**kw), train_dataset=data)
        return t.train().metrics["train_runtime"]

    train.accelerate_deepspeed_cpu_compat()
    bare, ours = [], []
    for i in range(args.repeat):
        bare.append(run_bare(i))
        ours.append(run_dfm(i))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, 1 process, torch {torch.__version__}, "
          f"DeepSpeed ZeRO-2 on its CPU accelerator; tiny Llama, seq {cfg.cpt.seq_len}, global batch "
          f"{cfg.cpt.global_batch_size}, {args.steps} steps, median of {args.repeat}\n")
    print("| loop | train_runtime s (runs) | steps/s | overhead |\n|---|---|---|---|")
    print(f"| bare HF Trainer | {b:.2f} ({', '.join(f'{x:.2f}' for x in bare)}) | {args.steps / b:.1f} | - |")
    print(f"| dfm_hpc cpt stage | {o:.2f} ({', '.join(f'{x:.2f}' for x in ours)}) | {args.steps / o:.1f} | "
          f"{(o / b - 1) * 100:+.1f} % |")
    train.teardown()


if __name__ == "__main__":
    main()
