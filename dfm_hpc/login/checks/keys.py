"""The command line's keys, checked before Hydra composes (`check_overrides`): unknown keys, unknown group
options, sweep syntax, each with the nearest names; and Hydra's own composition errors as one line."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Dict, List, Optional

from dfm_hpc import CONF_DIR, schema
from dfm_hpc.login import usage


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
    """Config group -> its options: what --help lists (usage.groups, the one reader of conf/'s groups)."""
    return usage.groups(CONF_DIR)


def suggest(word: str, choices: List[str]) -> str:
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
                    problems.append(f"unknown {what} {v!r}.{suggest(v, opts[key])} "
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


def _root_cause(exc: BaseException) -> BaseException:
    """The error under Hydra's wrappers. Hydra raises its ConfigCompositionException inside the handler of
    OmegaConf's error without `from` (a bad value in an experiment's YAML), so that one is its context."""
    while True:
        inner = exc.__cause__
        if inner is None and type(exc).__name__ == "ConfigCompositionException":
            inner = exc.__context__
        if inner is None:
            return exc
        exc = inner


def invalid_choice(exc: BaseException) -> Optional[tuple]:
    """(key, allowed values) when `exc` is a value outside a choice field's Enum, else None."""
    cause = _root_cause(exc)
    lines = str(cause).strip().splitlines()
    match = _INVALID_CHOICE.match(lines[0]) if lines else None
    key = getattr(cause, "full_key", None)
    return (key, match.group(2).split(", ")) if key and match else None


def explain_hydra_error(exc: BaseException) -> str:
    """A Hydra/OmegaConf composition error as one readable line."""
    cause: Optional[BaseException] = _root_cause(exc)
    text = str(cause or exc).strip().splitlines()
    main = text[0] if text else type(exc).__name__
    key = getattr(cause, "full_key", None)
    choice = _INVALID_CHOICE.match(main)
    if key and choice:  # a Choice field (schema.Choice): say it as every other problem is said
        allowed = choice.group(2).split(", ")
        return f"{key}={choice.group(1)!r}: use one of {', '.join(allowed)}.{suggest(choice.group(1), allowed)}"
    return f"{key}: {main}" if key and key not in main else main


_INVALID_CHOICE = re.compile(r"Invalid value '(.*)', expected one of \[(.*)\]")
