"""Writes docs/config.md from dfm_hpc/schema.py (types, defaults, the comment on each field).

    python docs/gen_config.py > docs/config.md      (a test checks the file is current)
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import typing

from dfm_hpc import schema

INTRO = """# Config reference

Every key dfm_hpc reads, generated from `dfm_hpc/schema.py` by `python docs/gen_config.py`.
Set any of them on the command line (`sft.lr=1e-4`), in an experiment (`conf/experiment/*.yaml`)
or pick a group option (`cluster=lumi`, `model=mistral_7b`). A misspelled key or a value of the
wrong type is refused on the login node with a suggestion (exit 2).

| group | options (conf/&lt;group&gt;/) |
|---|---|
{groups}

Stage keys (`demo.*`, `sft.*`, ...) share the resources of `StageConfig`: `nodes`, `time`,
`partition`, `tasks_per_node`, `gpus_per_node`, `cpus_per_task` (unset = the cluster profile's).
"""


def _comments(cls) -> dict:
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^#]*?(?:#\s*(.*))?$", line)
        if m and m.group(2):
            out[m.group(1)] = m.group(2).strip()
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            out = {**_comments(base), **out}
    return out


def _type(tp) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # a schema.Choice: its allowed values
        return " \\| ".join(f"`{m.value}`" for m in tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and isinstance(args[0], type) and issubclass(args[0], enum.Enum):
        return "list of " + _type(args[0])
    if isinstance(tp, type):
        return tp.__name__
    return re.sub(r"typing\.|<class '(\w+)'>", lambda m: m.group(1) or "", str(tp)).replace("NoneType", "None")


def _plain(value):
    """Enum members as their values, so a default reads as what one would type."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(_plain(f.default))
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(see below)" if dataclasses.is_dataclass(value) else repr(_plain(value))
    return "required"


def section(cls, prefix: str, lines: list) -> None:
    hints, notes = typing.get_type_hints(cls), _comments(cls)
    nested = []
    lines += [f"\n## `{prefix.rstrip('.') or '(top level)'}` ({cls.__name__})\n",
              "| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((tp, prefix + f.name + "."))
        note = notes.get(f.name, "").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
        lines.append(f"| `{prefix}{f.name}` | {_type(tp)} | `{_default(f)}` | {note} |")
    for tp, pre in nested:
        section(tp, pre, lines)


def main() -> str:
    from dfm_hpc.login.validate import groups

    rows = "\n".join(f"| `{g}` | {', '.join(opts)} |" for g, opts in sorted(groups().items()))
    lines = [INTRO.format(groups=rows)]
    section(schema.Config, "", lines)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(main(), end="")
