"""The stage list (known stages, each once, walltimes that parse or are auto: the plan needs them), walltimes
within a partition's limit off LUMI (cluster.max_time; LUMI's: resources.py), and the rules between a stage's
keys: shards for the workers, the data a stage falls back on, the models evaluate scores, PEFT and DeepSpeed,
warmup, the merge's length ratios, data.mixture and tokenize.chats."""

from __future__ import annotations

from pathlib import Path
from typing import List

from dfm_hpc import model_shape, sources
from dfm_hpc.login.checks.keys import suggest
from dfm_hpc.login.checks.paths import should_check_paths
from dfm_hpc.plan import AUTO, max_minutes, parse_time
from dfm_hpc.registry import STAGES, TRAINED_STAGES
from dfm_hpc.tokens import train_tokens


def check_stages(cfg) -> List[str]:
    out = []
    unknown = [s for s in cfg.stages if s not in STAGES]
    for s in unknown:
        out.append(f"stages: unknown stage {s!r}.{suggest(s, list(STAGES))} Known: {', '.join(STAGES)}.")
    if not cfg.stages:
        out.append("stages: the experiment runs no stage; set stages=[...]")
    if len(set(cfg.stages)) != len(cfg.stages):
        out.append(f"stages: a stage is listed twice in {list(cfg.stages)}")
    for s in cfg.stages if not unknown else []:
        for key in ("time", "fallback_time"):  # time=auto: sized to the prediction (plan.py)
            if key == "time" and str(cfg[s].time).strip() == AUTO:
                continue
            try:
                parse_time(cfg[s][key])
            except ValueError as e:
                out.append(f"{s}.{key}: {e}" + (" (or auto: sized to the prediction)" if key == "time" else ""))
        if cfg[s].get("eval_checkpoints"):  # the plan reads it too (the checkpoint evaluations' jobs)
            try:
                parse_time(cfg[s].eval_checkpoints_time)
            except ValueError as e:
                out.append(f"{s}.eval_checkpoints_time: {e}")
    if cfg.cluster.get("max_time") is not None:
        try:
            parse_time(cfg.cluster.max_time)
        except ValueError as e:
            out.append(f"cluster.max_time: {e}")
    return out


def check_walltimes(cfg, jobs) -> List[str]:
    """A walltime given past cluster.max_time, and more nodes than cluster.max_nodes, off LUMI (LUMI's partitions:
    resources.py); a CPU stage's own place (cluster.cpu_only) may have its own. time=auto stays within the limit."""
    out = []
    for j in (j for j in jobs if j.cluster is not None and j.cluster.system != "lumi"):
        cap, where = max_minutes(j), j.partition or "the default partition"
        if cap and j.minutes > cap:
            out.append(f"{j.stage}.time={j.minutes // 60}:{j.minutes % 60:02d}:00: over cluster.max_time="
                       f"{j.cluster.max_time} of {where}; lower it, or time=auto")
        most = j.cluster.get("max_nodes")
        if most and j.nodes > most:
            out.append(f"{j.stage}.nodes={j.nodes}: {where} has {most} node{'s' * (most != 1)} (cluster.max_nodes), "
                       f"so the job would pend forever; use {j.stage}.nodes={most} or fewer (more array tasks "
                       "where the stage shards)")
    return out


def check_translate(cfg, jobs) -> List[str]:
    out = []
    for job in (j for j in jobs if j.stage == "translate"):
        workers = job.world_size * job.array
        if cfg.translate.shards < workers:
            out.append(f"translate.shards={cfg.translate.shards} for {workers} workers: "
                       f"{workers - cfg.translate.shards} would sit idle; use translate.shards={workers} or more")
    return out


def check_pii(cfg, jobs) -> List[str]:
    out, pii = [], cfg.pii
    for job in (j for j in jobs if j.stage == "pii"):
        workers = job.world_size * job.array
        if pii.shards < workers:
            out.append(f"pii.shards={pii.shards} for {workers} workers: use pii.shards={workers} or more")
        if pii.input is None and "merge" not in cfg.stages:
            out.append("pii.input is unset and this run has no merge stage: give a JSONL/Parquet file with a "
                       "`text` column, e.g. pii.input=/scratch/project_465000670/corpus.jsonl")
    return out


def check_evaluate(cfg, jobs) -> List[str]:
    if "evaluate" not in cfg.stages:
        return []
    out = []
    if not cfg.data.eval_text and not set(TRAINED_STAGES) & set(cfg.stages):
        out.append("evaluate: data.eval_text is unset and this run has no cpt, sft or dpo stage whose held-out "
                   "data could stand in: give held-out Danish text (a JSONL/Parquet file with a `text` column or "
                   "a hub dataset id)")
    for m in cfg.evaluate.models:
        if m in TRAINED_STAGES and m not in cfg.stages[: cfg.stages.index("evaluate")]:
            out.append(f"evaluate.models: {m!r} is not a stage before evaluate in this run "
                       f"(stages={list(cfg.stages)}); give its run dir instead")
        elif m != "base" and m not in TRAINED_STAGES and should_check_paths(cfg) and not Path(m).exists():
            out.append(f"evaluate.models: {m!r} is neither base, a training stage nor an existing run dir")
    return out


def check_finetune(cfg, jobs) -> List[str]:
    """DeepSpeed, PEFT and the data of sft/dpo (whether a dataset exists: paths.py)."""
    out = []
    for job in jobs:
        if job.stage in ("sft", "dpo") and not cfg.dry_run and cfg[job.stage].dataset is None \
                and "merge" not in cfg.stages:
            out.append(f"{job.stage}.dataset is unset and this run has no merge stage: give an oasst2_translate "
                       f"run dir, a .parquet/.jsonl file or a hub id, e.g. "
                       f"{job.stage}.dataset=runs/oasst2_translate/<run>")
        if job.stage in TRAINED_STAGES and cfg.peft.method == "qlora" and not job.gpus_per_node:
            out.append(f"{job.stage}: peft=qlora needs GPUs (bitsandbytes 4-bit); on CPU use peft=lora")
    if cfg.peft.method == "qlora" and cfg.deepspeed.stage == 3 and any(s in TRAINED_STAGES for s in cfg.stages):
        out.append("peft=qlora with deepspeed=zero3: 4-bit bases are not sharded by ZeRO-3; use deepspeed=zero2")
    return out


def check_context(cfg, jobs) -> List[str]:
    """A training sequence fits the model's positions (max_position_embeddings in its own config.json); a model
    whose shape is unknown is not checked here (the plan says so)."""
    trained = [s for s in cfg.stages if s in TRAINED_STAGES]
    shape = model_shape.of(cfg) if trained else None
    if not shape or not shape.max_positions:
        return []
    return [f"{s}.seq_len={cfg[s].seq_len}: longer than the {shape.max_positions:,} positions the model has "
            f"(max_position_embeddings in {shape.source}); use {s}.seq_len={shape.max_positions} or less"
            for s in trained if cfg[s].seq_len > shape.max_positions]


def check_relations(cfg, jobs) -> List[str]:
    """Rules between keys (each key's own range is schema metadata: ranges.py; a job's: resources.py)."""
    out: List[str] = []
    trained = [s for s in cfg.stages if s in TRAINED_STAGES]
    for s in trained:
        st = cfg[s]
        if not 0 <= st.warmup_steps <= max(st.max_steps, 0):
            out.append(f"{s}.warmup_steps={st.warmup_steps}: 0 to max_steps ({st.max_steps})")
        if s in ("sft", "dpo") and st.merge_adapter and cfg.peft.method == "none":
            out.append(f"{s}.merge_adapter=true with peft=none: there is no adapter to merge; use peft=lora or drop it")
    if trained and cfg.deepspeed.offload_params and cfg.deepspeed.stage != 3:
        out.append(f"deepspeed.offload_params=true needs ZeRO-3 (deepspeed.stage={cfg.deepspeed.stage}); use "
                   "deepspeed=zero3, or offload_optimizer only")
    m = cfg.merge
    if "merge" in cfg.stages and not 0 <= m.min_length_ratio < m.max_length_ratio:
        out.append(f"merge.min_length_ratio={m.min_length_ratio}: from 0 up to merge.max_length_ratio "
                   f"({m.max_length_ratio})")
    return out


def check_mixture(cfg, jobs) -> List[str]:
    """data.mixture (docs/training.md#mixtures): each source a weight > 0 or a token budget > 0,
    epochs > 0, a tiny:*, local or hub source (whether a local one exists: paths.py); budgets within what
    the training consumes; tokenize before cpt. Budgets against a source's size: when cpt starts."""
    out: List[str] = []
    if "tokenize" in cfg.stages and "cpt" in cfg.stages and cfg.stages.index("tokenize") > cfg.stages.index("cpt"):
        out.append("stages: tokenize must come before cpt (cpt reads its token stores)")
    mix = cfg.data.mixture
    if not mix or not {"cpt", "tokenize"} & set(cfg.stages):
        return out
    st = cfg.cpt
    need = train_tokens(st, "cpt")
    names = [m.name or m.source for m in mix]
    for i, m in enumerate(mix):
        key = f"data.mixture[{i}]"
        if (m.weight is None) == (m.tokens is None):
            out.append(f"{key} ({m.source!r}): give exactly one of weight (a share) or tokens (a budget)")
        if m.tokens is not None and not m.tokens >= st.seq_len:
            out.append(f"{key}.tokens={m.tokens}: a budget is at least one block (cpt.seq_len={st.seq_len} tokens)")
        if sources.kind(m.source) is None:
            out.append(f"{key}.source={m.source!r}: neither tiny:NAME, a local path nor a hub id org/name")
    if len(set(names)) != len(names):
        out.append(f"data.mixture: two sources share a name ({names}); give each a distinct name")
    budgets = sum(m.tokens for m in mix if m.tokens)
    weighted = any(m.tokens is None for m in mix)
    if weighted and budgets > need:  # tokens.allocate: budgets first, the weights split the rest
        out.append(f"data.mixture: the token budgets ({budgets:,}) exceed what cpt trains on ({need:,} = max_steps x "
                   "global_batch_size x seq_len), leaving nothing for the weighted sources")
    if not weighted and budgets < need:
        out.append(f"data.mixture: the token budgets ({budgets:,}) are less than what cpt trains on ({need:,}); "
                   "raise a budget, give a source a weight for the rest, or lower cpt.max_steps")
    return out


def check_chats(cfg, jobs) -> List[str]:
    """tokenize.chats (docs/training.md#pretokenized-chats) renders the run's sft/dpo chats: with neither stage
    it does nothing, a mistake. tokenize comes before the stages that read its chat stores and after the pii/merge
    stage whose chats it renders. sft/dpo with chats and no tokenize stage is fine: they read the store another
    run made (stores are shared by key) or, with none, render on the fly and log why."""
    if not cfg.tokenize.chats:
        return []
    stages = list(cfg.stages)
    readers = [s for s in ("sft", "dpo") if s in stages]
    if not readers:
        return [f"tokenize.chats=true pretokenizes the sft and dpo chats, but stages={stages} has neither: add sft "
                "or dpo, or drop tokenize.chats"]
    if "tokenize" not in stages:
        return []
    at = stages.index("tokenize")
    out = []
    early = [s for s in readers if stages.index(s) < at]
    if early:
        out.append(f"stages: tokenize must come before {' and '.join(early)} (with tokenize.chats they read its "
                   "chat stores)")
    own = [s for s in readers if cfg[s].dataset is None]  # this run's pii/merge view
    late = [s for s in ("merge", "pii") if s in stages and stages.index(s) > at]
    if own and late:
        out.append(f"stages: tokenize must come after {' and '.join(late)} ({' and '.join(own)}.dataset is unset: "
                   "tokenize.chats renders the chats those stages write)")
    return out


def check_eval_checkpoints(cfg, jobs) -> List[str]:
    """A training stage's checkpoint evaluations: their jobs' walltime. (A run whose only save is the last, e.g. a
    trial with fewer max_steps, is not refused: the plan says it gets no curve.)"""
    from dfm_hpc.login.checks.resources import _walltime

    out = []
    for job in (j for j in jobs if j.eval_checkpoints):
        st, key = cfg[job.stage], f"{job.stage}.eval_checkpoints_time"
        why = _walltime(st.eval_checkpoints_time)
        if why:
            out.append(f"{key}={st.eval_checkpoints_time!r}: {why}; e.g. {key}=00:30:00")
    return out
