"""The one checker of the schema's number ranges (schema.ranged): each value outside its field's range,
as `key=value: rule`. It checks the groups that are not stages always, a stage's group when the stage
runs, lists and maps of typed entries (data.mixture, throughput.devices) and cluster.single_device
(settings merged over the cluster profile). Rules that relate two keys are checkers of their own."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import List, Tuple

from dfm_hpc import schema
from dfm_hpc.registry import STAGES


def _num(x) -> str:
    return f"{x:g}"


def words(meta, optional: bool = False) -> str:
    """A field's range in words: positive, at least 1, from 0 up to 1, 0 to 3 ...; ', or null' if it may be unset."""
    lo = next(((k, meta[k]) for k in ("gt", "ge") if k in meta), None)
    hi = next(((k, meta[k]) for k in ("lt", "le") if k in meta), None)
    if lo and hi:
        a, b = _num(lo[1]), _num(hi[1])
        text = {("ge", "le"): f"{a} to {b}", ("ge", "lt"): f"from {a} up to {b}",
                ("gt", "lt"): f"between {a} and {b}", ("gt", "le"): f"above {a}, at most {b}"}[lo[0], hi[0]]
    elif lo:
        text = {("gt", 0): "positive", ("ge", 0): "0 or more"}.get(lo, ("above " if lo[0] == "gt" else "at least ")
                                                                  + _num(lo[1]))
    else:
        text = ("below " if hi[0] == "lt" else "at most ") + _num(hi[1])
    return text + (", or null" if optional else "")


def within(value, meta) -> bool:
    return (("gt" not in meta or value > meta["gt"]) and ("ge" not in meta or value >= meta["ge"])
            and ("lt" not in meta or value < meta["lt"]) and ("le" not in meta or value <= meta["le"]))


@functools.lru_cache(maxsize=None)
def ranged_fields(cls) -> Tuple[Tuple[str, dict, bool], ...]:
    """(name, range, may be null) of each ranged field of a schema class; a field a subclass redeclares
    with another default keeps its base's range."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = next((c.__dataclass_fields__[f.name].metadata for c in cls.__mro__
                     if f.name in getattr(c, "__dataclass_fields__", {}) and c.__dataclass_fields__[f.name].metadata),
                    None)
        if meta:
            out.append((f.name, dict(meta), type(None) in typing.get_args(hints[f.name])))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _nested(cls) -> Tuple[Tuple[str, str, type], ...]:
    """(name, how: one | list | dict, class) of each field holding schema classes."""
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            out.append((name, "one", tp))
        elif typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
            out.append((name, "list", args[0]))
        elif typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            out.append((name, "dict", args[1]))
    return tuple(out)


def _walk(cls, node, prefix: str, out: List[str], skip=()) -> None:
    for name, meta, optional in ranged_fields(cls):
        value = node.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not within(value, meta):
            out.append(f"{prefix}{name}={value}: {meta['hint'].format(rule=words(meta, optional))}")
    for name, how, sub in _nested(cls):
        value = None if name in skip else node.get(name)
        if not value:
            continue
        if how == "one":
            _walk(sub, value, f"{prefix}{name}.", out)
        elif how == "list":
            for i, item in enumerate(value):
                _walk(sub, item, f"{prefix}{name}[{i}].", out)
        else:
            for key, item in value.items():
                _walk(sub, item, f"{prefix}{name}.{key}.", out)


def check_ranges(cfg, jobs=None) -> List[str]:
    """`cfg`: the config, or its plain dict (a sweep checks each point's own values: login/sweep.py)."""
    out: List[str] = []
    idle = [s for s in STAGES if s not in cfg["stages"]]
    _walk(schema.Config, cfg, "", out, skip=idle)
    single = cfg["cluster"].get("single_device")
    if single:
        _walk(schema.ClusterConfig, single, "cluster.single_device.", out)
    return out
