"""DPO stage: TRL's DPOTrainer on Danish preference pairs, starting from an SFT run's model.

`dpo.init_from` names the SFT run (its adapter is merged into the base first); `dpo.dataset` the
pairs (unset: this run's merge stage). With PEFT there is no separate reference model: the policy
with its adapter switched off is the reference (a deep copy is impossible under ZeRO-3).
`dpo.precompute_ref_log_probs` computes the reference log-probs once before training.
"""

from __future__ import annotations

from dfm_hpc import tokens
from dfm_hpc.job import data, train
from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
    import trl

    st = cfg.dpo
    train.accelerate_deepspeed_cpu_compat()
    model, tokenizer, base = train.load_base(cfg, ctx, st, "dpo")
    train_ds, eval_ds = data.split(data.load_chats(st.dataset, ctx, "dpo"))
    args = trl.DPOConfig(**train.training_args(cfg, ctx, st), max_length=st.seq_len, beta=st.beta,
                         loss_type=[st.loss_type], precompute_ref_log_probs=st.precompute_ref_log_probs)
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=tokens.step_tokens(st, "dpo"))
    trainer = trl.DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer,
                             train_dataset=train_ds, eval_dataset=eval_ds, peft_config=train.peft_config(cfg),
                             callbacks=[callback])
    train.fit(trainer, ctx, callback, tokenizer, f"DPO of {cfg.model.name} ({cfg.peft.method}, beta {st.beta})",
              eval_keys=("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"), base=base, st=st)
