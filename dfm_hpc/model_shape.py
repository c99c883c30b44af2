"""A model's shape (layers, widths, heads, vocabulary) read from the model's own config.json: the one home of what
the FLOPs, parameter, memory and MFU estimates (estimates.py) need. No copy of it lives in conf/.

Standard library only: the login node reads config.json at plan time (`of(cfg)`), a rank passes its loaded
model's config to `from_config`. `find` looks, in order:

  tiny:<family>   dfm_hpc/tiny/configs/<family>.json, the file the tiny builder builds the model from
  a local path    its config.json
  a hub id        the jobs' HF cache (jobenv.snapshot: models--ORG--NAME/snapshots/<refs/main>/config.json),
                  else a verbatim copy shipped in dfm_hpc/model_configs/ (the shipped experiments' bases)

and otherwise says why the shape is unknown: an estimate is then unknown too, never a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

from dfm_hpc import jobenv, sources

PACKAGE = Path(__file__).resolve().parent
TINY_CONFIGS = PACKAGE / "tiny" / "configs"  # tiny/models.py builds from these files too
BUNDLED = PACKAGE / "model_configs"  # <org>--<name>/config.json, sources in its README.md
# Hub models without a bundled config.json whose shape is a bundled one's: continual pretraining keeps the shape
# (munin-7b-alpha's model card: base_model mistralai/Mistral-7B-v0.1, 7.24B parameters)
SAME_SHAPE = {"danish-foundation-models/munin-7b-alpha": "mistralai/Mistral-7B-v0.1"}


@dataclass(frozen=True)
class Unknown:
    """No shape, and why (said where the estimate would be)."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Shape:
    """What the estimates count of a dense decoder (Llama, Mistral, Qwen2 ...), in config.json's terms."""

    model_type: str
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads (grouped-query attention; = heads without it)
    head_dim: int  # head_dim, else hidden / heads
    intermediate: int  # intermediate_size (the MLP's width)
    vocab: int  # vocab_size
    tied: bool  # tie_word_embeddings: the output head is the input embedding
    max_positions: Optional[int]  # max_position_embeddings
    sliding_window: Optional[int]  # attention window, if any (the estimates count full attention: see performance.md)
    source: str  # the config.json it was read from

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


_NEEDED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")


def from_config(config: dict, source: str) -> Union[Shape, Unknown]:
    """The shape in a config.json dict (or a loaded model's config.to_dict()); Unknown when the estimates cannot
    count it (not a decoder with these fields, or a mixture of experts)."""
    kind = config.get("model_type") or "?"
    missing = [k for k in _NEEDED if config.get(k) is None]
    if missing:
        return Unknown(f"{source} has no {', '.join(missing)} (model_type {kind}); the estimates count "
                       "Llama-style decoders")
    if config.get("num_local_experts") or config.get("num_experts"):
        return Unknown(f"{source} is a mixture of experts (model_type {kind}); the estimates count dense decoders")
    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    return Shape(model_type=str(kind), layers=int(config["num_hidden_layers"]), hidden=hidden, heads=heads,
                 kv_heads=int(config.get("num_key_value_heads") or heads),
                 head_dim=int(config.get("head_dim") or hidden // heads),
                 intermediate=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
                 # transformers' default: save_pretrained leaves the key out only when it is true
                 tied=bool(config.get("tie_word_embeddings", True)),
                 max_positions=config.get("max_position_embeddings"), sliding_window=window, source=source)


def read(path: Path) -> Union[Shape, Unknown]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return Unknown(f"{path} is unreadable ({type(e).__name__}: {e})")
    return from_config(config, str(path)) if isinstance(config, dict) else Unknown(f"{path} is not a JSON object")


def tiny_config(family: str) -> dict:
    """The config.json of tiny:<family>, as the tiny builder builds the model (tiny/models.py)."""
    return json.loads((TINY_CONFIGS / f"{family}.json").read_text())


def find(name_or_path: str, hub: Path, revision: Optional[str] = None) -> Union[Shape, Unknown]:
    """The shape of a model named as model.name_or_path is (tiny:NAME, a local path or a hub id); `hub`: the hub
    cache the jobs read (jobenv.cache_dirs)."""
    name = str(name_or_path)
    kind = sources.kind(name)
    if kind == sources.TINY:
        path = TINY_CONFIGS / f"{name.removeprefix('tiny:')}.json"
        known = ", ".join(f"tiny:{p.stem}" for p in sorted(TINY_CONFIGS.glob("*.json")))
        return read(path) if path.is_file() else Unknown(f"{name} has no config (tiny models with one: {known})")
    if kind == sources.LOCAL:
        path = Path(name).expanduser() / "config.json"
        return read(path) if path.is_file() else Unknown(f"no config.json in {name}")
    if kind != sources.HUB:
        return Unknown(f"{name!r} is neither tiny:NAME, a local path nor a hub id")
    snap = jobenv.snapshot(hub, name, revision)
    if snap is not None:
        return read(snap / "config.json")
    base = SAME_SHAPE.get(name, name)
    path = BUNDLED / base.replace("/", "--") / "config.json"
    if path.is_file():
        shape = read(path)
        return shape if base == name or not shape else replace(shape, source=f"{path} ({name}'s base)")
    return Unknown(f"prefetch {name} first: python -m dfm_hpc prefetch <the same arguments> --download "
                   f"(its config.json is not in the jobs' HF cache, {hub})")


def of(cfg) -> Union[Shape, Unknown]:
    """The shape of the model cpt, sft and dpo train (model.name_or_path), as the login node can read it."""
    return find(cfg.model.name_or_path, jobenv.cache_dirs(cfg)[0])
