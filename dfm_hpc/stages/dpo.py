"""DPO stage: TRL's DPOTrainer on Danish preference pairs, starting from an SFT run's model.

`dpo.init_from` names the SFT run (its adapter is merged into the base first); `dpo.dataset` the
pairs (unset: this run's merge stage). With PEFT there is no separate reference model: the policy
with its adapter switched off is the reference (a deep copy is impossible under ZeRO-3).
`dpo.precompute_ref_log_probs` computes the reference log-probs once before training.
The pairs are rendered with the model's chat template as sft renders chats (job/chat_template.pair_rows)
before the model is loaded; TRL gets prompt_ids/chosen_ids/rejected_ids and uses them as they are.
"""

from __future__ import annotations

from dfm_hpc import tokens
from dfm_hpc.job import chat_store, train
from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
    import trl

    st = cfg.dpo
    train.accelerate_deepspeed_cpu_compat()
    rows = {}

    def render(tokenizer):  # prompt_ids/chosen_ids/rejected_ids, rendered as sft renders
        rows["train"], rows["eval"] = chat_store.stage_rows(cfg, ctx, "dpo", tokenizer)

    model, tokenizer, base = train.load_base(cfg, ctx, st, "dpo", before_model=render)
    train_ds, eval_ds = rows["train"], rows["eval"]
    args = trl.DPOConfig(**train.training_args(cfg, ctx, st), max_length=st.seq_len, beta=st.beta,
                         loss_type=[st.loss_type], precompute_ref_log_probs=st.precompute_ref_log_probs)
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=tokens.step_tokens(st, "dpo"))
    trainer = _trainer_class(trl)(model=model, ref_model=None, args=args, processing_class=tokenizer,
                             train_dataset=train_ds, eval_dataset=eval_ds, peft_config=train.peft_config(cfg),
                             callbacks=[callback])
    train.fit(trainer, ctx, callback, tokenizer, f"DPO of {cfg.model.name} ({cfg.peft.method}, beta {st.beta})",
              eval_keys=("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"), base=base, st=st,
              no_eval=f"every held-out pair's prompt fills dpo.seq_len={st.seq_len} tokens")


def _trainer_class(trl):
    """TRL 1.16's DPOTrainer re-tokenizes every pair with apply_chat_template; rows already rendered
    (prompt_ids/chosen_ids/rejected_ids) only get its max_length filter."""

    class PreRenderedDPOTrainer(trl.DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if args.max_length is not None and args.truncation_mode == "keep_start":
                # as TRL: a prompt that fills max_length leaves no completion token to learn from
                dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
            if not len(dataset) and dataset_name == "train":  # else torch's 'num_samples=0' from the sampler
                raise ValueError(f"dpo: no train pair left: every prompt fills dpo.seq_len="
                                 f"{args.max_length} tokens (a long system prompt?); raise dpo.seq_len")
            return dataset

    return PreRenderedDPOTrainer
