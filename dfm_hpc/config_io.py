"""The schema meets Hydra and the run dir: registering it, typing a config dict by it, reading a run's
config.yaml (also one written by an older dfm_hpc)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dfm_hpc.registry import STAGES
from dfm_hpc.schema import Config


def register() -> None:
    cs = ConfigStore.instance()
    # Group options (conf/cluster/*.yaml, ...) merge into the typed fields of Config, so their
    # keys and types are checked against these dataclasses too.
    cs.store(name="base_config", node=Config)
    # Stages are groups too, with their schema defaults as option "default"; variants can be
    # added as conf/<stage>/<name>.yaml.
    for stage, spec in STAGES.items():
        cs.store(group=stage, name="default", node=spec.config)


def typed(config: dict):
    """A resolved config dict, typed and checked by the schema again (struct mode)."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), config)
    OmegaConf.set_struct(cfg, True)
    return cfg


def known_keys(config, reference=None):
    """`config` without the keys today's schema does not have (a run made by another dfm_hpc
    version). For reading old runs (status, list); rerun stays strict, since dropping a key could
    change what runs."""
    ref = OmegaConf.structured(Config) if reference is None else reference
    if not isinstance(config, dict):
        return config
    return {k: known_keys(v, ref[k]) if OmegaConf.is_dict(ref[k]) else v
            for k, v in config.items() if k in ref}


def load_config(run_dir, lenient: bool = False):
    """A run dir's config.yaml, typed by today's schema. `lenient` drops keys the schema no longer has
    (reading runs of another version: status, list, card); rerun and the ranks stay strict."""
    raw = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"), resolve=False, enum_to_str=True)
    return typed(known_keys(raw) if lenient else raw)
