"""The schema meets Hydra and the run dir: registering it, typing a config dict by it, reading a run's
config.yaml (also one written by an older dfm_hpc)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dfm_hpc.rundir import CONFIG
from dfm_hpc.schema import Config

# Keys the schema no longer has that an old run's config.yaml may still hold: dropped whenever a config is
# typed (rerun, the ranks, status), because none of them changed what runs. Any other unknown key is an error
# outside lenient reading, since dropping it could.
RETIRED = {
    "data.name": "read by nothing: the data profile's name (the data keys say what is used)",
    "throughput.name": "read by nothing: the throughput table's name",
    "model.family": "read by nothing since the flat layout (commit 3ca29db)",
    "cpt.prep_shards": "cpt no longer tokenizes: the tokenize stage's own shards split that work",
    **{f"model.{key}": "the model's shape is its own config.json's (model_shape.py), not a copy in the config"
       for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
                   "max_position_embeddings")},
}


def register() -> None:
    # Group options (conf/cluster/*.yaml, ...) merge into the typed fields of Config, so their
    # keys and types are checked against these dataclasses too. A stage's keys are plain fields of
    # Config (no group: its only option would be the schema's defaults).
    ConfigStore.instance().store(name="base_config", node=Config)
    # conf/cluster/node.yaml: this machine's GPUs, found as the config is composed (config.yaml records them)
    from dfm_hpc import gpus

    OmegaConf.register_new_resolver("dfm_node", gpus.resolve, replace=True)


def retire(config: dict) -> dict:
    """`config` without the RETIRED keys (a copy where one was there)."""
    for key in RETIRED:
        group, _, leaf = key.rpartition(".")
        node = config.get(group) if group else config
        if isinstance(node, dict) and leaf in node:
            config = {**config, group: {k: v for k, v in node.items() if k != leaf}}
    return config


def typed(config: dict):
    """A resolved config dict (RETIRED keys dropped), typed and checked by the schema again (struct mode)."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), retire(config) if isinstance(config, dict) else config)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _holds(tp):
    """The schema class a field holds, and how: ('one' | 'list' | 'dict', class), else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        return "one", tp
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return _holds(args[0])
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return "list", args[0]
    if typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return "dict", args[1]
    return None


def known_keys(config, cls=Config):
    """`config` without the keys today's schema does not have (a run made by another dfm_hpc version),
    in list and map entries too; maps of plain values (cluster.env) keep every entry. For reading old
    runs (status, list); rerun stays strict, since dropping a key could change what runs."""
    if not isinstance(config, dict):
        return config
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in config.items():
        if k not in hints:
            continue
        how, sub = _holds(hints[k]) or (None, None)
        if how == "one":
            v = known_keys(v, sub)
        elif how == "list" and isinstance(v, list):
            v = [known_keys(x, sub) for x in v]
        elif how == "dict" and isinstance(v, dict):
            v = {n: known_keys(x, sub) for n, x in v.items()}
        out[k] = v
    return out


def load_config(run_dir, lenient: bool = False):
    """A run dir's config.yaml, typed by today's schema. `lenient` drops every key the schema no longer
    has (reading runs of another version: status, list, card); rerun and the ranks drop only RETIRED ones."""
    raw = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / CONFIG), resolve=False, enum_to_str=True)
    return typed(known_keys(raw) if lenient else raw)
