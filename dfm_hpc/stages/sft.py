"""SFT stage: TRL's SFTTrainer on Danish chats, LoRA/QLoRA (PEFT) or full fine-tuning, DeepSpeed ZeRO.

Data (`sft.dataset`): unset = this run's PII-filtered chats (`stages/pii/sft.parquet`), else its merge
stage's (`stages/merge/sft.parquet`); a run dir with those; a Parquet/JSONL file with a `messages` column;
a hub id; or `tiny:chats`.
Loss on assistant tokens only: the chats are rendered with the model's own chat template into input_ids +
assistant_masks (job/chat_template.chat_rows, exact masks from the template's renders) before the model is
loaded, so a template that cannot be split into turns stops the stage first. The adapter (or the full
model) goes to stages/sft/model/; under ZeRO-3 the weights are gathered on save, so it is complete.
"""

from __future__ import annotations

from dfm_hpc import tokens
from dfm_hpc.job import chat_store, chat_template, checkpoint_snapshot, train
from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
    import trl

    st = cfg.sft
    train.accelerate_deepspeed_cpu_compat()
    rows = {}

    def render(tokenizer):  # TRL takes input_ids + assistant_masks as they are
        rows["train"], rows["eval"] = chat_store.stage_rows(cfg, ctx, "sft", tokenizer)

    model, tokenizer, base = train.load_base(cfg, ctx, st, "sft", before_model=render)
    train_ds, eval_ds = chat_template.drop_untrained(rows["train"], rows["eval"], st.seq_len, ctx.log)
    no_eval = {"eval_strategy": "no"} if eval_ds is None else {}  # eval_every_steps with nothing to evaluate
    args = trl.SFTConfig(**{**train.training_args(cfg, ctx, st), **no_eval}, max_length=st.seq_len, packing=st.packing,
                         assistant_only_loss=False)  # the rendered assistant_masks become the labels as they are
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=tokens.step_tokens(st, "sft"))
    trainer = trl.SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=train_ds,
                             eval_dataset=eval_ds, peft_config=train.peft_config(cfg),
                             callbacks=[callback, *checkpoint_snapshot.callbacks(cfg, ctx, st, "sft", base)])
    what = f"SFT of {cfg.model.name} ({cfg.peft.method}, ZeRO-{cfg.deepspeed.stage})"
    held = rows["eval"]
    why = ("no held-out chats" if held is None or not len(held) else  # none of them trains within seq_len
           f"none of the {len(held)} held-out rows has an assistant token within sft.seq_len={st.seq_len}")
    train.fit(trainer, ctx, callback, tokenizer, what, base=base, st=st, no_eval=why)
