"""Writes docs/config.md from dfm_hpc/schema.py (types, defaults, allowed values, the comment on each field).

    python docs/gen_config.py > docs/config.md      (a test checks the file is current)

A field's comment is either trailing on its line or a block of `#` lines right above it, never both.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import re
import textwrap
import tokenize
import typing

from dfm_hpc import schema
from dfm_hpc.login.checks.ranges import ranged_fields, words

INTRO = """# Config reference

Every key dfm_hpc reads, generated from `dfm_hpc/schema.py` by `python docs/gen_config.py`.
Set any of them on the command line (`sft.lr=1e-4`), in an experiment (`conf/experiment/*.yaml`)
or pick a group option (`cluster=lumi`, `model=mistral_7b`). A misspelled key, a value of the
wrong type, outside its allowed values or outside its range is refused on the login node with a
suggestion (exit 2).

| group | options (conf/&lt;group&gt;/) |
|---|---|
{groups}

Stage keys (`demo.*`, `sft.*`, ...) share the resources of `StageConfig`: `nodes`, `array`, `time`,
`partition`, `tasks_per_node`, `gpus_per_node`, `cpus_per_task` (unset = the cluster profile's).
"""


def _own_comments(cls) -> dict:
    """Field -> its comment in the class's own source: the trailing one, or the `#` block right above."""
    source = textwrap.dedent(inspect.getsource(cls))
    trailing, alone = {}, {}  # line -> comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (alone if not tok.line[: tok.start[1]].strip() else trailing)[tok.start[0]] = text
    out = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign):
            continue
        name = node.target.id
        after = [trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing]
        above, n = [], node.lineno - 1
        while n in alone:
            above.insert(0, alone[n])
            n -= 1
        if after and above:
            raise ValueError(f"{cls.__name__}.{name} has two comments (one above, one trailing); keep one")
        out[name] = " ".join(after or above)
    return out


def _comments(cls) -> dict:
    out = {}
    for base in reversed(cls.__mro__):  # a subclass's own comment wins; a redeclared field keeps its base's
        if dataclasses.is_dataclass(base):
            out.update({k: v for k, v in _own_comments(base).items() if v or k not in out})
    return out


def _choices(tp):
    """The Enum of a choice field (or of a list of choices), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args:
        tp = args[0]
    return tp if isinstance(tp, type) and issubclass(tp, enum.Enum) else None


def _type(tp) -> str:
    if _choices(tp):
        return "List[str]" if typing.get_origin(tp) is list else "str"
    if isinstance(tp, type):
        return tp.__name__
    text = re.sub(r"<class '([\w.]+)'>", r"\1", str(tp)).replace("NoneType", "None")
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", text)  # typing.List, dfm_hpc.schema.MixtureSource: their names


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


def _md(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def allowed(cls, name: str, tp) -> str:
    """A key's allowed values (its Enum), range (its metadata), or else what its type admits: every key says."""
    choices = _choices(tp)
    if choices:
        return " \\| ".join(f"`{m.value}`" for m in choices)
    ranges = {n: (meta, optional) for n, meta, optional in ranged_fields(cls)}
    if name in ranges:
        return _md(words(*ranges[name]))
    return _by_type(tp)


# what a type admits (every text is one printable line: checks/safety.py refuses anything else)
_ADMITS = {bool: "`true` \\| `false`", str: "one line of text", int: "an integer", float: "a number"}


def _by_type(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = typing.get_origin(tp) is typing.Union and len(args) < len(typing.get_args(tp))
    if optional:
        return _by_type(args[0]) + ", or null"
    if dataclasses.is_dataclass(tp):
        return "the keys below"
    if typing.get_origin(tp) is list:
        return "entries below" if dataclasses.is_dataclass(args[0]) else f"a list; each: {_by_type(args[0])}"
    if typing.get_origin(tp) is dict:
        return "named entries below" if dataclasses.is_dataclass(args[1]) else f"a map; each value: {_by_type(args[1])}"
    return _ADMITS.get(tp, "any")


def _entries(tp, key: str):
    """(class, prefix) of a field holding schema classes: one, a list of them, or a map of them."""
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return tp, key + "."
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], key + "[]."
    if typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], key + ".<name>."
    return None


def section(cls, prefix: str, lines: list) -> None:
    hints, notes = typing.get_type_hints(cls), _comments(cls)
    nested = []
    lines += [f"\n## `{prefix.rstrip('.') or '(top level)'}` ({cls.__name__})\n",
              "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _entries(tp, prefix + f.name):
            nested.append(_entries(tp, prefix + f.name))
        lines.append(f"| `{prefix}{f.name}` | {_type(tp)} | `{_default(f)}` | {allowed(cls, f.name, tp)} | "
                     f"{_md(notes.get(f.name, ''))} |")
    for tp, pre in nested:
        section(tp, pre, lines)


def main() -> str:
    from dfm_hpc.login.checks import groups

    rows = "\n".join(f"| `{g}` | {', '.join(opts)} |" for g, opts in sorted(groups().items()))
    lines = [INTRO.format(groups=rows)]
    section(schema.Config, "", lines)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(main(), end="")
