"""The one rule for what a model or data source names: `tiny:NAME`, a local path, or a hub id.

Used on the login node (validation, prefetch) and in ranks (loaders, the card); standard library only.
A local path wins over a hub id of the same spelling, so `kind()` looks at the disk last.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

TINY = "tiny"
LOCAL = "local"
HUB = "hub"

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the Hub spells repo ids
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".gz", ".parquet", ".arrow", ".txt", ".csv")


def looks_local(name: str) -> bool:
    """Spelled as a path: starts with / . ~, ends in a data-file suffix, or has more than one `/`.
    A missing file so spelled should be reported as missing, not sent to the Hub."""
    s = str(name)
    return (s.startswith(("/", ".", "~")) or s.endswith(_DATA_SUFFIXES) or s.count("/") > 1 or "\\" in s)


def kind(name: Optional[str]) -> Optional[str]:
    """'tiny' | 'local' | 'hub' | None (unset, or neither a path nor a repo id)."""
    if not name:
        return None
    s = str(name)
    if s.startswith("tiny:"):
        return TINY
    if looks_local(s) or Path(s).expanduser().exists():
        return LOCAL
    return HUB if _HUB_ID.match(s) else None


def is_hub_id(name: Optional[str]) -> bool:
    return kind(name) == HUB


def is_local(name: Optional[str]) -> bool:
    return kind(name) == LOCAL
