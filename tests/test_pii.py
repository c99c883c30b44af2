"""PII filter: detector precision/recall on planted Danish text, replacement, and the stage (sharded, resumable)."""

from __future__ import annotations

import ipaddress
import json
import random
import string
from collections import Counter
from pathlib import Path

import pytest

from dfm_hpc.text import pii

# --- a generator of Danish text with planted PII (also used by bench/pii_throughput.py) -----------
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_NAMES = ["mette", "søren", "lars", "anne", "jens", "kirsten", "mads", "ida", "bjørn", "åse", "peter", "line"]
_SURNAMES = ["hansen", "nielsen", "jensen", "pedersen", "andersen", "christensen", "larsen", "sørensen"]
_DOMAINS = ["gmail.com", "mail.dk", "hotmail.com", "kk.dk", "regionh.dk", "ku.dk", "sub.aarhus.dk", "firma-a-s.dk"]

TEMPLATES = {
    "cpr": ["Mit CPR-nummer er {x}.", "CPR: {x}", "Patienten ({x}) blev indlagt i går.",
            "Borgerens personnummer {x} fremgår af journalen.", "cpr.nr. {x}, bopæl Aarhus.",
            "Oplys venligst dit cpr-nr. ({x}) ved henvendelse.", "Personnr.: {x}; tlf. tid kl. 9-12."],
    "email": ["Skriv til {x} hvis du har spørgsmål.", "Kontakt: {x}", "Send ansøgningen til <{x}>.",
              "Du kan også maile ({x}) direkte.", "E-mail: {x}. Vi svarer inden for 2 dage.",
              "Hilsen Mette, {x}"],
    "phone": ["Ring på {x} mellem kl. 9 og 16.", "Tlf.: {x}", "Du kan sms'e til {x}.", "mobil {x}, efter kl. 17.",
              "Kontakt os på telefon {x} eller kom forbi.", "Vagttelefonen ({x}) er åben hele døgnet.",
              "Hotline: {x}."],
    "ip": ["Serveren svarer på {x}.", "Login fra IP-adressen {x} blev blokeret.",
           "Forbindelsen gik til {x} på port 8080.", "(IP {x}) forsøgte 14 gange.",
           "Gatewayen har adressen {x}, og DNS kører lokalt."],
    "iban": ["Beløbet overføres til {x}.", "IBAN: {x}", "Betal til konto {x} senest fredag.",
             "Husk at bruge {x}, når du betaler.", "Pengene står på {x} (Danske Bank)."],
}
NEGATIVES = [
    "Mødet er den {d}-{m}-{y} kl. 14.30.", "Fristen var {d}.{m}.{y}, og den er overskredet.",
    "Huset blev solgt for {p} kr.", "Prisen er kr. {q},00 inkl. moms.", "I {y} og {y2} steg priserne.",
    "Fra {y} til {y2} boede hun i Odense.", "Ordrenummer {o} er afsendt.", "Ordre nr. {o8} er bekræftet.",
    "Vi bor på Nørrebrogade {n}, 2100 København Ø.", "Postboks {n4}, 8000 Aarhus C.", "Opdater til version 3.{n}.4.",
    "Sagsnummer {bad10} er lukket.", "Nummeret {bad10} er ugyldigt.",
    "IBAN {badiban} er afvist (forkert kontrolciffer).",
    "Toget kører kl. {hh}:{mi}:00 fra spor {n}.", "CVR-nr. {o8} tilhører firmaet.", "ISBN 978-87-02-{n5}-6.",
    "Koordinaterne er 55.{n6}, 12.{n6}.", "Der var {n} deltagere og {n4} tilskuere.", "Kundenummer {o8} er oprettet.",
    "Python 3.11.{n} blev udgivet.", "Temperaturen var 21,5 grader kl. 9.15.",
    "Referencen {near} er ikke et CPR-nummer.", "Løbenummer {near} findes ikke.",
]
FILLER = ["Det regnede hele dagen i København.", "Vi ses på fredag til mødet.", "Tak for hjælpen med flytningen!",
          "Husk at tage madpakke med.", "Bestyrelsen mødes igen efter sommerferien.",
          "Kaffen var kold, men stemningen var god.", "Her er referatet fra generalforsamlingen."]


def _digits(rng, n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def gen_cpr(rng):
    mm = rng.randint(1, 12)
    yy = rng.randrange(0, 100, 4) if mm == 2 and rng.random() < 0.3 else rng.randint(0, 99)
    last = 29 if mm == 2 and yy % 4 == 0 else (28 if mm == 2 else _DAYS[mm - 1])
    dd = last if rng.random() < 0.1 else rng.randint(1, last)
    return f"{dd:02d}{mm:02d}{yy:02d}{rng.choice(['-', '', ' '])}{_digits(rng, 4)}", 0


def gen_email(rng):
    local = rng.choice([f"{rng.choice(_NAMES)}.{rng.choice(_SURNAMES)}",
                        f"{rng.choice(_NAMES)[0]}.{rng.choice(_SURNAMES)}{rng.randint(1, 99)}",
                        f"{rng.choice(_NAMES)}_{rng.randint(1, 9)}+nyhedsbrev",
                        f"{rng.choice(_NAMES)}{rng.randint(1950, 2005)}"])
    return f"{local}@{rng.choice(_DOMAINS)}", 0


def gen_phone(rng):
    d = str(rng.randint(2, 9)) + _digits(rng, 7)
    g2 = lambda sep: sep.join(d[i:i + 2] for i in range(0, 8, 2))  # noqa: E731
    return rng.choice([d, g2(" "), f"{d[:4]} {d[4:]}", "+45 " + g2(" "), "+45" + d, f"(+45) {d[:4]} {d[4:]}",
                       g2("-"), "0045 " + d, f"+45 {d[:4]} {d[4:]}"]), 0


def gen_ip(rng):
    kind = rng.random()
    if kind < 0.5:
        return ".".join(str(rng.randint(0, 255)) for _ in range(4)), 0
    groups = [rng.getrandbits(16) if rng.random() < 0.6 else 0 for _ in range(8)]
    groups[0] = groups[0] or 0x2001
    addr = ipaddress.IPv6Address(sum(g << (16 * (7 - i)) for i, g in enumerate(groups)))
    if kind < 0.7:
        return addr.exploded, 0
    if kind < 0.95:
        return addr.compressed, 0
    return rng.choice(["::1", f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}"]), 0


_BBAN = {"DK": "n14", "NO": "n11", "DE": "n18", "SE": "n20", "GB": "a4n14", "NL": "a4n10", "FI": "n14"}


def make_iban(rng, country, valid=True):
    spec, bban = _BBAN[country], ""
    for kind, n in ((spec[i], int(spec[i + 1:i + 3].rstrip("an"))) for i in range(len(spec)) if spec[i] in "an"):
        bban += "".join(rng.choice(string.ascii_uppercase if kind == "a" else string.digits) for _ in range(n))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    if not valid:  # any other check digits fail mod 97 (10 is invertible mod 97)
        check = rng.choice([c for c in range(2, 99) if c != check])
    return f"{country}{check:02d}{bban}"


def gen_iban(rng):
    r = rng.random()
    if r < 0.7:
        ib = make_iban(rng, rng.choice(list(_BBAN)))
        return (ib if rng.random() < 0.4 else " ".join(ib[i:i + 4] for i in range(0, len(ib), 4))), 0
    reg, acc = str(rng.randint(1, 9)) + _digits(rng, 3), _digits(rng, rng.randint(6, 10))
    lead, text = rng.choice([("reg. nr. ", f"{reg} kontonr. {acc}"), ("Reg.nr.: ", f"{reg}, konto {acc}"),
                             ("registreringsnummer ", f"{reg} og kontonummer {acc}"), ("", f"{reg}-{acc}")])
    return lead + text, len(lead)


GENERATORS = {"cpr": gen_cpr, "email": gen_email, "phone": gen_phone, "ip": gen_ip, "iban": gen_iban}


def _negative(rng):
    y = rng.randint(1950, 2030)
    while True:  # a 10-digit number whose first six digits are no date
        bad10 = _digits(rng, 10)
        if not pii.valid_date(int(bad10[:2]), int(bad10[2:4]), int(bad10[4:6])):
            break
    # CPR-shaped with a day that month does not have (31 Apr, 30 Feb, 29 Feb in a non-leap year)
    dd, mm, yy = rng.choice([(31, rng.choice([4, 6, 9, 11]), rng.randint(0, 99)), (30, 2, rng.randint(0, 99)),
                             (29, 2, rng.choice([y for y in range(100) if y % 4])), (0, rng.randint(1, 12), 50),
                             (15, 13, 80)])
    near = f"{dd:02d}{mm:02d}{yy:02d}{rng.choice(['-', '', ' '])}{_digits(rng, 4)}"
    p = f"{rng.randint(1, 999)}.{rng.randint(0, 999):03d}.{rng.randint(0, 999):03d}"
    badiban = make_iban(rng, "DK", valid=False)
    return rng.choice(NEGATIVES).format(
        d=f"{rng.randint(1, 28):02d}", m=f"{rng.randint(1, 12):02d}", y=y, y2=y + rng.randint(1, 9), p=p,
        q=f"{rng.randint(1, 99)}.{rng.randint(0, 999):03d}", o=_digits(rng, 7),
        o8=str(rng.randint(2, 9)) + _digits(rng, 7),
        n=rng.randint(1, 99), n4=rng.randint(1000, 9999), n5=_digits(rng, 5), n6=_digits(rng, 6), bad10=bad10,
        badiban=" ".join(badiban[i:i + 4] for i in range(0, 18, 4)), hh=f"{rng.randint(0, 23):02d}",
        mi=f"{rng.randint(0, 59):02d}", near=near)


def planted_docs(n_per_type: int, seed: int = 0, per_doc: int = 8):
    """[(text, [(start, end, type)])]: n_per_type planted items of every type among hard negatives and filler."""
    rng = random.Random(seed)
    kinds = [t for t in GENERATORS for _ in range(n_per_type)]
    rng.shuffle(kinds)
    docs, i = [], 0
    while i < len(kinds):
        parts, spans, pos = [], [], 0
        for _ in range(per_doc):
            r = rng.random()
            if r < 0.5 and i < len(kinds):
                t = kinds[i]
                i += 1
                value, lead = GENERATORS[t](rng)
                tpl = rng.choice(TEMPLATES[t])
                at = pos + tpl.index("{x}")
                spans.append((at + lead, at + len(value), t))
                sent = tpl.replace("{x}", value)
            else:
                sent = _negative(rng) if r < 0.8 else rng.choice(FILLER)
            parts.append(sent)
            pos += len(sent) + 1
        docs.append((" ".join(parts), spans))
    return docs


def score(docs, types=pii.TYPES):
    """{type: (precision, recall, planted, found)} with exact span matching."""
    gold, pred = Counter(), Counter()
    hit = Counter()
    for text, spans in docs:
        g, p = set(spans), set(pii.find(text, types))
        gold.update(t for *_, t in g)
        pred.update(t for *_, t in p)
        hit.update(t for *_, t in g & p)
    return {t: (hit[t] / max(pred[t], 1), hit[t] / max(gold[t], 1), gold[t], pred[t]) for t in types}


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


# --- the stage ------------------------------------------------------------------------------------
def _chat(rng, k):
    docs = planted_docs(2, seed=rng.randint(0, 10 ** 6), per_doc=3)
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": docs[i % len(docs)][0]} for i in range(k)]


def _make_run(root: Path, n_sft=23, n_dpo=11) -> Path:
    rng = random.Random(0)
    merge = root / "stages" / "merge"
    merge.mkdir(parents=True)
    with open(merge / "sft.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_sft):
            f.write(json.dumps({"messages": _chat(rng, 2 + i % 3), "message_tree_id": f"t{i}", "message_ids": [i]},
                               ensure_ascii=False) + "\n")
    with open(merge / "dpo.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_dpo):
            f.write(json.dumps({"prompt": _chat(rng, 1), "chosen": _chat(rng, 1)[:1], "rejected": _chat(rng, 1),
                                "message_tree_id": f"d{i}", "chosen_id": "c", "rejected_id": "r"},
                               ensure_ascii=False) + "\n")
    (root / "stages" / "pii").mkdir()
    return root


def _cfg(**pii_cfg):
    from omegaconf import OmegaConf

    from dfm_hpc.schema import Config

    return OmegaConf.merge(OmegaConf.structured(Config), {"pii": {"shards": 3, "chunk_size": 2, **pii_cfg}})


def _ctx(run: Path, worker=0, workers=1):
    from dfm_hpc.dist import DistEnv
    from dfm_hpc.job.rank import StageContext

    env = DistEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, node_rank=0, master_addr="127.0.0.1",
                  master_port=29500)
    return StageContext(run, run / "stages" / "pii", env, array_index=worker, array_size=workers)


def _expected(run: Path, replacement: str):
    """What the outputs must be: every input row, in order, each content scrubbed, and the counts."""
    views = {}
    for view in ("sft", "dpo"):
        rows, total, changed = [], Counter(), 0
        for line in (run / "stages" / "merge" / f"{view}.jsonl").read_text(encoding="utf-8").splitlines():
            row, c = json.loads(line), Counter()
            for key in (["messages"] if view == "sft" else ["prompt", "chosen", "rejected"]):
                for m in row[key]:
                    m["content"], n = pii.scrub(m["content"], pii.TYPES, replacement)
                    c.update(n)
            rows.append(row)
            total.update(c)
            changed += bool(c)
        views[view] = (rows, total, changed)
    return views


def test_stage_two_workers_assemble_in_order(tmp_path):
    from dfm_hpc.stages import pii as stage

    run = _make_run(tmp_path)
    cfg = _cfg()
    stage.run(cfg, _ctx(run, 0, 2))  # shards 0, 2, 4: not all done, nothing assembled yet
    out = run / "stages" / "pii"
    assert sorted(p.name for p in (out / "shards").glob("*.done")) == [f"shard-{s:05d}.done" for s in (0, 2, 4)]
    assert not (out / "sft.jsonl").exists() and not (out / "report.json").exists()
    stage.run(cfg, _ctx(run, 1, 2))  # shards 1, 3, 5: the last one assembles
    report = json.loads((out / "report.json").read_text())
    import pyarrow.parquet as pq

    total = Counter()
    for view, (rows, counts, changed) in _expected(run, "tags").items():
        got = [json.loads(line) for line in (out / f"{view}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert got == rows  # every row, in input order, content scrubbed, other columns as they were
        assert pq.read_table(out / f"{view}.parquet").to_pylist() == rows
        assert report["views"][view] == {"rows": len(rows), "changed_rows": changed,
                                         "counts": {t: counts.get(t, 0) for t in pii.TYPES}}
        total.update(counts)
    assert report["counts"] == {t: total[t] for t in pii.TYPES} and all(report["counts"].values())
    assert report["replacement"] == "tags" and report["types"] == list(pii.TYPES)
    scanned = sum(len(m["content"].encode()) for v in ("sft", "dpo")
                  for line in (run / "stages" / "merge" / f"{v}.jsonl").read_text(encoding="utf-8").splitlines()
                  for k in ("messages", "prompt", "chosen", "rejected") for m in json.loads(line).get(k, []))
    assert report["bytes"] == scanned
    assert "<CPR>" in (out / "sft.jsonl").read_text(encoding="utf-8")


def _outputs(run: Path):
    out = run / "stages" / "pii"
    files = {n: (out / n).read_bytes() for n in ("sft.jsonl", "dpo.jsonl", "sft.parquet", "dpo.parquet")}
    report = json.loads((out / "report.json").read_text())
    report.pop("seconds")
    return files, report


def test_resume_after_preemption_and_torn_line_is_byte_identical(tmp_path):
    from dfm_hpc.job.rank import Preempted
    from dfm_hpc.stages import pii as stage

    cfg = _cfg(replacement="fake")
    ref = _make_run(tmp_path / "ref")
    stage.run(cfg, _ctx(ref))

    run = _make_run(tmp_path / "run")
    ctx = _ctx(run)
    calls = []

    def stop_after_first_chunk():  # what USR2 during chunk 0 would do
        calls.append(1)
        return len(calls) > 1

    ctx.should_stop = stop_after_first_chunk
    with pytest.raises(Preempted):
        stage.run(cfg, ctx)
    shard0 = run / "stages" / "pii" / "shards" / "shard-00000.jsonl"
    assert len(shard0.read_text(encoding="utf-8").splitlines()) == 2  # one chunk of 2 rows on disk
    assert not (run / "stages" / "pii" / "shards" / "shard-00000.done").exists()
    with open(shard0, "a", encoding="utf-8") as f:
        f.write('{"chunk": 1, "n": {}, "b": 3, "row": {"messages": [{"role": "us')  # a kill mid-write
    stage.run(cfg, _ctx(run))
    assert _outputs(run) == _outputs(ref)
    assert "<CPR>" not in (run / "stages" / "pii" / "sft.jsonl").read_text(encoding="utf-8")


def test_changed_settings_refuse_to_resume(tmp_path):
    from dfm_hpc.job.rank import Preempted
    from dfm_hpc.stages import pii as stage

    run = _make_run(tmp_path)
    ctx = _ctx(run)
    ctx.stop_requested = True
    with pytest.raises(Preempted):
        stage.run(_cfg(), ctx)
    with pytest.raises(RuntimeError, match="another plan"):
        stage.run(_cfg(replacement="fake"), _ctx(run))


def test_parquet_corpus_keeps_other_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dfm_hpc.stages import pii as stage

    docs = planted_docs(10, seed=5, per_doc=4)
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(docs)), pa.int32()), "text": [d[0] for d in docs]}), src,
                   row_group_size=7)
    run = tmp_path / "run"
    (run / "stages" / "pii").mkdir(parents=True)
    stage.run(_cfg(input=str(src), chunk_size=5), _ctx(run))
    out = pq.read_table(run / "stages" / "pii" / "corpus.parquet")
    assert out.schema.field("id").type == pa.int32()
    assert out.column("id").to_pylist() == list(range(len(docs)))
    assert out.column("text").to_pylist() == [pii.scrub(d[0])[0] for d in docs]
    report = json.loads((run / "stages" / "pii" / "report.json").read_text())
    assert report["counts"] == {t: 10 for t in pii.TYPES}  # exactly what was planted
    assert report["views"]["corpus"]["rows"] == len(docs)


def test_tiny_corpus_input(tmp_path):
    from dfm_hpc.stages import pii as stage

    run = tmp_path / "run"
    (run / "stages" / "pii").mkdir(parents=True)
    stage.run(_cfg(input="tiny:corpus"), _ctx(run))
    report = json.loads((run / "stages" / "pii" / "report.json").read_text())
    assert report["views"]["corpus"]["rows"] == 400 and report["counts"] == {t: 0 for t in pii.TYPES}
    src = (run / "cache" / "danish_tiny.jsonl").read_text(encoding="utf-8")
    assert (run / "stages" / "pii" / "corpus.jsonl").read_text(encoding="utf-8") == src
