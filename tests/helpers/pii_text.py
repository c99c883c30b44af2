"""A generator of Danish text with planted PII, and exact-span scoring: the PII tests (tests/text/, tests/stages/)
and bench/pii_throughput.py use it."""

from __future__ import annotations

import ipaddress
import random
import string
from collections import Counter

from dfm_hpc.text import pii

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
