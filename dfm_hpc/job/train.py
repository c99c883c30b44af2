"""Training runtime shared by the cpt, sft and dpo stages (compute node: imports torch & co.).

torch.distributed comes up from the env the launcher exported (dist.py); DeepSpeed gets the `deepspeed` group
rendered by ds_config.py. Checkpoints go to stages/<stage>/checkpoints/, every `save_every_steps` and when Slurm's
pre-timeout signal arrives; a new start resumes from the latest whole one (model, optimizer, scheduler, RNG, data
position: the Trainer's own resume). Metrics go to stages/<stage>/metrics.jsonl (+ TensorBoard when installed), the
final model to stages/<stage>/model/, the loss curve to stages/<stage>/loss.png.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from dfm_hpc import estimates, model_shape, predict, tiny, tokens
from dfm_hpc.job import curves, ds_config, held_out
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import TrainStage


def accelerate_deepspeed_cpu_compat() -> None:
    """Let accelerate see every rank when DeepSpeed runs on its CPU accelerator (tests, CPU runs).

    accelerate picks no backend when DeepSpeed runs without a GPU, so its state reports one process:
    the Trainer's dataloader is then not sharded (every rank trains on the same data) and TRL's
    gather_for_metrics fails. We make it choose gloo with the real world size, as it does for plain
    multi-CPU runs. No effect when a GPU is present or in single-process runs.
    """
    import accelerate.state as state
    import torch
    from accelerate.utils import DistributedType

    if getattr(state.PartialState, "_dfm_hpc_patched", False):
        return
    original = state.PartialState._prepare_backend

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        chosen, kind = original(self, cpu, sagemaker_dp, backend)
        if (kind == DistributedType.NO and not cpu and not torch.cuda.is_available()
                and int(os.environ.get("WORLD_SIZE", "1")) > 1
                and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"):
            return "gloo", DistributedType.MULTI_CPU
        return chosen, kind

    state.PartialState._prepare_backend = prepare_backend
    state.PartialState._dfm_hpc_patched = True
    if os.environ.get("DFM_HPC_VERBOSE") != "1":  # its CPU shm op prints a bare "built successfully" per rank
        import importlib

        ds_torch = importlib.import_module("deepspeed.comm.torch")  # `import ... as` would get its `torch`
        build = ds_torch.build_shm_op
        ds_torch.build_shm_op = lambda: _silently(build)


def _silently(fn):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def model_path(cfg, ctx) -> str:
    return tiny.resolve(cfg.model.name_or_path, ctx.run_dir / "cache")


def load_model(path: str, st: TrainStage):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if st.precision == "bf16" and on_gpu() else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=st.attn_implementation)


def load_model_or_adapter(path: str, st: TrainStage):
    """A model dir, or a PEFT adapter dir: its base with the adapter merged in. The base may itself
    be an adapter dir (a DPO adapter sits on the SFT model), so this follows the chain."""
    if not (Path(path) / "adapter_config.json").exists():
        return load_model(path, st)
    from peft import PeftConfig, PeftModel

    base = load_model_or_adapter(PeftConfig.from_pretrained(path).base_model_name_or_path, st)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def record_adapter_base(model_dir: Path, base: str) -> None:
    """Point a saved adapter at the model it was trained on. PEFT writes the merged-in base's
    origin (the plain base), which is wrong for an adapter trained on base + an earlier adapter."""
    cfg_file = Path(model_dir) / "adapter_config.json"
    if cfg_file.exists():
        data = json.loads(cfg_file.read_text())
        data["base_model_name_or_path"] = str(base)
        cfg_file.write_text(json.dumps(data, indent=2) + "\n")


def export_merged(ctx, st: TrainStage, tokenizer) -> None:
    """`merge_adapter`: the adapter merged into its base, saved as a plain HF model in merged/."""
    model_dir = ctx.stage_dir / "model"
    if not (model_dir / "adapter_config.json").exists():
        ctx.log("merge_adapter: the stage trained a full model (no adapter); model/ is already plain")
        return
    out = ctx.stage_dir / "merged"
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # rank 0 alone: under ZeRO-3, from_pretrained would otherwise partition (collectives) the load
    unset_hf_deepspeed_config()
    load_model_or_adapter(str(model_dir), st).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    ctx.log(f"merged adapter into its base: {out}")


def reporters(ctx, st: TrainStage) -> list:
    """The trackers in `report_to` that are installed; W&B writes into the run dir, offline by default
    (compute nodes have no internet; `wandb sync` from the login node)."""
    import importlib.util

    found = [r for r in st.report_to if importlib.util.find_spec(r) is not None]
    if "tensorboard" in found:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(ctx.stage_dir / "tensorboard"))
    if "wandb" in found:
        os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE") or st.wandb_mode  # the cluster's env wins
        os.environ.setdefault("WANDB_PROJECT", st.wandb_project)
        os.environ.setdefault("WANDB_DIR", str(ctx.stage_dir))
        os.environ.setdefault("WANDB_NAME", f"{ctx.run_dir.name}-{ctx.stage_dir.name}")
    missing = sorted(set(st.report_to) - set(found))
    if missing and ctx.is_main:
        ctx.log(f"report_to: {', '.join(missing)} not installed here; not logging to it")
    return found


def training_args(cfg, ctx, st: TrainStage) -> dict:
    """Keyword arguments for TrainingArguments (and TRL's SFTConfig/DPOConfig, which extend it)."""
    world = ctx.world_size
    report = reporters(ctx, st)
    bf16 = st.precision == "bf16" and on_gpu()  # CPUs (tests, local runs) train in fp32
    # ranks of one sequence-parallel group read the same batch: DeepSpeed's batch counts data-parallel ranks
    ds = ds_config.render(cfg.deepspeed, st, tokens.data_parallel(st, world))
    ds["bf16"]["enabled"] = bf16
    return dict(
        output_dir=str(ctx.stage_dir / "checkpoints"),
        per_device_train_batch_size=st.micro_batch_size,
        gradient_accumulation_steps=tokens.accumulation(st, world),
        learning_rate=st.lr, warmup_steps=st.warmup_steps, lr_scheduler_type="cosine", max_steps=st.max_steps,
        logging_steps=st.log_every_steps, save_steps=st.save_every_steps, save_total_limit=st.keep_checkpoints,
        save_strategy="steps", bf16=bf16, seed=cfg.seed, data_seed=cfg.seed,
        **{_checkpointing_arg(): st.gradient_checkpointing}, deepspeed=ds,
        report_to=report, disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, use_cpu=False,
        # Liger's kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU); GPUs only, refused on CPU at plan
        # time; needs liger-kernel in the container
        **(dict(use_liger_kernel=True) if st.liger_kernel else {}),
        **_sequence_parallel(st),
        # held-out loss during training: the Trainer's own evaluation loop on the stage's eval split
        **(dict(eval_strategy="steps", eval_steps=st.eval_every_steps, per_device_eval_batch_size=st.micro_batch_size)
           if getattr(st, "eval_every_steps", None) else {}),
    )


def _sequence_parallel(st) -> dict:
    """Ulysses sequence parallelism (DeepSpeed ALST) through accelerate's ParallelismConfig, which the Trainer
    and TRL's SFTTrainer wire up (ZeRO-3; the sequence split across sp_size ranks, attention all-to-all by heads)."""
    n = tokens.sequence_parallel(st)
    if n == 1:
        return {}
    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    handler = DeepSpeedSequenceParallelConfig(
        sp_seq_length=st.seq_len, sp_seq_length_is_variable=True,  # packed/padded rows are at most seq_len
        sp_attn_implementation=str(st.attn_implementation))
    # each row is split into n equal chunks, so rows are padded to a multiple of n (SFTConfig's collator); packed
    # rows, and any row on CPU, to seq_len: the group gathers its ranks' batches, and gloo only gathers equal shapes
    pad = st.seq_len if st.packing or not on_gpu() else n
    return dict(parallelism_config=ParallelismConfig(sp_backend="deepspeed", sp_size=n, sp_handler=handler),
                pad_to_multiple_of=pad)


def _checkpointing_arg() -> str:
    """transformers 5.24 renamed the field (the old name warns once per rank; TRL's configs default it)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def latest_checkpoint(ctx) -> Optional[str]:
    """The newest whole checkpoint: the Trainer writes trainer_state.json last, so a save cut short (Ctrl-C, a
    kill mid-write) has none and is skipped; the next save of that step writes over it."""
    d = ctx.stage_dir / "checkpoints"
    for p in sorted(d.glob("checkpoint-[0-9]*"), key=lambda p: -int(p.name.split("-")[1])) if d.is_dir() else []:
        if (p / "trainer_state.json").is_file():
            return str(p)
        ctx.log(f"skipping {p.name}: an interrupted save (no trainer_state.json)")
    return None


SAVE, STOP = 1, 2  # a step end's decision, ordered for rank.agree (MAX): stopping saves too


def metrics_callback(cfg, ctx, st: TrainStage, tokens_per_step: int):
    """Logs loss, lr, grad norm, tokens/s per device, MFU and peak memory; stops at a safe point on
    Slurm's pre-timeout signal (with a checkpoint), all ranks at the same step (agree)."""
    import torch
    from transformers import TrainerCallback

    from dfm_hpc.job.rank import agree

    peak = estimates.pick_peak_tflops(torch.cuda.get_device_name() if torch.cuda.is_available() else None)

    class Callback(TrainerCallback):
        def __init__(self):
            self.t = self.saved = self.start = time.time()
            self.first_step = None  # the step this start began at (a resumed run's ETA counts from it)
            self.decile, self.shown = -1, 0.0
            self.step = None
            self.preempted = False
            self.done = False
            self.shape = None  # the loaded model's own (on_train_begin), for MFU

        def on_train_begin(self, args, state, control, model=None, **kw):
            config = getattr(model, "config", None)  # a PEFT model answers with its base's
            self.shape = model_shape.from_config(config.to_dict(), "the loaded model's config") if config else \
                model_shape.Unknown("the Trainer passed no model")
            if not self.shape and ctx.is_main:
                ctx.log(f"MFU not logged: shape unknown: {self.shape.reason}")

        def on_step_end(self, args, state, control, **kw):
            # the ranks agree (MAX over them): a save is collective, so a rank that saved or stopped a
            # step before the others would hang them until the NCCL timeout
            minutes = st.save_every_minutes
            due = minutes is not None and time.time() - self.saved >= 60 * minutes
            decision = agree(STOP if ctx.should_stop(f"step {state.global_step}") else SAVE if due else 0, args.device)
            if decision == STOP:
                control.should_save = True
                control.should_training_stop = True
                self.preempted = True
            elif decision == SAVE:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kw):
            self.saved = time.time()
            if ctx.is_main:
                ctx.log(f"checkpoint at step {state.global_step}: {args.output_dir}/checkpoint-{state.global_step}")

        def on_train_end(self, args, state, control, **kw):
            self.done = True  # an eval_loss logged after this is fit()'s final evaluation

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "eval_loss" in logs and "loss" not in logs:  # eval_every_steps: same file, same step
                if self.done:
                    return  # fit()'s evaluation after training: the summary's eval_loss
                loss = held_out.loss(logs["eval_loss"])
                row = {"step": state.global_step, "eval_loss": loss}
                if loss is None:
                    row["eval_note"] = held_out.MASKED
                if ctx.is_main:
                    with open(ctx.stage_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                said = f"eval_loss {loss:.4f} (held out)" if loss is not None else row["eval_note"]
                ctx.log(f"step {state.global_step}/{args.max_steps}: {said}")
                return
            if not logs or "loss" not in logs:
                return
            now, step = time.time(), state.global_step
            steps = step - (self.step if self.step is not None else step - args.logging_steps)
            if self.first_step is None:
                self.first_step = step - steps
            per_step = (now - self.start) / max(step - self.first_step, 1)
            # the console/log line at a sensible interval: first, last, each 20 % of the run, and at
            # least every 10 minutes (metrics.jsonl and TensorBoard get every logged step)
            decile = 5 * step // max(args.max_steps, 1)
            show = step in (self.first_step + steps, args.max_steps) or decile > self.decile or now - self.shown > 600
            self.decile = max(self.decile, decile)
            eta = predict.duration(per_step * max(args.max_steps - step, 0))
            tps = tokens_per_step * steps / max(now - self.t, 1e-9) / ctx.world_size
            self.t, self.step = now, step
            row = {"step": step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                   "grad_norm": logs.get("grad_norm"), "tokens_per_s_per_device": round(tps, 1),
                   # MFU against a GPU's peak; none on CPU (tests, local runs) or without a shape
                   "mfu": round(estimates.model_mfu(tps, self.shape, st.seq_len, peak), 5)
                   if torch.cuda.is_available() and self.shape else None,
                   "peak_memory_gb": _peak_memory_gb()}
            if ctx.is_main:
                with open(ctx.stage_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "?" if torch.cuda.is_available() else "n/a (CPU)"
            if not show:
                return
            self.shown = now
            ctx.log(f"step {step}/{args.max_steps}: loss {row['loss']:.4f} lr {row['lr'] or 0:.2e} "
                    f"grad_norm {row['grad_norm'] or 0:.3f} {tps:,.0f} tokens/s/device MFU {mfu} "
                    f"peak {row['peak_memory_gb']} GB, ETA {eta}")

    return Callback()


def _peak_memory_gb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # host RSS (KB -> GB)


PROBE_TEXT = "Hvad kommer efter tre? Efter tre kommer fire."


def probe(trainer, tokenizer, ctx) -> None:
    """The trained model's logits on a fixed text, saved as probe.pt: the reference a reloaded model
    (or adapter) must reproduce. Every rank runs the forward pass (ZeRO-3 gathers the weights)."""
    import torch

    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"].to(trainer.args.device)
    model = trainer.model_wrapped
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().cpu()
    if ctx.is_main:
        torch.save({"input_ids": ids.cpu(), "logits": logits}, ctx.stage_dir / "probe.pt")


def finish(trainer, ctx, callback, title: str, extra: Optional[dict] = None, tokenizer=None) -> None:
    """After train(): stop here on preemption (rank.Preempted), else save the model, curve, summary."""
    import torch
    import torch.distributed as dist

    from dfm_hpc.job.rank import Preempted

    if callback.preempted:
        raise Preempted(f"checkpoint saved at step {trainer.state.global_step}")
    if tokenizer is not None:
        probe(trainer, tokenizer, ctx)
    trainer.save_model(str(ctx.stage_dir / "model"))
    if ctx.is_main:
        curves.plot_loss(ctx.stage_dir, title)
        rows = curves.history(ctx.stage_dir)
        train_rows = [r for r in rows if "loss" in r]
        summary = {"steps": trainer.state.global_step, "final_loss": train_rows[-1]["loss"] if train_rows else None,
                   "first_loss": train_rows[0]["loss"] if train_rows else None,
                   "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",  # for the card
                   "eval_during_training": [{"step": r["step"], "eval_loss": r["eval_loss"]}
                                            for r in rows if r.get("eval_loss") is not None], **(extra or {})}
        (ctx.stage_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if dist.is_initialized():
        dist.barrier()


def fit(trainer, ctx, callback, tokenizer, title: str, eval_keys=("eval_loss",), after_train=None,
        base: Optional[str] = None, st=None, no_eval: str = "the held-out split is empty") -> None:
    """Train (from the latest checkpoint, if any), evaluate, then save model, probe, curve and
    summary; on preemption stop after the checkpoint (rank.Preempted). `base`: the model an adapter
    was trained on (recorded in its config); `st.merge_adapter`: also export base + adapter merged.
    `no_eval`: why there is no held-out set, when there is none. Always leaves torch.distributed."""
    resume = latest_checkpoint(ctx)
    if resume:
        ctx.log(f"resuming from {resume}")
    if os.environ.get("DFM_HPC_VERBOSE") != "1":  # the Trainer prints each step's raw log dict; ours says it
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    if ctx.is_main:
        n = len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else "?"
        ev = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
        source = getattr(tokenizer, "dfm_template_source", None)  # sft/dpo: which chat template renders the chats
        template = {"own": "; the tokenizer's own chat template", None: ""}.get(source, f"; chat template: {source}")
        ctx.log(f"data: {n} training examples, {ev} held out; {trainer.args.max_steps} steps{template}")
    try:
        trainer.train(resume_from_checkpoint=resume)
        if after_train:
            after_train()
        extra = {}
        if not callback.preempted:
            extra = held_out.results(trainer, eval_keys, no_eval)
            ctx.log("eval: " + (extra["eval_note"] if "eval_note" in extra else
                                ", ".join(f"{k} {v:.4f}" for k, v in extra.items())))
        finish(trainer, ctx, callback, title, extra, tokenizer)
        if ctx.is_main:
            tokenizer.save_pretrained(str(ctx.stage_dir / "model"))
            if base:
                record_adapter_base(ctx.stage_dir / "model", base)
            if st is not None and getattr(st, "merge_adapter", False):
                export_merged(ctx, st, tokenizer)
    finally:
        teardown()


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()  # without it, gloo may abort the process at exit


def peft_config(cfg):
    if cfg.peft.method == "none":
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.peft.r, lora_alpha=cfg.peft.alpha, lora_dropout=cfg.peft.dropout,
                      target_modules=list(cfg.peft.target_modules), task_type="CAUSAL_LM")


def load_base(cfg, ctx, st: TrainStage, stage: str, before_model=None):
    """(model, tokenizer, where the model came from). The model to fine-tune: `init_from` (a run dir: its sft
    or cpt model), else the model an earlier stage of this run made (dpo after sft, sft after cpt), else
    `model.name_or_path`.
    QLoRA loads the base in 4 bits (bitsandbytes; on MI250X only if the container's build supports it)."""
    from transformers import AutoTokenizer

    path = model_path(cfg, ctx)
    before = list(cfg.stages)[: list(cfg.stages).index(stage)] if stage in cfg.stages else []
    init = st.init_from or (str(ctx.run_dir) if {"sft", "cpt"} & set(before) else None)
    if init:
        for prev in ("sft", "cpt"):
            cand = stage_dir(Path(init), prev) / "model"
            if cand.is_dir():
                path = str(cand)
                break
    tokenizer = AutoTokenizer.from_pretrained(path)
    if stage in ("sft", "dpo"):  # a base tokenizer may have no template, or none that marks turns
        from dfm_hpc.job import chat_template

        chat_template.ensure(tokenizer, cfg.model.chat_template, log=ctx.log if ctx.is_main else lambda _: None,
                             date=chat_template.run_date(ctx.run_dir))
    if before_model is not None:  # sft/dpo render their chats here: a template that cannot split stops before the load
        before_model(tokenizer)
    if cfg.peft.method == "qlora":
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        from dfm_hpc.job.device import torch_device

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        # bitsandbytes loads onto the current device (GPU 0 for every rank) unless told this rank's
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=q,
                                                     device_map={"": torch_device()})
        return model, tokenizer, path
    return load_model_or_adapter(path, st), tokenizer, path
