"""Config values on their way into sbatch.sh and the srun line: checked, then quoted for their place.

Config text never becomes code. Every value is refused if it holds a control character (a newline
would end a `#SBATCH` line and start a command); keys must be shell identifiers (env) or Slurm option
names (sbatch_extra). `cluster.env` values are exported literally, except in the explicit form
`expand:TEXT`, where `$NAME` / `${NAME}` references (and only those) expand when the job starts.
`cluster.setup` lines are the one place meant to hold shell code (docs/security.md).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, List, Tuple

from dfm_hpc.jobenv import EXPAND, REF

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SBATCH_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")


def control_chars(text: str) -> List[str]:
    """The control characters in `text`, as escapes ('\\n', '\\x1b')."""
    return sorted({repr(c)[1:-1] for c in _CONTROL.findall(str(text))})


def check_value(where: str, value: Any) -> List[str]:
    bad = control_chars(value)
    return [f"{where}: contains control characters ({', '.join(bad)}); a value that reaches the job script "
            "must be one line of printable text"] if bad else []


def check_env_key(key: str) -> List[str]:
    if _ENV_KEY.match(str(key)):
        return []
    return [f"cluster.env key {str(key)!r} is not a shell variable name (letters, digits and _, not starting "
            "with a digit)"]


def check_sbatch_option(key: str) -> List[str]:
    if _SBATCH_OPTION.match(str(key)):
        return []
    return [f"cluster.sbatch_extra key {str(key)!r} is not an sbatch option name (lowercase letters, digits "
            "and -, e.g. mail-type)"]


def walk_strings(obj: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """(dotted key, text) for every string (and every key) in a config tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{path}.{k}" if path else str(k)
            yield key + " (the key)", str(k)
            yield from walk_strings(v, key)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def _dq(text: str) -> str:
    """Text that stays literal inside double quotes."""
    return re.sub(r'([\\"$`])', r"\\\1", text)


def quote_value(value: Any) -> str:
    """An env value as a double-quoted shell word: literal, or with `$NAME` references expanding
    (the `expand:` form). Nothing else can expand: no $(...), backticks, arithmetic or escapes."""
    text = str(value)
    bad = control_chars(text)
    if bad:
        raise ValueError(f"control characters ({', '.join(bad)}) in a value for the job script")
    if not text.startswith(EXPAND):
        return f'"{_dq(text)}"'
    text, out, pos = text[len(EXPAND):], [], 0
    for m in REF.finditer(text):
        out += [_dq(text[pos:m.start()]), m.group(0)]
        pos = m.end()
    return '"' + "".join(out + [_dq(text[pos:])]) + '"'


def export_line(key: str, value: Any) -> str:
    if check_env_key(key):
        raise ValueError(check_env_key(key)[0])
    return f"export {key}={quote_value(value)}"


def check_params(params: Any, where: str = "sbatch parameters") -> None:
    """Last line of defence before a script is rendered: no control character anywhere."""
    for key, text in walk_strings(params, where):
        if control_chars(text):
            raise ValueError(check_value(key, text)[0])


def env_lines(env) -> List[str]:
    """`export` lines for cluster.env. A secret (redact.is_secret_key) is never written: the job gets
    it from the environment sbatch runs in (Slurm's default --export=ALL); the line only checks it."""
    from dfm_hpc.redact import is_secret_key

    lines = []
    for k, v in env.items():
        if is_secret_key(str(k)):
            if check_env_key(k):
                raise ValueError(check_env_key(k)[0])
            lines += [f"# {k}: from the environment sbatch ran in, never written here (docs/security.md)",
                      f'export {k}="${{{k}:?{k} is not set in the submitting environment}}"']
        else:
            lines.append(export_line(k, v))
    return lines


def secret_env(env) -> dict:
    """The secret entries of cluster.env, for the environment sbatch runs in."""
    from dfm_hpc.redact import REDACTED, is_secret_key

    return {str(k): str(v) for k, v in env.items() if is_secret_key(str(k)) and v not in (None, "", REDACTED)}
