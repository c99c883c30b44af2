"""Fake replacements for the PII filter (`pii.replacement=fake`): a realistic stand-in of the same
shape for each type, seeded from a hash of the matched text so reruns are byte-identical and one
value always gets one fake. Every fake is found again by the detectors (tests/text/test_pii.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
import string

from dfm_hpc.text.pii import _DAYS, _mod97


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


_FAKE_SURNAMES = ("Hansen", "Nielsen", "Jensen", "Pedersen", "Andersen", "Larsen", "Holm", "Kjær")
_FAKE_STREETS = ("Eksempelvej", "Prøvegade", "Modelvej", "Testallé", "Skabelonstræde")


def _fake_name(value: str, rng: random.Random) -> str:
    """As many words as the name had: first names, then a surname."""
    n = max(1, len(value.split()))
    first = [rng.choice(_FAKE_NAMES).capitalize() for _ in range(max(1, n - 1))]
    return " ".join(first + [rng.choice(_FAKE_SURNAMES)] if n > 1 else first)


def _fake_address(value: str, rng: random.Random) -> str:
    return f"{rng.choice(_FAKE_STREETS)} {rng.randint(1, 99)}"


_FAKERS = {"cpr": _fake_cpr, "email": _fake_email, "phone": _fake_phone, "ip": _fake_ip, "iban": _fake_iban,
           "name": _fake_name, "address": _fake_address}


def fake(typ: str, value: str) -> str:
    """A realistic stand-in of the same shape, deterministic in (typ, value)."""
    return _FAKERS[typ](value, _rng(typ, value))
