"""The PII filter's audit trail (stdlib only): replaced spans shown with their context, masked so a
human can check what the filter did without seeing the personal information.

In a sample every digit (and an IP address's hex digits) is `#` and every e-mail local part is
`*`s (the domain stays: it tells a role address from a private one), names keep their initials, and
the replaced span is marked `[[...]]` with its type. Other spans replaced nearby show as their tags.
Digits in the context are masked too: a number the filter missed stays a number shape, visible as
a miss, not readable.
"""

from __future__ import annotations

import hashlib
import re
from typing import Dict, List, Sequence, Tuple

Span = Tuple[int, int, str]

_LOCAL = re.compile(r"[\w.%+-]+(?=\s?(?:@|[\(\[\{](?:at|på|snabel-?a)[\)\]\}]|\sat\s))", re.I)
_DIGIT = re.compile(r"\d")
WIDTH = 40  # characters of context each side


def mask(value: str, typ: str) -> str:
    """The value with its digits and e-mail local parts masked; names and addresses to initials."""
    if typ == "ip":  # an IPv6 address's hex letters are its digits too
        return re.sub(r"[0-9A-Fa-f]", "#", value)
    if typ in ("name", "address"):
        return " ".join(w[0] + "*" * (len(w) - 1) if w[0].isalpha() else _DIGIT.sub("#", w) for w in value.split())
    return _LOCAL.sub(lambda m: "*" * len(m[0]), _DIGIT.sub("#", value))


def context(text: str, spans: Sequence[Span], i: int, tags: Dict[str, str], width: int = WIDTH) -> str:
    """Span i of text in `width` characters of context each side, masked (see the module doc)."""
    s, e, t = spans[i]
    lo, hi = max(0, s - width), min(len(text), e + width)
    out, pos = [], lo
    for j, (a, b, typ) in enumerate(spans):
        if b <= lo or a >= hi:
            continue
        out.append(_plain(text[pos:max(a, pos)]))
        out.append(f"[[{t}: {mask(text[a:b], t)}]]" if j == i else tags.get(typ, f"<{typ.upper()}>"))
        pos = max(pos, b)
    out.append(_plain(text[pos:hi]))
    return ("…" if lo else "") + "".join(out).replace("\n", " ") + ("…" if hi < len(text) else "")


def _plain(s: str) -> str:
    return mask(s, "context")


def pick(samples: List[dict], per_type: int) -> List[dict]:
    """A deterministic, spread-out choice: per type, the samples with the smallest hash of their text."""
    by_type: Dict[str, List[dict]] = {}
    for smp in samples:
        by_type.setdefault(smp["type"], []).append(smp)
    out = []
    for t in sorted(by_type):
        ranked = sorted(by_type[t], key=lambda smp: hashlib.sha256(smp["context"].encode()).hexdigest())
        out += ranked[:per_type]
    return out
