"""Every schema leaf is read by some code: a key nobody reads is a lie in docs/config.md.

"Read" means an access the AST shows on the key's own group: `cfg.sft.lr`, `st.lr` after `st = cfg.sft`,
`cfg[stage].lr` (any stage that has `lr`), `config["cluster"]["mem"]`, `getattr(cfg.cluster, "mem")`.
A leaf name that belongs to one group only (e.g. `ner_batch_size`) may also be read through a parameter
(`def f(st): st.ner_batch_size`). A common name (`name`, `lr`, `time`) read off anything else does not count.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from collections import defaultdict
from typing import Dict, Iterable, Set, Tuple

from helpers import REPO

ROOT_NAMES = {"cfg", "config", "conf", "raw", "plain"}  # names that hold a whole run's config
DYNAMIC = "*stage*"  # cfg[stage], cfg[job.stage]: any stage group
GETTERS = {"getattr", "_get"}  # f(obj, "key") reads obj.key
CLASS = "class:"  # a parameter annotated with a schema class: class:TrainStage


def schema_groups() -> Dict[str, type]:
    """Group path ('' = top level, 'cluster.container', 'sft') -> its dataclass."""
    from dfm_hpc.schema import Config

    out: Dict[str, type] = {"": Config}

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                key = f"{prefix}.{f.name}".lstrip(".")
                out[key] = hints[f.name]
                walk(hints[f.name], key)

    walk(Config, "")
    return out


def schema_leaves(groups: Dict[str, type]) -> Dict[str, Dict[str, str]]:
    """Group path -> {leaf: the class that declares it}."""
    out: Dict[str, Dict[str, str]] = defaultdict(dict)
    for prefix, cls in groups.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                owner = next(c for c in cls.__mro__ if f.name in getattr(c, "__annotations__", {}))
                out[prefix][f.name] = owner.__qualname__
    return out


def _parent(node: ast.AST, aliases: Dict[str, str]) -> str | None:
    """The config group an expression holds: 'sft' for cfg.sft / cfg["sft"] / st (st = cfg.sft),
    DYNAMIC for cfg[stage], '' for the whole config, None when unknown."""
    if isinstance(node, ast.Name):
        if node.id in aliases:
            return aliases[node.id]
        return "" if node.id in ROOT_NAMES else None
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in ROOT_NAMES:
            return ""
        return node.attr
    if isinstance(node, ast.Subscript):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        return DYNAMIC if _parent(node.value, aliases) == "" else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str) \
                and _parent(node.func.value, aliases) is not None:
            return key.value
    return None


def reads(source: str) -> Set[Tuple[str | None, str]]:
    """(parent group or None, leaf) for every attribute, item or getattr access in `source`."""
    tree = ast.parse(source)
    out: Set[Tuple[str | None, str]] = set()
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in scopes:
        aliases: Dict[str, str] = {}
        if not isinstance(scope, ast.Module):  # def f(st: TrainStage): st holds a TrainStage (or a subclass)
            for arg in scope.args.args + scope.args.kwonlyargs:
                ann = arg.annotation
                name = ann.attr if isinstance(ann, ast.Attribute) else ann.id if isinstance(ann, ast.Name) \
                    else ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else None
                if name:
                    aliases[arg.arg] = CLASS + name
        for node in ast.walk(scope):  # x = cfg.sft; x = cfg[stage]; cl, st = cfg.cluster, cfg[stage]
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                    and len(target.elts) == len(value.elts) else [(target, value)]
                for name, expr in pairs:
                    parent = _parent(expr, aliases) if isinstance(name, ast.Name) else None
                    if parent is not None and (parent or isinstance(expr, ast.Name)):
                        aliases[name.id] = parent
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute):
                out.add((_parent(node.value, aliases), node.attr))
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.slice.value, str):
                out.add((_parent(node.value, aliases), node.slice.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTERS \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[1].value, str):  # getattr(cl, "mem"), _get(model_cfg, "hidden_size")
                out.add((_parent(node.args[0], aliases), node.args[1].value))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.add((_parent(node.func.value, aliases), node.args[0].value))
    return out


def unread_keys(leaves: Dict[str, Dict[str, str]], sources: Iterable[str], classes=None) -> list:
    """The leaf keys no access in `sources` reads. A leaf whose name one class declares (e.g. report_to, in
    TrainStage only) may be read off any expression: the name says which field it is. `classes`: group path ->
    its dataclass, for parameters annotated with a schema class (`st: TrainStage` reads cpt, sft and dpo)."""
    from dfm_hpc.registry import STAGES

    seen: Set[Tuple[str | None, str]] = set()
    for text in sources:
        seen |= reads(text)
    owners: Dict[str, Set[str]] = defaultdict(set)
    for names in leaves.values():
        for leaf, owner in names.items():
            owners[leaf].add(owner)
    unread = []
    for parent, names in leaves.items():
        last = parent.rpartition(".")[2]
        for leaf in sorted(names):
            ok = (last, leaf) in seen or (parent in STAGES and (DYNAMIC, leaf) in seen)
            ok = ok or (len(owners[leaf]) == 1 and (None, leaf) in seen)
            ok = ok or any((CLASS + c.__name__, leaf) in seen for c in (classes or {}).get(parent, type).__mro__)
            if not ok:
                unread.append(f"{parent}.{leaf}".lstrip("."))
    return unread


def _package_sources() -> list:
    skip = {"schema.py", "schema_stages.py"}
    return [p.read_text() for p in (REPO / "dfm_hpc").rglob("*.py") if p.name not in skip]


def test_every_schema_leaf_is_read_by_some_code():
    groups = schema_groups()
    assert unread_keys(schema_leaves(groups), _package_sources(), groups) == []


def test_the_check_finds_an_unread_key():
    """It fails for a key no code reads, even where the leaf's name is common (read on other groups)."""
    from dfm_hpc.schema import DpoStage, SftStage

    leaves = {"sft": {"lr": "SftStage", "packing": "SftStage", "knob": "SftStage"}, "dpo": {"lr": "DpoStage"},
              "": {"name": "Config"}, "model": {"name": "ModelConfig"}}
    classes = {"sft": SftStage, "dpo": DpoStage}
    code = """
def f(cfg, optimizer, model):
    st = cfg.sft
    print(st.packing, optimizer.lr, model.name, cfg.dpo.lr)
"""
    assert sorted(unread_keys(leaves, [code], classes)) == ["model.name", "name", "sft.knob", "sft.lr"]
    reading_all = """
def g(cfg, stage):
    st = cfg[stage]
    return st.lr, cfg.sft.packing, getattr(cfg.sft, "knob"), cfg["name"], cfg.model.name
"""
    assert unread_keys(leaves, [code, reading_all], classes) == []
    annotated = """
def h(st: TrainStage, other):
    return st.lr, other.knob
"""  # SftStage is a TrainStage: its lr is read; knob is read off an unknown object, and sft alone has it
    assert sorted(unread_keys(leaves, [annotated], classes)) == ["model.name", "name", "sft.packing"]
