"""The PII filter on real Danish text (bench/pii_realtext.py, issue #16): issue's targets per type,
on a draw the benchmark's published figures did not use (seed 7), and nothing found in the raw text.
The draw holds issue #24's classes: role addresses (mail@), sentences glued without a space, "at
www.", glued look-alike cues, barcodes, and phone tables whose only cue is the header."""

from __future__ import annotations

import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))

import pii_realtext as bench  # noqa: E402

from dfm_hpc.text import pii  # noqa: E402


def test_source_is_recorded_and_clean():
    readme = (bench.DATA.parent / "README.md").read_text(encoding="utf-8")
    assert "85faf86dc39f735722925fb1e822070d83649068" in readme and "CC BY-SA 4.0" in readme
    sents = bench.load_sentences()
    assert len(sents) == 1129
    assert [s for s in sents if pii.find(s)] == []  # the real text alone: no false positive


@pytest.mark.parametrize("ip_policy", ["all", "public"])
def test_targets_per_type(ip_policy):
    docs = bench.build(copies=2, seed=7)
    assert any(lay == "pdf" for *_, lay in docs) and any(lay == "plain" for *_, lay in docs)
    res, errors = bench.score(docs, ip_policy)
    for t, (prec, rec, gold, found) in res.items():
        assert gold >= 50, (t, gold)
        # issue #24: precision >= 0.99 per type, with its error classes among the look-alikes
        assert prec >= 0.99 and rec >= 0.95, (t, res[t], [e for e in errors if e[1] == t][:5])


def test_wrapping_keeps_gold_spans():
    import random

    text = "Kontakt os på telefon 22 33 44 55 eller skriv til formanden, der svarer hurtigst muligt på alt."
    gold = [(22, 33, "phone")]
    for seed in range(30):
        new, moved = bench._wrap(text, gold, random.Random(seed))
        s, e, _ = moved[0]
        assert new[s:e].replace("\n", " ") == "22 33 44 55"
        assert new.replace("-\n", "").replace("\n", " ") == text
