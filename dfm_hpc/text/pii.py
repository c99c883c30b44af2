"""Detect and replace personal information in Danish text (stdlib only: safe on the login node).

Types (names fixed, see docs/pii.md): cpr, email, phone, ip, iban (IBANs and Danish reg/konto
account numbers). Each detector is a regular expression for the shape plus a validator for what a
regex cannot check cheaply (calendar dates, IP octets, the IBAN mod-97 checksum).

    find(text, types)                -> [(start, end, type)], sorted, non-overlapping
    scrub(text, types, replacement)  -> (new_text, Counter({type: n}))

When spans of two types overlap the higher-priority type wins (PRIORITY: an e-mail address can hold
digits, an IBAN or bank account can hold a CPR- or phone-shaped run). `fake` replacements are seeded
from a hash of the matched text, so reruns are byte-identical and one value always gets one fake.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import random
import re
import string
from collections import Counter
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

TYPES = ("cpr", "email", "phone", "ip", "iban")
PRIORITY = ("email", "iban", "cpr", "ip", "phone")  # earlier wins an overlap
TAGS = {t: f"<{t.upper()}>" for t in TYPES}
REPLACEMENTS = ("tags", "fake")

Span = Tuple[int, int, str]

# --- cpr ------------------------------------------------------------------------------------------
# DDMMYY[-| ]XXXX, not glued to other digit groups (phone lists, account numbers, decimals). The
# modulus-11 check is deliberately not applied: CPR numbers issued since 2007 may fail it.
_CPR = re.compile(r"(?<![\d+])(?<!\d[ .,/-])(\d\d)(\d\d)(\d\d)([- ]?)(\d{4})(?!\d)(?![.,/-]\d)(?! \d)")
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def valid_date(dd: int, mm: int, yy: int) -> bool:
    """A calendar date with a two-digit year; 29 Feb only when yy % 4 == 0 (1900 is the one
    non-leap multiple of 4 in the CPR range, accepted: a false positive there is harmless)."""
    if not 1 <= mm <= 12 or not 1 <= dd <= _DAYS[mm - 1]:
        return False
    return not (mm == 2 and dd == 29 and yy % 4)


def _find_cpr(text: str) -> Iterator[Span]:
    for m in _CPR.finditer(text):
        if valid_date(int(m[1]), int(m[2]), int(m[3])):
            yield m.start(), m.end(), "cpr"


# --- email ----------------------------------------------------------------------------------------
# \w takes æøå in local parts; the domain ends in letters so a sentence's full stop stays outside.
# Scanning from each '@' (then back over the local part) is ~10x faster than a regex that starts at
# every word character of the text.
_EMAIL_DOMAIN = re.compile(r"@(?:[\w-]+\.)+[A-Za-z]{2,}(?![\w-])")
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*$")


def _find_email(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)  # local parts are at most 64 chars
        if local:
            yield local.start(), m.end(), "email"


# --- phone ----------------------------------------------------------------------------------------
# Danish numbers are 8 digits, with +45 / 0045 / (+45) in front or not. Without a prefix the first
# digit must be 2-9 (the numbering plan has no 8-digit numbers starting 0 or 1), which keeps most
# IDs and order numbers out. The grouping is 8 | 2-2-2-2 (one separator kind) | 4 4.
_PHONE = re.compile(
    r"(?<![\w+@.,/-])(?<!\d[ -])"
    r"(?:(?P<pre>(?:\+|00)45[ -]?|\(\+?45\) ?)|(?=[2-9]))\d"  # prefixed: any first digit
    r"(?:\d{7}|\d(?P<sep>[ -])\d\d(?P=sep)\d\d(?P=sep)\d\d|\d{3} \d{4})"
    r"(?![\w@-])(?![.,:/]\d)(?! \d)")
# a number of this shape right after these words is not a phone number
_NOT_PHONE_BEFORE = re.compile(
    r"(?i)\b(?:ordre|faktura|sags|kunde|vare|konto|reg|post|bilag|journal|medlems|cvr|se-)[\w.-]*"
    r"(?: ?(?:nr|nummer|no)\.?)?[ :.#]*$")
_YEAR = re.compile(r"(19|20)\d\d")
# ...but "tlf. 2043 2071" or "(2043 2071)" is a number even when both halves look like years
_PHONE_CUE = re.compile(r"(?i)(?:\b(?:tlf|telefon\w*|mobil\w*|ring\w*|nummer|sms|hotline|fax|kontakt\w*|direkte)[.:]?\s*(?:på\s*)?\(?|\()$")


def _find_phone(text: str) -> Iterator[Span]:
    for m in _PHONE.finditer(text):
        s, e = m.start(), m.end()
        if text[e:e + 4].lstrip().lower().startswith(("kr", ",-", "dkk")):  # an amount
            continue
        if not m["pre"]:
            if _NOT_PHONE_BEFORE.search(text, max(0, s - 25), s):
                continue
            body = m[0]
            if (len(body) == 9 and body[4] == " " and _YEAR.fullmatch(body[:4]) and _YEAR.fullmatch(body[5:])
                    and not _PHONE_CUE.search(text[max(0, s - 25):s])):
                continue  # "1999 2004": two years
        yield s, e, "phone"


# --- ip -------------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.:])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w)(?!\.\d)")  # ":8080" may follow
# candidates only; ipaddress validates (group counts, one '::'); a digit is required so words
# like "dead::beef" or C++'s "Abc::Def" are not addresses
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])(?!\.\w)")


def _find_ip(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        yield m.start(), m.end(), "ip"
    if ":" not in text:
        return
    for m in _IPV6.finditer(text):
        cand = m[0]
        if cand.endswith(":") and not cand.endswith("::"):  # "fe80::1:" -> drop a trailing colon
            cand = cand[:-1]
        if not any(c.isdigit() for c in cand) or cand.count(":") < 2:
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        yield m.start(), m.start() + len(cand), "ip"


# --- iban (and Danish reg/konto numbers) ----------------------------------------------------------
# Official lengths for the countries we expect; any other country code is accepted at 15-34 chars.
IBAN_LENGTHS = {"DK": 18, "FO": 18, "GL": 18, "NO": 15, "SE": 24, "FI": 18, "IS": 26, "DE": 22, "NL": 18,
                "BE": 16, "FR": 27, "GB": 22, "IE": 22, "ES": 24, "IT": 27, "PL": 28, "AT": 20, "CH": 21,
                "LU": 20, "PT": 25, "EE": 20, "LT": 20, "LV": 21}
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])")
# "reg. nr. 1234 kontonr. 1234567890", "reg.nr.: 1234, konto 12345678": the span runs from the
# registration number to the end of the account number (the words in between are kept by fakes)
_REG_KONTO = re.compile(
    r"(?i)\breg(?:istrerings)?\.? ?(?:nr|nummer)?\.?:? ?(\d{4}),? (?:og |- )?"
    r"konto(?:\.? ?nr\.?|nummer)?:? ?\d{6,10}(?![\w-])")
_REG_DASH = re.compile(r"(?<![\w.,/-])\d{4}-\d{6,10}(?![\w-])(?![.,/]\d)")


def iban_ok(compact: str) -> bool:
    """ISO 13616: country letters + check digits; mod 97 of the rearranged number is 1."""
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    if IBAN_LENGTHS.get(compact[:2], len(compact)) != len(compact):
        return False
    return _mod97(compact[4:] + compact[:4]) == 1


def _mod97(s: str) -> int:
    return int("".join(str(int(c, 36)) for c in s)) % 97


def _find_iban(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        # the greedy regex may have swallowed a following uppercase word or number group:
        # try the longest prefix that ends on a group boundary and has a valid checksum
        s, cand = m.start(), m[0]
        ends = [i for i in range(len(cand), 3, -1) if i == len(cand) or cand[i] == " "]
        for e in ends:
            if iban_ok(cand[:e].replace(" ", "")):
                yield s, s + e, "iban"
                break
    has_reg = "reg" in text or "Reg" in text or "REG" in text  # skip the slower case-blind scan
    for rx in ((_REG_KONTO, _REG_DASH) if has_reg else (_REG_DASH,)):
        for m in rx.finditer(text):
            start = m.start(1) if rx is _REG_KONTO else m.start()
            yield start, m.end(), "iban"


_FINDERS: Dict[str, Callable[[str], Iterable[Span]]] = {
    "cpr": _find_cpr, "email": _find_email, "phone": _find_phone, "ip": _find_ip, "iban": _find_iban}


def check_types(types: Sequence[str]) -> List[str]:
    bad = [t for t in types if t not in TYPES]
    if bad:
        raise ValueError(f"unknown PII types {bad}; known: {list(TYPES)}")
    return list(types)


_HINT = re.compile(r"[0-9@]")


def find(text: str, types: Sequence[str] = TYPES) -> List[Span]:
    """Non-overlapping (start, end, type) spans in text order; on overlap the PRIORITY order wins."""
    check_types(types)
    if not _HINT.search(text):  # every type needs a digit or an '@': most chat turns have neither
        return []
    starts: List[int] = []
    kept: List[Span] = []
    for t in PRIORITY:
        if t not in types:
            continue
        for s, e, typ in sorted(_FINDERS[t](text), key=lambda x: (x[0], -x[1])):  # longest first
            i = bisect.bisect_right(starts, s)
            if i and kept[i - 1][1] > s or i < len(kept) and kept[i][0] < e:
                continue  # overlaps a span of a higher priority (or an earlier one of this type)
            starts.insert(i, s)
            kept.insert(i, (s, e, typ))
    return kept


# --- replacement ----------------------------------------------------------------------------------
def _rng(typ: str, value: str) -> random.Random:
    # seeded by the value itself: deterministic across runs and machines (str hash is salted)
    return random.Random(int.from_bytes(hashlib.sha256(f"{typ}\0{value}".encode()).digest()[:8], "big"))


def _reshape(s: str, rng: random.Random, letters: bool = True) -> str:
    """Same character classes in the same places: digits -> digits, letters -> letters (if asked)."""
    out = []
    for c in s:
        if c.isdigit():
            out.append(rng.choice(string.digits))
        elif letters and c.isalpha():
            out.append(rng.choice(string.ascii_uppercase if c.isupper() else string.ascii_lowercase))
        else:
            out.append(c)
    return "".join(out)


def _fill_digits(template: str, digits: str) -> str:
    """Put digits into the template's digit positions, keeping every other character."""
    it = iter(digits)
    return "".join(next(it) if c.isdigit() else c for c in template)


def _fake_cpr(value: str, rng: random.Random) -> str:
    mm = rng.randint(1, 12)
    yy = rng.randint(0, 99)
    dd = rng.randint(1, _DAYS[mm - 1] if mm != 2 else (29 if yy % 4 == 0 else 28))
    return _fill_digits(value, f"{dd:02d}{mm:02d}{yy:02d}{rng.randint(0, 9999):04d}")


_FAKE_NAMES = ("anna", "bo", "emil", "freja", "ida", "jens", "karen", "lars", "mads", "nora", "ole", "sofie")


def _fake_email(value: str, rng: random.Random) -> str:
    return (f"{rng.choice(_FAKE_NAMES)}.{rng.choice(_FAKE_NAMES)}{rng.randint(1, 99)}"
            f"@{rng.choice(('example.com', 'example.org', 'example.net'))}")


def _fake_phone(value: str, rng: random.Random) -> str:
    m = re.match(r"(?:\+|00)45[ -]?|\(\+?45\) ?", value)
    pre = m[0] if m else ""
    body = _reshape(value[len(pre):], rng)
    return pre + str(rng.randint(2, 9)) + body[1:]  # a first digit a real number could have


def _fake_ip(value: str, rng: random.Random) -> str:
    if ":" in value:  # 2001:db8::/32 is reserved for documentation (RFC 3849)
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(64)))
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))  # TEST-NET-1..3 (RFC 5737)
    return f"{net}.{rng.randint(1, 254)}"


def _fake_iban(value: str, rng: random.Random) -> str:
    compact = value.replace(" ", "")
    if not (compact[:2].isalpha() and compact[:2].isupper()):  # reg/konto: new digits, same words
        fake = _reshape(value, rng, letters=False)
        return str(rng.randint(1, 9)) + fake[1:]
    bban = _reshape(compact[4:], rng)
    check = 98 - _mod97(bban + compact[:2] + "00")
    new = f"{compact[:2]}{check:02d}{bban}"
    it = iter(new)  # the original grouping (spaces) back in place
    return "".join(" " if c == " " else next(it) for c in value)


_FAKERS = {"cpr": _fake_cpr, "email": _fake_email, "phone": _fake_phone, "ip": _fake_ip, "iban": _fake_iban}


def fake(typ: str, value: str) -> str:
    """A realistic stand-in of the same shape, deterministic in (typ, value)."""
    return _FAKERS[typ](value, _rng(typ, value))


def scrub(text: str, types: Sequence[str] = TYPES, replacement: str = "tags") -> Tuple[str, Counter]:
    """Replace every span find() reports; returns the new text and how many of each type."""
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {replacement!r}; known: {list(REPLACEMENTS)}")
    spans = find(text, types)
    counts: Counter = Counter()
    if not spans:
        return text, counts
    out, pos = [], 0
    for s, e, t in spans:
        out.append(text[pos:s])
        out.append(TAGS[t] if replacement == "tags" else fake(t, text[s:e]))
        counts[t] += 1
        pos = e
    out.append(text[pos:])
    return "".join(out), counts
