"""Secrets kept out of every file and message: which keys are secret, and redaction of config
maps, overrides and free text (docs/security.md). Pure: both worlds use it.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Optional

REDACTED = "***REDACTED***"
SECRET_ENV = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
# A key is secret when its last word names one: hf_token, api_key, db_password (not max_tokens).
_SECRET_WORD = re.compile(r"(^|[_\-.])(token|key|apikey|secret|password|passwd|pwd|credentials?)$", re.I)

# the shell's working directories end in PWD but are paths, not passwords: treating them as secrets
# would refuse every path under the current directory
NOT_SECRET = {"PWD", "OLDPWD"}


def is_secret_key(key: str) -> bool:
    k = str(key)
    return k.upper() in SECRET_ENV or (k.upper() not in NOT_SECRET and bool(_SECRET_WORD.search(k)))


def redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def redact_override(text: str) -> str:
    key, eq, _ = text.partition("=")
    return f"{key}={REDACTED}" if eq and is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1]) else text


# NAME=value / NAME: value / "name": "value" where NAME is secret; token shapes of HF, AWS, W&B, GitHub
_ASSIGN = re.compile(r"""(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>["']?\s*[:=]\s*["']?)(?P<val>[^\s"',;}]+)""")
_SHAPES = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}|[a-f0-9]{40})\b")


def secret_values(config: Optional[dict] = None, environ=None) -> List[str]:
    """Values to keep out of every file and message: secret entries of the environment and of the
    config's maps (cluster.env ...), at least 6 characters long (shorter ones would hit ordinary text)."""
    env = os.environ if environ is None else environ
    found = {str(v) for k, v in env.items() if is_secret_key(k)}

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if is_secret_key(str(k)) and isinstance(v, (str, int)):
                    found.add(str(v))
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(config or {})
    return sorted((v for v in found if len(v) >= 6 and v != REDACTED), key=len, reverse=True)


def redact_text(text: str, values: Optional[List[str]] = None) -> str:
    """Free text (a command line, a setup line, git.diff, an error message) without secrets: the known
    secret values, values assigned to secret-named keys, and well-known token shapes."""
    for v in values if values is not None else secret_values():
        text = text.replace(v, REDACTED)

    def assign(m):
        key = m.group("key").rsplit(".", 1)[-1]
        val = m.group("val")
        # `key=value` in a usage hint is documentation, not a secret
        placeholder = key.lower() == "key" or val in ("value", "VALUE", "...") or val.startswith(("<", "$", REDACTED))
        return f"{m.group('key')}{m.group('sep')}{REDACTED}" if is_secret_key(key) and not placeholder else m.group(0)
    return _SHAPES.sub(REDACTED, _ASSIGN.sub(assign, text)) if text else text


def redact_all(obj: Any, values: List[str]) -> Any:
    """`redact` by key, then every string scrubbed by redact_text (setup lines, srun_args ...)."""
    obj = redact(obj)
    if isinstance(obj, dict):
        return {k: redact_all(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_all(v, values) for v in obj]
    return redact_text(obj, values) if isinstance(obj, str) else obj
