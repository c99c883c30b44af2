"""PII filter: detector precision/recall on planted Danish text, and replacement (the stage: tests/stages/)."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from dfm_hpc.text import pii

from helpers.pii_text import GENERATORS, planted_docs, score


# --- detectors ------------------------------------------------------------------------------------
def test_precision_and_recall_per_type():
    docs = planted_docs(800, seed=1)
    res = score(docs)
    for t, (prec, rec, planted, _found) in res.items():
        assert planted == 800
        assert prec >= 0.99 and rec >= 0.99, (t, res[t])


def _kinds(text):
    return [(text[s:e], t) for s, e, t in pii.find(text)]


@pytest.mark.parametrize("text, want", [
    ("CPR 010190-1234, 2902881234 og 150505 4321.", [
        ("010190-1234", "cpr"), ("2902881234", "cpr"), ("150505 4321", "cpr")]),
    ("290289-1234 (1989 er intet skudår), 3213901234, 12-05-2023, 0101901234567", []),
    ("+45 12 34 56 78, +4512345678, (+45) 1234 5678, 0045 12345678", [
        ("+45 12 34 56 78", "phone"), ("+4512345678", "phone"), ("(+45) 1234 5678", "phone"),
        ("0045 12345678", "phone")]),
    ("Ring 22345678, 22 34 56 78, 2234 5678 eller 22-34-56-78.", [
        ("22345678", "phone"), ("22 34 56 78", "phone"), ("2234 5678", "phone"), ("22-34-56-78", "phone")]),
    ("1.234.567 kr, 22334455 kr., 1999 2004, ordrenummer 22334455, kl. 14.30, 2100 København Ø", []),
    # year-like halves are a number after a phone cue or in parentheses, else two years
    ("Vagttelefonen (2043 2071), mobil: 2012 2013; i årene 2012 2013 steg den", [
        ("2043 2071", "phone"), ("2012 2013", "phone")]),
    ("IP 10.0.0.1:8080, ::1 og 2001:db8::ff00:42:8329. Ikke 256.1.1.1, 3.10.4 eller 14:30:00.", [
        ("10.0.0.1", "ip"), ("::1", "ip"), ("2001:db8::ff00:42:8329", "ip")]),
    ("DK50 0040 0440 1162 43 OG GB82WEST12345698765432; ikke DK51 0040 0440 1162 43.", [
        ("DK50 0040 0440 1162 43", "iban"), ("GB82WEST12345698765432", "iban")]),
    ("reg. nr. 1234 kontonr. 0101901234", [("1234 kontonr. 0101901234", "iban")]),  # iban beats cpr
    ("Skriv til søren.ø@mail.dk eller 22334455@sms.dk.", [("søren.ø@mail.dk", "email"), ("22334455@sms.dk", "email")]),
])
def test_detector_cases(text, want):
    assert _kinds(text) == want


def test_find_only_asked_types_and_rejects_unknown():
    text = "CPR 010190-1234, mail a@b.dk"
    assert [t for *_, t in pii.find(text, ["email"])] == ["email"]
    with pytest.raises(ValueError):
        pii.find(text, ["name"])
    with pytest.raises(ValueError):
        pii.scrub(text, replacement="mask")


# --- replacement ----------------------------------------------------------------------------------
def test_tags():
    text = "CPR 010190-1234, tlf. +45 22 33 44 55, a.b@c.dk, IP 10.1.2.3, DK50 0040 0440 1162 43."
    new, counts = pii.scrub(text, replacement="tags")
    assert new == "CPR <CPR>, tlf. <PHONE>, <EMAIL>, IP <IP>, <IBAN>."
    assert counts == Counter({"cpr": 1, "phone": 1, "email": 1, "ip": 1, "iban": 1})


def test_fakes_have_the_shape_and_are_found_again():
    rng = random.Random(7)
    for t, gen in GENERATORS.items():
        for _ in range(300):
            full, lead = gen(rng)
            value = full[lead:]
            f = pii.fake(t, value)
            assert f != value and pii.fake(t, value) == f  # deterministic, and really replaced
            text = f"Se {full[:lead]}{f} her."  # "reg. nr. " stays in front of a faked account
            assert pii.find(text) == [(3 + lead, 3 + lead + len(f), t)], (t, value, f)
            if t == "cpr":
                assert [c.isdigit() for c in f] == [c.isdigit() for c in value]
                assert pii.valid_date(int(f[:2]), int(f[2:4]), int(f[4:6]))
            elif t == "phone":
                assert [c.isdigit() for c in f] == [c.isdigit() for c in value]
            elif t == "email":
                assert f.split("@")[1] in ("example.com", "example.org", "example.net")
            elif t == "ip":
                addr = ipaddress.ip_address(f)
                assert addr.version == ipaddress.ip_address(value).version
                assert addr.is_private  # documentation ranges count as private in ipaddress
            elif t == "iban" and value[:2].isalpha():
                assert pii.iban_ok(f.replace(" ", "")) and f[:2] == value[:2] and len(f) == len(value)
                assert [c == " " for c in f] == [c == " " for c in value]


def test_fake_scrub_is_deterministic_and_removes_the_originals():
    docs = planted_docs(40, seed=3)
    for text, spans in docs:
        a, ca = pii.scrub(text, replacement="fake")
        b, cb = pii.scrub(text, replacement="fake")
        assert a == b and ca == cb
        assert ca == Counter(t for *_, t in spans)
        for s, e, _ in spans:
            assert text[s:e] not in a


