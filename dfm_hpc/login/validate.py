"""Login-node validation: every problem found, each with what to change.

Two passes: `check_overrides` looks at the command line before Hydra composes (unknown keys,
unknown group options, sweep syntax), `check_config` at the composed config (cross-field rules).
Both return a list of problems; the CLI prints them all and exits 2 before anything is created.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc import CONF_DIR, lumi, schema, sources
from dfm_hpc.login.ranges import check_ranges
from dfm_hpc.login.resources import check_jobs
from dfm_hpc.plan import parse_time, plan
from dfm_hpc.registry import STAGES
from dfm_hpc.registry import TRAINED_STAGES as TRAIN_STAGES
from dfm_hpc.tokens import train_tokens

# ---------------------------------------------------------------- the schema as a key index

def _schema_keys(cls=schema.Config, prefix: str = "") -> Dict[str, object]:
    """Dotted key -> type for every key of the schema (Dict-typed keys accept any sub-key)."""
    keys: Dict[str, object] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        keys[key] = tp
        if dataclasses.is_dataclass(tp):
            keys.update(_schema_keys(tp, key + "."))
    return keys


SCHEMA_KEYS = _schema_keys()


def groups() -> Dict[str, List[str]]:
    """Config group -> its options (the YAML files in conf/<group>/)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in CONF_DIR.iterdir() if d.is_dir()}


def _suggest(word: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _suggest_key(key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in SCHEMA_KEYS if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)
    if not close:  # the right leaf under another parent, e.g. `lr` -> sft.lr
        leaves = {k: k.rpartition(".")[2] for k in SCHEMA_KEYS}
        hits = set(difflib.get_close_matches(leaf, list(leaves.values()), n=3, cutoff=0.75))
        close = sorted(k for k, v in leaves.items() if v in hits)[:6]
    return f" Did you mean {' or '.join(close)}?" if close else ""


# ---------------------------------------------------------------- pass 1: the command line

def check_overrides(overrides: List[str]) -> List[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    problems: List[str] = []
    parser = OverridesParser.create()
    opts = groups()
    for text in overrides:
        try:
            (ov,) = parser.parse_overrides([text])
        except OverrideParseException as e:
            msg = str(e).splitlines()[0] if str(e) else "syntax error"
            problems.append(f"{text!r}: bad override or sweep syntax ({msg}). "
                            "Use key=value; sweeps: -m key=a,b,c or key=range(1,4) or key=choice(a,b).")
            continue
        key = ov.key_or_group
        if key.startswith("hydra.") or key == "hydra" or ov.is_delete():
            continue
        if key in opts:  # a config group: its option(s) must exist
            values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
            for v in values:
                if v not in opts[key]:
                    what = "experiment" if key == "experiment" else f"{key} option"
                    problems.append(f"unknown {what} {v!r}.{_suggest(v, opts[key])} "
                                    f"Known: {', '.join(opts[key])}.")
            if key == "experiment" and not ov.is_add():
                problems.append("select an experiment with a leading '+': +experiment=NAME")
            continue
        if key in SCHEMA_KEYS:
            continue
        parents = [key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1)]
        if any(p in SCHEMA_KEYS and typing.get_origin(SCHEMA_KEYS[p]) in (dict, Dict) for p in parents):
            continue  # maps: cluster.env.*, throughput.devices.NAME.* (OmegaConf checks typed values)
        problems.append(f"unknown config key {key!r}.{_suggest_key(key)} "
                        "(every key is listed in docs/config.md)")
    return problems


# ---------------------------------------------------------------- pass 2: the composed config


def _should_check_paths(cfg) -> bool:
    if cfg.cluster.check_paths is not None:
        return cfg.cluster.check_paths
    return cfg.cluster.system != "lumi" or lumi.on_lumi()


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_config(cfg, jobs=None) -> List[str]:
    """Every problem of a composed config. The stage list and walltimes first (the plan needs them),
    then one small checker per concern, each returning its problems. `jobs`: plan(cfg), if made."""
    problems = check_stages(cfg)
    if problems:
        return problems
    jobs = plan(cfg) if jobs is None else jobs
    for check in CHECKS:
        problems += check(cfg, jobs)
    problems += check_mixture(cfg)
    return problems


def check_stages(cfg) -> List[str]:
    out = []
    unknown = [s for s in cfg.stages if s not in STAGES]
    for s in unknown:
        out.append(f"stages: unknown stage {s!r}.{_suggest(s, list(STAGES))} Known: {', '.join(STAGES)}.")
    if not cfg.stages:
        out.append("stages: the experiment runs no stage; set stages=[...]")
    if len(set(cfg.stages)) != len(cfg.stages):
        out.append(f"stages: a stage is listed twice in {list(cfg.stages)}")
    for s in cfg.stages if not unknown else []:
        try:
            parse_time(cfg[s].time)
        except ValueError as e:
            out.append(f"{s}.time: {e}")
    return out


def check_cluster(cfg, jobs) -> List[str]:
    cl, out = cfg.cluster, []
    for key in ("mem", "mem_per_gpu"):
        try:
            lumi.parse_mem_gb(cl[key])
        except ValueError as e:
            out.append(f"cluster.{key}: {e}")
    if cl.system == "lumi" and (not cl.account or not lumi.ACCOUNT_RE.match(str(cl.account))):
        out.append(f"cluster.account={cl.account!r}: LUMI accounts are project_ + 9 digits, e.g. "
                   "cluster.account=project_465000670 (or export SBATCH_ACCOUNT)")
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
    return [p for job in jobs if job.stage == "pii" for p in _check_pii(cfg, job.world_size * job.array)]


def check_evaluate(cfg, jobs) -> List[str]:
    if "evaluate" not in cfg.stages:
        return []
    out = []
    if not cfg.data.eval_text and not set(TRAIN_STAGES) & set(cfg.stages):
        out.append("evaluate: data.eval_text is unset and this run has no cpt, sft or dpo stage whose held-out "
                   "data could stand in: give held-out Danish text (a JSONL/Parquet file with a `text` column or "
                   "a hub dataset id)")
    for m in cfg.evaluate.models:
        if m in TRAIN_STAGES and m not in cfg.stages[: cfg.stages.index("evaluate")]:
            out.append(f"evaluate.models: {m!r} is not a stage before evaluate in this run "
                       f"(stages={list(cfg.stages)}); give its run dir instead")
        elif m != "base" and m not in TRAIN_STAGES and _should_check_paths(cfg) and not Path(m).exists():
            out.append(f"evaluate.models: {m!r} is neither base, a training stage nor an existing run dir")
    return out


def check_finetune(cfg, jobs) -> List[str]:
    """DeepSpeed, PEFT and the data of sft/dpo."""
    out = []
    for job in jobs:
        if job.stage in ("sft", "dpo") and not cfg.dry_run:
            ds = cfg[job.stage].dataset
            if ds is None and "merge" not in cfg.stages:
                out.append(f"{job.stage}.dataset is unset and this run has no merge stage: give an oasst2_translate "
                           f"run dir, a .parquet/.jsonl file or a hub id, e.g. "
                           f"{job.stage}.dataset=runs/oasst2_translate/<run>")
            elif ds and _should_check_paths(cfg) and sources.looks_local(ds) and not Path(ds).expanduser().exists():
                out.append(f"{job.stage}.dataset={ds!r} does not exist")
        if job.stage in TRAIN_STAGES and cfg.peft.method == "qlora" and not job.gpus_per_node:
            out.append(f"{job.stage}: peft=qlora needs GPUs (bitsandbytes 4-bit); on CPU use peft=lora")
    if cfg.peft.method == "qlora" and cfg.deepspeed.stage == 3 and any(s in TRAIN_STAGES for s in cfg.stages):
        out.append("peft=qlora with deepspeed=zero3: 4-bit bases are not sharded by ZeRO-3; use deepspeed=zero2")
    return out


def check_inputs(cfg, jobs) -> List[str]:
    """Local inputs exist, the offline jobs' cache has what they load, the container image exists:
    only where the paths belong (on the machine the config is for)."""
    if not _should_check_paths(cfg):
        return []
    out, cl = [], cfg.cluster
    for s in cfg.stages:
        for key in STAGES[s].inputs:
            value = _get(cfg, key)
            if value and sources.looks_local(value) and not Path(value).expanduser().exists():
                out.append(f"{key}={value!r}: input of stage {s!r} does not exist (give a local path or a hub id "
                           "org/name)")
        init = cfg[s].get("init_from") if s in TRAIN_STAGES else None
        if init and not Path(init).exists():
            out.append(f"{s}.init_from={init!r}: no such run directory")
    if str(cl.env.get("HF_HUB_OFFLINE", "0")).lower() in ("1", "true") and not cfg.dry_run:
        from dfm_hpc.login import prefetch  # the jobs run offline: what they load must be in their cache

        gone = prefetch.missing(cfg)
        if gone:
            out.append(f"not in the jobs' Hugging Face cache ({prefetch.hf_home(cfg)}), and compute nodes are "
                       f"offline: {', '.join(f'{n.kind} {n.repo_id} ({n.key})' for n in gone)}. Fetch them on the "
                       "login node: python -m dfm_hpc prefetch <the same arguments> --download")
    image = cl.container.image
    if image and not Path(image).exists():
        out.append(f"cluster.container.image={image!r} does not exist")
    return out


# The checkers of a composed config, in the order their problems are printed.
CHECKS = [check_cluster, check_ranges, check_jobs, check_translate, check_pii, check_evaluate, check_finetune,
          check_inputs]
from dfm_hpc.login import guards  # noqa: E402  names, script text, secrets, rules between keys, times, data files

CHECKS += guards.CHECKS


def _check_pii(cfg, workers: int) -> List[str]:
    pii, out = cfg.pii, []
    if pii.shards < workers:
        out.append(f"pii.shards={pii.shards} for {workers} workers: use pii.shards={workers} or more")
    if pii.input is None and "merge" not in cfg.stages:
        out.append("pii.input is unset and this run has no merge stage: give a JSONL/Parquet file with a "
                   "`text` column, e.g. pii.input=/scratch/project_465000670/corpus.jsonl")
    return out


def check_mixture(cfg) -> List[str]:
    """data.mixture (docs/training.md#mixtures): each source a weight > 0 or a token budget > 0,
    epochs > 0, a source that exists (local) or is a hub id / tiny:*; budgets within what the
    training consumes; tokenize before cpt. Budgets against a source's size: when cpt starts."""
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
        k = sources.kind(m.source)
        if k is None:
            out.append(f"{key}.source={m.source!r}: neither tiny:NAME, a local path nor a hub id org/name")
        elif k == sources.LOCAL and _should_check_paths(cfg) and not Path(m.source).expanduser().exists():
            out.append(f"{key}.source={m.source!r} does not exist")
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


def explain_hydra_error(exc: BaseException) -> str:
    """A Hydra/OmegaConf composition error as one readable line."""
    cause: Optional[BaseException] = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause or exc).strip().splitlines()
    main = text[0] if text else type(exc).__name__
    key = getattr(cause, "full_key", None)
    choice = _INVALID_CHOICE.match(main)
    if key and choice:  # a Choice field (schema.Choice): say it as every other problem is said
        allowed = choice.group(2).split(", ")
        return f"{key}={choice.group(1)!r}: use one of {', '.join(allowed)}.{_suggest(choice.group(1), allowed)}"
    return f"{key}: {main}" if key and key not in main else main


_INVALID_CHOICE = re.compile(r"Invalid value '(.*)', expected one of \[(.*)\]")
