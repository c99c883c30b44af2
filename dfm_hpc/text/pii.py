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
import ipaddress
import re
from collections import Counter
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

from dfm_hpc.schema import IpPolicy, PiiType, Replacement
from dfm_hpc.text import pii_cues as cues
from dfm_hpc.text.pii_scan import Runs
from dfm_hpc.text.pii_scan import at as _at
from dfm_hpc.text.pii_scan import digit_runs as _digit_runs

TYPES = tuple(PiiType.values())  # the config's choices (pii.types) are the one list
PRIORITY = ("email", "iban", "cpr", "ip", "phone")  # earlier wins an overlap
NER_TYPES = ("name", "address")  # the optional model pass (dfm_hpc/text/pii_ner.py)
TAGS = {**{t: f"<{t.upper()}>" for t in TYPES}, "name": "<NAME>", "address": "<ADDRESS>"}
REPLACEMENTS = tuple(Replacement.values())

Span = Tuple[int, int, str]

# --- cpr ------------------------------------------------------------------------------------------
# DDMMYY[-| ]XXXX, not glued to other digit groups (phone lists, account numbers, decimals) or to
# letters and URL punctuation (app ids, query strings). The modulus-11 check is deliberately not
# applied: CPR numbers issued since 2007 may fail it. A cue (CPR, personnummer) also admits
# "DDMMYY - XXXX" and an en dash, and wins over every look-alike rule.
# (each regex consumes its first character before its lookbehinds: a pattern that starts with a
# character class lets the regex engine skip ahead to candidates, ~4x faster on prose)
_CPR = re.compile(r"(\d(?<![\w+=/]\d)(?<!\d[ .,/-]\d)\d)(\d\d)(\d\d)([- ]?)(\d{4})(?!\w)(?![.,/-]\d)(?! \d)")
_CPR_LOOSE = re.compile(r"(\d(?<![\w+=/]\d)\d)(\d\d)(\d\d)(?:[ \t]?[-–][ \t]?| )?(\d{4})(?!\w)(?![.,/-]\d)")
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def valid_date(dd: int, mm: int, yy: int) -> bool:
    """A calendar date with a two-digit year; 29 Feb only when yy % 4 == 0 (1900 is the one
    non-leap multiple of 4 in the CPR range, accepted: a false positive there is harmless)."""
    if not 1 <= mm <= 12 or not 1 <= dd <= _DAYS[mm - 1]:
        return False
    return not (mm == 2 and dd == 29 and yy % 4)


def _find_cpr(text: str, low: str, ip: str = "all", runs: Runs = None) -> Iterator[Span]:
    seen = set()
    loose = "cpr" in low or "person" in low or "fødsel" in low
    starts = [s for s, e in _digit_runs(text, runs) if e - s in (6, 10)]  # DDMMYY or DDMMYYXXXX
    for rx in ((_CPR, _CPR_LOOSE) if loose else (_CPR,)):
        for m in _at(rx, text, starts):
            s = m.start()
            if s in seen or not valid_date(int(m[1]), int(m[2]), int(m[3])):
                continue
            w = cues.before(text, s)
            if not cues.CPR_NEAR.search(w.replace("-\n", "")):
                # the account cue wins ("Konto: 0101901234" is an account); ids and URLs are no CPR
                if rx is _CPR_LOOSE or cues.ends_with(cues.LOOKALIKE_BEFORE, w) or cues.in_url(text, s):
                    continue
            seen.add(s)
            yield s, m.end(), "cpr"


# --- email ----------------------------------------------------------------------------------------
# \w takes æøå in local parts; the domain ends in letters so a sentence's full stop stays outside.
# Scanning from each '@' (then back over the local part) is ~10x faster than a regex that starts at
# every word character of the text. Obfuscated forms: "navn(på)klub.dk", "navn [at] klub [dot] dk",
# "navn at klub.dk" (the last only when the word before "at" is no Danish clause word).
_DOT = r"(?:\.|\s?[\(\[\{](?:dot|punktum)[\)\]\}]\s?|[ \t]dot[ \t])"
# a top-level domain is in one case: "gå.Politikerne" is a sentence end without a space (issue #24)
_TLD = r"(?:[a-z]{2,}|[A-Z]{2,})(?![\w-])"
_EMAIL_DOMAIN = re.compile(rf"@((?:[\w-]+\.)+{_TLD})")
_OBF_DOMAIN = re.compile(rf"\s?((?:[\w-]+{_DOT})+{_TLD})(?!/)")
_OBF_BRACKET = re.compile(r"[(\[{](?:at|på|snabel-?a)[)\]}]")  # on the lower-cased text
_OBF_WORD = re.compile(r" at(?=\s[\w-]+(?:\.|\s?[(\[{]dot[)\]}]\s?)[\w-])")  # " at " before a domain
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*$")


def _bracket_at(low: str) -> bool:  # str checks gate _OBF_BRACKET's char-class scan
    return "at" in low and ("(at" in low or "[at" in low or "{at" in low) or "(på" in low or "[på" in low or \
        "{på" in low or "snabel" in low



def _obfuscated(low: str) -> bool:
    return bool(_OBF_WORD.search(low) or _bracket_at(low) and _OBF_BRACKET.search(low))


def _find_email(text: str, low: str, ip: str = "all", runs: Runs = None) -> Iterator[Span]:
    if "@" in text:
        for m in _EMAIL_DOMAIN.finditer(text):
            at = m.start()
            local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)  # local parts are at most 64 chars
            if local and not cues.placeholder_email(local[0], m[1]):
                yield local.start(), m.end(), "email"
    for rx in ((_OBF_BRACKET, _OBF_WORD) if _bracket_at(low) else (_OBF_WORD,)):
        for m in rx.finditer(low):
            dom = _OBF_DOMAIN.match(text, m.end())
            if not dom:
                continue
            end_local = m.start() - 1 if rx is _OBF_BRACKET and text[m.start() - 1:m.start()].isspace() else m.start()
            local = _EMAIL_LOCAL.search(text, max(0, end_local - 64), end_local)
            if not local:
                continue
            word = local[0].lower()
            if rx is _OBF_WORD and not cues.at_word_ok(word, dom[1]):
                continue  # "for at dr.dk ...": a Danish clause; "website at www.x.dk": a web address
            if not cues.placeholder_email(word, dom[1]):
                yield local.start(), dom.end(), "email"


# --- phone ----------------------------------------------------------------------------------------
# Danish numbers are 8 digits, with +45 / 0045 / (+45) in front or not. Without a prefix the first
# digit must be 2-9 (the numbering plan has no 8-digit numbers starting 0 or 1), which keeps most
# IDs and order numbers out. Groupings: 8 | 2-2-2-2 | 4 4 | (after a phone cue) 2-3-3 and 4-2-2;
# two numbers may be joined by "/".
_GROUPS = r"\d{8}|\d\d \d\d \d\d \d\d|\d\d-\d\d-\d\d-\d\d|\d{4} \d{4}|\d\d \d{3} \d{3}|\d{4} \d\d \d\d"
_PRE = r"(?:\+|00)45[ -]?|\(\+?45\) ?"
_PHONE_PRE = re.compile(rf"(?<![\w+@.,/=<#&?%-])(?<!\d[ -])(?P<pre>{_PRE})(?P<body>{_GROUPS})(?![\w@<>-])(?![.,:]\d)")
_PHONE = re.compile(r"(?P<body>[2-9](?<![\w+@.,/=<#&?%-][2-9])(?<!\d[ -][2-9])"
                    r"(?:\d{7}|\d \d\d \d\d \d\d|\d-\d\d-\d\d-\d\d|\d{3} \d{4}|\d \d{3} \d{3}|\d{3} \d\d \d\d))"
                    r"(?![\w@<>-])(?![.,:]\d)")
_SLASH = re.compile(r"[ \t]?/[ \t]?(?=[\d(+])")
_PHONE_AFTER_SLASH = re.compile(
    rf"[ \t]?/[ \t]?(?:(?P<pre>{_PRE})|(?=[2-9]))(?P<body>{_GROUPS})(?![\w@<>-])(?![.,:]\d)")
_YEAR = re.compile(r"(?:19\d\d|20[0-3]\d)")


_SPACE_DIGIT = re.compile(r" \d")


def _phone_ok(text: str, s: int, e: int, pre: str, body: str) -> bool:
    if cues.AMOUNT_AFTER.match(text, e) or " " in body and _SPACE_DIGIT.match(text, e):
        return False  # an amount; "22 33 44 55 66": a spaced group goes on, no phone number
    if pre:
        return True
    w = cues.before(text, s)
    if cues.ends_with(cues.NO_PHONE_BEFORE, w) or cues.in_url(text, s):
        return False
    if cues.degenerate(body.replace(" ", "").replace("-", "")) or cues.REGISTER_LINK.match(text, e):
        return False
    loose = len(body) == 10 and (body[2] == " " and body[6] == " " or body[4] == " " and body[7] == " ")
    yearish = len(body) == 9 and body[4] == " " and _YEAR.fullmatch(body[:4])
    if yearish and _YEAR.fullmatch(body[5:]):
        return cues.PHONE_BEFORE.search(w) is not None  # "1999 2004": two years, unless "mobil: 1999 2004"
    if (loose or yearish) and not (cues.PHONE_NEAR.search(cues.clause(w)) or cues.table_cue(text, s)):
        # "25 000 000", "2019 12 31" count only after tlf, mobil, ring...; so does "i 2018 1500 ..."
        # (a year and a count); or in a table under a "Telefon" header
        return False
    return True


def _find_phone(text: str, low: str, ip: str = "all", runs: Runs = None) -> Iterator[Span]:
    runs = _digit_runs(text, runs)
    found = list(_at(_PHONE, text, [s for s, e in runs if e - s in (2, 4, 8)]))  # the first group's length
    if "+45" in text or "0045" in text or "45)" in text:
        # a prefix starts at "0045", or 1-2 characters before "45" ("+45", "(45)", "(+45)")
        pre = [q for p, _e in runs for q in ((p,) if text.startswith("0045", p) else
                                          (p - 2, p - 1) if text.startswith("45", p) and p > 1 else
                                          (p - 1,) if text.startswith("45", p) and p else ())]
        found = sorted(found + list(_at(_PHONE_PRE, text, pre)), key=lambda m: m.start())
    for m in found:
        s, e = m.start(), m.end()
        pre = m.groupdict().get("pre") or ""
        slash = _SLASH.match(text, e)
        second = _PHONE_AFTER_SLASH.match(text, e) if slash else None
        if slash and not second:
            continue  # "22334455/2020": a number with a year
        if _phone_ok(text, s, e, pre, m["body"]):
            yield s, e, "phone"
            if second and (second["pre"] or not cues.degenerate(second["body"].replace(" ", ""))):
                yield second.start("body") - len(second["pre"] or ""), second.end(), "phone"


# --- ip -------------------------------------------------------------------------------------------
_IPV4 = re.compile(r"\d(?<![\w.:]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w)(?!\.\d)")  # ":8080" may follow
# candidates only; ipaddress validates (group counts, one '::'); a digit is required so words
# like "dead::beef" or C++'s "Abc::Def" are not addresses
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                   r"(?![\w:])(?!\.\w)")
_COLON2 = re.compile(r":[0-9A-Fa-f]{0,4}:")  # every IPv6 address holds two colons this close
IP_POLICIES = tuple(IpPolicy.values())


def _ip_wanted(value: str, policy: str) -> bool:
    if policy == "all":
        return True
    if policy == "off":
        return False
    return ipaddress.ip_address(value).is_global and value not in cues.RESOLVERS


def _find_ip(text: str, low: str, ip: str = "all", runs: Runs = None) -> Iterator[Span]:
    if ip == "off":
        return
    for m in _at(_IPV4, text, [s for s, e in _digit_runs(text, runs) if e - s <= 3]):
        v = m[0]
        if any(int(o) > 255 or len(o) > 1 and o[0] == "0" for o in v.split(".")):
            continue
        if cues.is_netmask(v, text, m.start()) or cues.is_section(text, m.start(), m.end(), v):
            continue
        if _ip_wanted(v, ip):
            yield m.start(), m.end(), "ip"
    if not _COLON2.search(text):  # a literal-led scan: far cheaper than _IPV6's own
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
        if _ip_wanted(cand, ip):
            yield m.start(), m.start() + len(cand), "ip"


# --- iban (and Danish reg/konto account numbers) --------------------------------------------------
# Official lengths for the countries we expect; any other country code is accepted at 15-34 chars.
IBAN_LENGTHS = {"DK": 18, "FO": 18, "GL": 18, "NO": 15, "SE": 24, "FI": 18, "IS": 26, "DE": 22, "NL": 18,
                "BE": 16, "FR": 27, "GB": 22, "IE": 22, "ES": 24, "IT": 27, "PL": 28, "AT": 20, "CH": 21,
                "LU": 20, "PT": 25, "EE": 20, "LT": 20, "LV": 21}
_IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])")
# Account numbers: a 4-digit reg number and a 6-10-digit account, in Danish or English wording:
# "reg. nr. 1234 kontonr. 1234567890", "reg.nr/Kontonummer: 0828 / 0000270912", "konto nr.5371 245678",
# "Reg. no. 1234, account no. 12345678". The span runs from the reg number to the end of the
# account (the words in between are kept by fakes).
# whitespace is bounded (a few blanks, at most one line break): an unbounded \s* next to another
# one backtracks quadratically over the long blank runs of PDF text
_WS = r"[ \t]{0,4}(?:\r?\n[ \t]{0,4})?"
_WS1 = r"(?:[ \t]{1,4}(?:\r?\n[ \t]{0,4})?|\r?\n[ \t]{0,4})"
_NRW = r"(?:\s?-?\s?(?:nr|no|nummer|number)\b\.?)?"
_REGW = rf"\b(?:reg(?:istrer(?:-\n)?ings)?|registration)(?:nr|nummer)?\b\.?{_NRW}"
_KONTOW = rf"\b(?:bank)?(?:konto|kto|account|acct)(?:en|nr|nummer|number|no)?\b\.?{_NRW}"
_CONN = rf"{_WS}(?:[:.=]|\ber\b|\bis\b|\bpå\b)?{_WS}"
_ACC_END = r"(?![\w-])(?![.,/]\d)"
_ACCOUNT = re.compile(
    rf"(?i)(?:{_REGW}(?:{_WS}(?:/|og|and|&|,){_WS}{_KONTOW})?|{_KONTOW}){_CONN}"
    rf"(?P<reg>\d{{4}})(?:{_WS}[-–—/,]{_WS}|{_WS1}|[,.]?{_WS}(?:og|and|&|/)?{_WS}{_KONTOW}{_CONN})"
    rf"(?P<acc>\d{{6,10}}){_ACC_END}")
_ACCOUNT_ONLY = re.compile(rf"(?i){_KONTOW}{_CONN}(?P<acc>\d{{7,10}}){_ACC_END}")  # "Konto: 0101901234"
_REG_DASH = re.compile(rf"\d(?<![\w.,/-]\d)(?<!\d \d)\d{{3}}-\d{{6,10}}{_ACC_END}")
_REG_LOOSE = re.compile(rf"\d(?<![\w.,/-]\d)(?<!\d \d)\d{{3}}{_WS}(?:[–—/]|(?<=\s)-|-(?=\s)){_WS}\d{{6,10}}{_ACC_END}")


def iban_ok(compact: str) -> bool:
    """ISO 13616: country letters + check digits; mod 97 of the rearranged number is 1."""
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    if IBAN_LENGTHS.get(compact[:2], len(compact)) != len(compact):
        return False
    return _mod97(compact[4:] + compact[:4]) == 1


def _mod97(s: str) -> int:
    return int("".join(str(int(c, 36)) for c in s)) % 97


def _find_iban(text: str, low: str, ip: str = "all", runs: Runs = None) -> Iterator[Span]:
    runs = _digit_runs(text, runs)
    # an IBAN's check digits start a digit run right after its two country letters
    for m in _at(_IBAN, text, [p - 2 for p, e in runs if e - p > 1 and p > 1 and text[p - 2:p].isupper()]):
        # the greedy regex may have swallowed a following uppercase word or number group:
        # try the longest prefix that ends on a group boundary and has a valid checksum
        s, cand = m.start(), m[0]
        ends = [i for i in range(len(cand), 3, -1) if i == len(cand) or cand[i] == " "]
        for e in ends:
            if iban_ok(cand[:e].replace(" ", "")):
                yield s, s + e, "iban"
                break
    accs = [i for i, (s, e) in enumerate(runs) if 6 <= e - s <= 10]  # every account form ends in 6-10 digits
    if not accs:
        return
    for p in _cue_starts(low, ("reg", "kont", "kto", "acc")):  # a few matches, not a case-blind scan
        m = _ACCOUNT.match(text, p)
        if m:
            yield m.start("reg"), m.end(), "iban"
        m = _ACCOUNT_ONLY.match(text, p)
        if m and not cues.AMOUNT_AFTER.match(text, m.end()):
            yield m.start("acc"), m.end(), "iban"
    # a reg number's 4 digits: the digit run right before the account's
    regs = [runs[i - 1][0] for i in accs if i and runs[i - 1][1] - runs[i - 1][0] == 4]
    if regs and "-" in text:
        for m in _at(_REG_DASH, text, regs):
            w = cues.before(text, m.start())
            if not (cues.in_url(text, m.start()) or cues.ends_with(cues.LOOKALIKE_BEFORE, w)) or \
                    cues.ends_with(cues.ACCOUNT_BEFORE, w):
                yield m.start(), m.end(), "iban"
    if regs and ("reg" in low or "kont" in low or "kto" in low or "acc" in low or "bank" in low or "betal" in low
                 or "overf" in low or "indsæt" in low or "indsat" in low):
        for m in _at(_REG_LOOSE, text, regs):  # "0828 – 0000270912", "5371 / 245678": only after an account cue
            if cues.ACCOUNT_NEAR.search(cues.before(text, m.start(), 60)):
                yield m.start(), m.end(), "iban"


def _cue_starts(low: str, stems) -> List[int]:
    """Start of every word that holds one of the stems (the 'bank' of 'bankkonto' included)."""
    out = set()
    for stem in stems:
        i = low.find(stem)
        while i >= 0:
            j = i
            while j and low[j - 1].isalpha():
                j -= 1
            out.add(j)
            i = low.find(stem, i + 1)
    return sorted(out)


_FINDERS: Dict[str, Callable[[str, str, str], Iterable[Span]]] = {
    "cpr": _find_cpr, "email": _find_email, "phone": _find_phone, "ip": _find_ip, "iban": _find_iban}
# in text whose numbers were joined over line breaks, a number counts only after its type's cue
_WRAP_CUES = {"phone": cues.PHONE_NEAR, "iban": cues.ACCOUNT_NEAR, "cpr": cues.CPR_NEAR}


def check_types(types: Sequence[str]) -> List[str]:
    if types is TYPES:
        return list(types)
    bad = [t for t in types if t not in TYPES]
    if bad:
        raise ValueError(f"unknown PII types {bad}; known: {list(TYPES)}")
    return list(types)


def check_ip(policy: str) -> str:
    if policy not in IP_POLICIES:
        raise ValueError(f"unknown IP policy {policy!r}; known: {list(IP_POLICIES)}")
    return policy


_NL_DIGIT = re.compile(r"\n[ \t]*[-–\d(+]")  # literal-led: gates WRAP, whose lookbehind scans every char


def _wrapped(text: str, types: Sequence[str], ip: str) -> List[Span]:
    """Numbers wrapped over a line break, found in the joined text after their type's cue."""
    u = cues.Unwrapped(text)
    low = u.text.lower().replace("\n", " ")
    out, runs = [], _digit_runs(u.text)
    for t in _WRAP_CUES:
        if t in types:
            cands = [sp for sp in _FINDERS[t](u.text, low, ip, runs)
                     if _WRAP_CUES[t].search(cues.before(u.text, sp[0], 60)) or _self_evident(u.text[sp[0]:sp[1]], t)]
            out += u.back(cands)
    return out


_SELF_EVIDENT = {"phone": re.compile(r"(?:\+|00|\(\+?)45|\d\d([ -])\d\d\1\d\d\1\d\d$"),
                 "iban": re.compile(r"[A-Z]{2}\d\d")}


def _self_evident(value: str, typ: str) -> bool:
    """A +45 prefix, the 2-2-2-2 grouping or an IBAN's checksum needs no cue to be joined over a wrap."""
    rx = _SELF_EVIDENT.get(typ)
    return bool(rx and rx.match(value))


def find(text: str, types: Sequence[str] = TYPES, ip: str = "all", extra: Sequence[Span] = ()) -> List[Span]:
    """Non-overlapping (start, end, type) spans in text order; on overlap the PRIORITY order wins.
    `ip` is the IP policy (IP_POLICIES); `extra` are spans of other passes (names, addresses) that
    lose every overlap with these types."""
    check_types(types)
    check_ip(ip)
    low = text.lower().replace("\n", " ")  # same length; "ida.h\nat gmail.com" reads as " at "
    runs = _digit_runs(text)
    if not runs:  # every type but e-mail needs a digit
        if "@" not in text and not _obfuscated(low):
            return sorted(extra)
        types = [t for t in types if t == "email"]
    cands: Dict[str, List[Span]] = {t: list(_FINDERS[t](text, low, ip, runs)) for t in PRIORITY if t in types}
    if "\n" in text and runs and _NL_DIGIT.search(text) and cues.WRAP.search(text):
        for s, e, t in _wrapped(text, types, ip):
            cands[t].append((s, e, t))
    groups = [spans for spans in (*(cands[t] for t in PRIORITY if t in cands), list(extra)) if spans]
    if len(groups) == 1 and len(groups[0]) == 1:
        return groups[0]  # one span: nothing to overlap (the common case in real text)
    starts: List[int] = []
    kept: List[Span] = []
    for spans in groups:
        for s, e, typ in sorted(spans, key=lambda x: (x[0], -x[1])):  # longest first
            i = bisect.bisect_right(starts, s)
            if i and kept[i - 1][1] > s or i < len(kept) and kept[i][0] < e:
                continue  # overlaps a span of a higher priority (or an earlier one of this type)
            starts.insert(i, s)
            kept.insert(i, (s, e, typ))
    return kept


# --- replacement ----------------------------------------------------------------------------------
def fake(typ: str, value: str) -> str:
    """A realistic stand-in of the same shape, deterministic in (typ, value): dfm_hpc/text/pii_fake.py."""
    from dfm_hpc.text import pii_fake  # imported when first needed: tags need none of it

    return pii_fake.fake(typ, value)


def scrub(text: str, types: Sequence[str] = TYPES, replacement: str = "tags", ip: str = "all",
          extra: Sequence[Span] = ()) -> Tuple[str, Counter]:
    """Replace every span find() reports; returns the new text and how many of each type."""
    check_replacement(replacement)
    return replace(text, find(text, types, ip, extra), replacement)


def check_replacement(replacement: str) -> str:
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {replacement!r}; known: {list(REPLACEMENTS)}")
    return replacement


def replace(text: str, spans: Sequence[Span], replacement: str = "tags") -> Tuple[str, Counter]:
    """Replace the given (sorted, non-overlapping) spans by tags or fakes."""
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
