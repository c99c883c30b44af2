"""The PII filter's fast candidate search (dfm_hpc/text/pii_scan.py, issue #24): trying each
digit-led detector only at digit runs of the right length finds exactly what a scan of the whole
text finds."""

from __future__ import annotations

import random
import re

import pytest

from dfm_hpc.text import pii
from dfm_hpc.text.pii_scan import at, digit_runs

_ALPHABET = "0123456789012345 -–+()./:,@\n\tDKNOreg konto"


def _texts(n=1500, seed=3):
    rng = random.Random(seed)
    yield from ("", "abc", "1", "+4522334455", "(+45) 22 33 44 55", "0045 22334455", "DK5000400440116243",
                "reg. nr. 1234 kontonr. 1234567890", "010190-1234 og 192.168.1.1")
    for _ in range(n):
        yield "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 50)))


def test_digit_runs_are_the_maximal_runs():
    for t in _texts():
        assert digit_runs(t) == [m.span() for m in re.finditer(r"\d+", t)], t


@pytest.mark.parametrize("name, lengths", [("_CPR", (6, 10)), ("_CPR_LOOSE", (6, 10)), ("_PHONE", (2, 4, 8)),
                                           ("_IPV4", (1, 2, 3)), ("_REG_DASH", (4,)), ("_REG_LOOSE", (4,))])
def test_a_detector_tried_at_its_runs_finds_what_its_scan_finds(name, lengths):
    rx = getattr(pii, name)
    for t in _texts():
        starts = [s for s, e in digit_runs(t) if e - s in lengths]
        assert [m.span() for m in at(rx, t, starts)] == [m.span() for m in rx.finditer(t)], t


def test_an_iban_is_tried_two_letters_before_its_check_digits():
    for t in list(_texts()) + ["Konto DK50 0040 0440 1162 43 og NO9386011117947", "xDK5000400440116243"]:
        starts = [p - 2 for p, e in digit_runs(t) if e - p > 1 and p > 1 and t[p - 2:p].isupper()]
        assert [m.span() for m in at(pii._IBAN, t, starts)] == [m.span() for m in pii._IBAN.finditer(t)], t
