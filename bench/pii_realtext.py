"""PII filter on real Danish text (issue #16): precision and recall per type, and throughput.

    python bench/pii_realtext.py [--copies 10] [--seed 0] [--ip all] [--repeat 3]

Background text: the 1,129 sentences of the UD Danish DDT dev and test sets (bench/data/pii/, its
README gives source, commit and licence), in documents of 5 consecutive sentences. Into them go
realistic positives of every format issue #16 lists (synthetic digits, invented names) and the
look-alikes real text showed (CVR numbers in URLs and links, creditor/RID/case/journal numbers,
ISBN, form ranges, netmasks, section numbers, placeholders, years with counts...), either as a
sentence of their own or spliced into a real sentence. Half of the documents are laid out like text
extracted from a PDF: hard line wraps at 55-75 columns (which also break numbers and "X at Y"
addresses), hyphenated words, `/` joins and en dashes. Each copy draws new values and layouts.

Gold spans follow docs/pii.md: an account runs from the reg number to the end of the account;
an obfuscated e-mail from the local part to the end of the domain. Scores are exact span matches.
`--ip public` scores private, loopback and resolver addresses as negatives. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import string
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dfm_hpc.text import pii  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "pii" / "ddt_sentences.txt"
_FIRST = ["mette", "søren", "lars", "anne", "jens", "kirsten", "mads", "ida", "bjørn", "åse", "peter", "line", "niels"]
_LAST = ["hansen", "nielsen", "jensen", "pedersen", "andersen", "christensen", "larsen", "sørensen", "møller"]
_DOMAINS = [
    "gmail.com",
    "mail.dk",
    "hotmail.com",
    "roklub.dk",
    "kk.dk",
    "skolen.dk",
    "firma-as.dk",
    "dbu.dk",
    "jubii.dk",
]


def load_sentences(path: Path = DATA):
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _d(rng, n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def _phone8(rng):
    return str(rng.randint(2, 9)) + _d(rng, 7)


def _local(rng):
    f, last = rng.choice(_FIRST), rng.choice(_LAST)
    return rng.choice(
        [
            f"{f}.{last}",
            f"{f[0]}{last[0]}{rng.randint(1, 99)}",
            f"{f}{rng.randint(1950, 2005)}",
            f,
            f"{f}_{last}",
            f"{f}.{last[0]}",
        ]
    )


# --- positives: (template, value) -> the value's span is where {x} goes ----------------------------
def email(rng):
    loc, dom = _local(rng), rng.choice(_DOMAINS)
    form = rng.choice(["@", "@", "@", "(på)", "[at]", " [at] ", " (at) ", " at ", "(at)"])
    if rng.random() < 0.15:  # a role address with a generic local part (issue #24): real, no placeholder
        loc, form = rng.choice(["mail", "email", "e-mail", "post", "kontakt", "mail"]), "@"
    value = f"{loc}{form}{dom}"
    if form.strip() in ("[at]", "(at)") and rng.random() < 0.4:
        value = f"{loc}{form}" + dom.replace(".", " [dot] ")
    tpl = rng.choice(
        [
            "Skriv til {x} hvis du har spørgsmål.",
            "Kontakt: {x}",
            "Tilmelding sker til {x} senest fredag.",
            "Kassereren ({x}) sender en kvittering.",
            "E-mail: {x}",
            "Spørgsmål kan rettes til {x}.",
            "Send en mail til {x}",
            "Write to {x} for details.",
        ]
    )
    return tpl, value


def phone(rng):
    d = _phone8(rng)
    plain = [
        d,
        " ".join(d[i : i + 2] for i in range(0, 8, 2)),
        f"{d[:4]} {d[4:]}",
        "-".join(d[i : i + 2] for i in range(0, 8, 2)),
    ]
    cued = plain + [f"{d[:2]} {d[2:5]} {d[5:]}", f"{d[:4]} {d[4:6]} {d[6:]}"]
    pre = rng.choice(["", "", "", "+45 ", "+45", "0045 ", "(+45) "])
    if rng.random() < 0.6:  # a phone cue before the number
        tpl = rng.choice(
            [
                "Tlf. {x}",
                "Ring på {x} mellem kl. 9 og 15.",
                "Mobil: {x}",
                "Telefon {x} (hverdage)",
                "Du kan kontakte formanden på tlf. {x}.",
                "Hotline: {x}",
                "Kontakttelefon: {x}",
                "Phone: {x}",
                "sms til {x}",
            ]
        )
        return tpl, pre + rng.choice(cued)
    tpl = rng.choice(
        [
            "Hilsen Mette, {x}",
            "Vagten ({x}) er åben hele døgnet.",
            "Formand: Jens Hansen, {x}",
            "Vi træffes på {x} eller på kontoret.",
        ]
    )
    return tpl, pre + rng.choice(plain)


def phone_pair(rng):
    a, b = _phone8(rng), _phone8(rng)
    fa = rng.choice([a, f"{a[:4]} {a[4:]}", " ".join(a[i : i + 2] for i in range(0, 8, 2))])
    fb = rng.choice([b, f"{b[:4]} {b[4:]}", " ".join(b[i : i + 2] for i in range(0, 8, 2))])
    sep = rng.choice(["/", " / "])
    tpl = rng.choice(["Tlf. {a}{sep}{b}", "Ring {a}{sep}{b} efter kl. 16.", "Kontakt: {a}{sep}{b}"])
    return tpl, fa, sep, fb


def cpr(rng):
    mm = rng.randint(1, 12)
    dd = rng.randint(1, 28)
    yy = rng.randint(0, 99)
    base = f"{dd:02d}{mm:02d}{yy:02d}"
    cued = rng.random() < 0.7
    sep = rng.choice(["-", "", " "] + ([" - ", "–"] if cued else []))
    value = f"{base}{sep}{_d(rng, 4)}"
    if cued:
        tpl = rng.choice(
            [
                "CPR-nr.: {x}",
                "Mit cpr-nummer er {x}.",
                "Personnummer {x}",
                "cpr {x}, bopæl Aarhus.",
                "Oplys CPR ({x}) ved henvendelse.",
            ]
        )
    else:
        tpl = rng.choice(["Patienten ({x}) blev udskrevet.", "Ansøger: {x}", "Sagen gælder {x} i Odense."])
    return tpl, value


def ip(rng):
    r = rng.random()
    if r < 0.45:
        first = rng.choice([31, 46, 62, 77, 80, 85, 87, 91, 93, 130, 152, 176, 185, 188, 193, 194, 212, 217])
        v = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    elif r < 0.7:
        v = rng.choice(
            [
                f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"10.{rng.randint(0, 255)}.0.{rng.randint(1, 254)}",
                "127.0.0.1",
                "8.8.8.8",
                "1.1.1.1",
            ]
        )
    else:
        v = rng.choice(
            [
                f"2a00:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}",
                f"2001:67c:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::1",
                "::1",
                f"fe80::{rng.getrandbits(16):x}",
            ]
        )
    tpl = rng.choice(
        [
            "Serveren svarer på {x}.",
            "Login fra IP-adressen {x} blev blokeret.",
            "Forbindelsen gik til {x} på port 443.",
            "(IP {x}) forsøgte 14 gange.",
            "Routeren har adressen {x}.",
            "Your IP address is {x}.",
        ]
    )
    return tpl, v


def _iban(rng, country="DK"):
    bban = _d(rng, {"DK": 14, "NO": 11, "DE": 18, "SE": 20, "FI": 14}[country])
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    ib = f"{country}{check:02d}{bban}"
    return ib if rng.random() < 0.4 else " ".join(ib[i : i + 4] for i in range(0, len(ib), 4))


def bank(rng):
    """(template, lead, value): lead is text before the gold span that belongs to the value's wording."""
    if rng.random() < 0.3:
        return (
            rng.choice(["IBAN: {x}", "Beløbet overføres til {x}.", "Bank transfer to {x}"]),
            "",
            _iban(rng, rng.choice(["DK", "DK", "NO", "DE", "SE", "FI"])),
        )
    reg, acc = str(rng.randint(1, 9)) + _d(rng, 3), _d(rng, rng.randint(6, 10))
    forms = [
        ("reg.nr/Kontonummer: ", f"{reg} / {acc}"),
        ("", f"{reg} – {acc}"),
        ("kontonummer er ", f"{reg}-{acc}"),
        ("konto nr.", f"{reg} {acc}"),
        ("reg. / konto nr. ", f"{reg} / {acc}"),
        ("reg. nr. ", f"{reg} kontonr. {acc}"),
        ("Reg.nr.: ", f"{reg}, konto {acc}"),
        ("registreringsnummer ", f"{reg} og kontonummer {acc}"),
        ("", f"{reg}-{acc}"),
        ("Reg. no. ", f"{reg}, account no. {acc}"),
        ("Account number: ", f"{reg} {acc}"),
        ("bank account ", f"{reg}-{acc}"),
        ("Bankkonto: ", f"{reg} {acc}"),
        ("Reg. og kontonr.: ", f"{reg} {acc}"),
    ]
    lead, value = rng.choice(forms)
    if not lead:
        tpl = rng.choice(
            [
                "Indbetaling til {x} (Danske Bank).",
                "Kontingent betales på {x} inden 1. marts.",
                "Indbetal på konto {x}.",
            ]
        )
    else:
        tpl = rng.choice(
            [
                "Kontingentet indbetales på " + lead + "{x}.",
                lead + "{x}",
                "Gaver modtages gerne: " + lead + "{x}",
                "Betaling: " + lead + "{x} (mærk den med navn).",
            ]
        )
    return tpl, "", value


# --- look-alikes: never PII ----------------------------------------------------------------------
def lookalike(rng):
    c8, c10 = str(rng.randint(2, 9)) + _d(rng, 7), "10" + _d(rng, 8)
    n = rng.randint(1, 9)
    return rng.choice(
        [
            f"Se https://datacvr.virk.dk/enhed/virksomhed/{c8}?fritekst=x&id={c8}&soeg=1 for detaljer.",
            f"Foreningens CVR-nummer er [{c8}](https://datacvr.virk.dk/enhed/virksomhed/{c8}).",
            f"CVR-nr. {c8}",
            f"CVR: {c8} · SE-nr. {c8}",
            f"P-nummer: {c10}",
            f"Signeret med NemID. RID: {c8}",
            f"Kreditornr. {c8}",
            f"FI-kreditor: +71<{_d(rng, 15)}+{c8}<",
            f"Sagsnr. 20{rng.randint(10, 25)}-{_d(rng, 6)}",
            f"J.nr. {rng.randint(2010, 2025)}-{_d(rng, 7)}",
            f"Journalnummer {c8} er afsluttet.",
            f"ISBN 87-{_d(rng, 4)}-{_d(rng, 3)}-{n}",
            f"ISBN 978-87-{_d(rng, 2)}-{_d(rng, 5)}-{n}",
            "Nummeret skal være mellem 10000000 og 99999999.",
            f"I {rng.randint(2005, 2025)} {rng.randint(1000, 9999)} deltagere kom til stævnet.",
            "Netmasken er 255.255.255.0.",
            "subnet mask 255.255.0.0",
            f"Se afsnit {n}.{rng.randint(1, 9)}.{rng.randint(1, 9)}.{n} om tilskud.",
            f"Opdater til version {n}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)} i dag.",
            "Angiv e-mail (fx navn@abc.dk).",
            "Brug formatet fornavn.efternavn@kommune.dk",
            "Det er vigtigt at dr.dk viser det.",
            f"Ordrenummer {c8} er afsendt.",
            f"Prisen er {rng.randint(2, 99)} {_d(rng, 3)} {_d(rng, 3)} kr.",
            f"i årene 20{rng.randint(10, 19)} 20{rng.randint(20, 25)}",
            f"Mødet er den {rng.randint(1, 28)}.{rng.randint(1, 12)}.{rng.randint(2000, 2025)} kl. 19.30.",
            f"Postboks {rng.randint(1000, 9999)}, {rng.randint(1000, 9999)} Aarhus C",
            f"Kundenummer: {c8}",
            f"Medlemsnummer {c8}",
            f"Se https://apps.example.com/dk/app/navn/id{_d(rng, 10)}",
            f"Faktura nr. {c8} er betalt.",
        ]
        + lookalike24(rng, c8, c10)
    )


_CAPS = ["Politikerne", "Derfor", "Bagefter", "Holdet", "Samtidig", "Men", "Kommunen", "Formanden"]


def lookalike24(rng, c8, c10):
    """Issue #24's false-positive classes: "X at Y" over a sentence end without a space and before a
    web address; a look-alike cue glued to the number before it; a barcode or product number."""
    r8, dom, cap = str(rng.randint(2, 9)) + _d(rng, 7), rng.choice(_DOMAINS), rng.choice(_CAPS)
    ean = "57" + _d(rng, 6)
    return [
        f"Der er stadig lang vej at gå.{cap} vil se på det.",
        f"Han havde intet at skjule.{cap} var enige.",
        f"Der er ingen tid at spilde.{cap} går i gang nu.",
        f"Visit our website at www.{dom} for the programme.",
        f"Read more at www.{dom}/nyheder",
        f"Tickets are available at {dom}.",
        f"Find us online at www.{dom}.",
        f"Signeret af Jens Hansen, CVR:{c8}-RID:{r8}",
        f"CVR:{c8}-RID:{r8}",
        f"SE-nr.:{c8}-P-nr.:{c10}",
        f"Kreditor:{c8}/Ordre:{r8}",
        f"CVR {c8}|RID {r8}",
        f"Stregkode: {ean}",
        f"Stregkode {ean[:4]} {ean[4:]}",
        f"EAN-8: {ean}",
        f"Barcode: {ean}",
        f"Varenr. {r8}",
        f"Produktnummer: {r8}",
        f"Art.nr. {r8}",
    ]


_ROLES = ["Formand", "Kasserer", "Sekretær", "Træner", "Bestyrelsesmedlem", "Holdleder"]


def table(rng):
    """(text, spans): a contact table whose only phone cue is its header, one or more lines above
    the numbers (issue #24), laid out with aligned blanks, tabs, Markdown or PDF blank lines; or a
    table of amounts of the same 2-3-3 shape under a header that is no phone cue (no spans)."""
    phones = rng.random() < 0.7
    head = rng.choice(["Telefon", "Tlf.", "Mobil", "Tlf.nr.", "Telefonnummer", "Phone"]) if phones else \
        rng.choice(["Indbyggere", "Beløb (kr.)", "Budget", "Antal"])
    layout = rng.choice(["blanks", "tabs", "markdown", "pdf"])
    cols = ["Navn", "Funktion", head]
    rows = []
    for _ in range(rng.randint(1, 4)):
        d = _phone8(rng)
        num = rng.choice([f"{d[:2]} {d[2:5]} {d[5:]}"] * 3 + [f"{d[:4]} {d[4:6]} {d[6:]}", f"{d[:4]} {d[4:]}"])
        if not phones:
            num = f"{rng.randint(2, 9)}{_d(rng, 1)} {_d(rng, 3)} {_d(rng, 3)}"
        rows.append([f"{rng.choice(_FIRST).title()} {rng.choice(_LAST).title()}", rng.choice(_ROLES), num])
    if layout == "markdown":
        fmt = lambda r: "| " + " | ".join(r) + " |"  # noqa: E731
        lines = [fmt(cols), "|---|---|---|"]
    elif layout == "tabs":
        fmt = "\t".join  # noqa: E731
        lines = [fmt(cols)]
    else:
        fmt = lambda r: "".join(c.ljust(24) for c in r[:-1]) + r[-1]  # noqa: E731
        lines = [fmt(cols)] + ([""] if layout == "pdf" else [])
    text, spans = "\n".join(lines), []
    for r in rows:
        line = fmt(r)
        at = len(text) + 1 + line.rindex(r[-1])
        text += "\n" + line
        if phones:
            spans.append((at, at + len(r[-1]), "phone"))
    return text, spans


def section_heading(rng):
    return f"{rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)} Oversigt over tilskud"


# --- documents -----------------------------------------------------------------------------------
def _positive(rng):
    """(text, [(start, end, type)]) of one inserted phrase."""
    kind = rng.choices(["email", "phone", "pair", "cpr", "ip", "iban"], [1, 1, 0.3, 1, 1, 1.2])[0]
    if kind == "pair":
        tpl, a, sep, b = phone_pair(rng)
        pre, rest = tpl.split("{a}")
        text = pre + a + sep + b + rest.replace("{sep}{b}", "")
        s = len(pre)
        return text, [(s, s + len(a), "phone"), (s + len(a) + len(sep), s + len(a) + len(sep) + len(b), "phone")]
    if kind == "iban":
        tpl, _, value = bank(rng)
    else:
        tpl, value = {"email": email, "phone": phone, "cpr": cpr, "ip": ip}[kind](rng)
    s = tpl.index("{x}")
    typ = "iban" if kind == "iban" else kind
    return tpl.replace("{x}", value), [(s, s + len(value), typ)]


def _wrap(text: str, spans, rng, hyphen=True):
    """PDF-style: hard line breaks near 55-75 columns (replacing a space: positions stay), and some
    long words outside spans hyphenated over the break (positions after them shift by 2)."""
    width = rng.randint(55, 75)
    out, col, shift_at = [], 0, []
    words = text.split(" ")
    pos = 0
    inside = lambda p: any(s <= p < e for s, e, _ in spans)  # noqa: E731
    for i, w in enumerate(words):
        if i:
            if col + 1 + len(w) > width:
                if hyphen and len(w) > 9 and w.isalpha() and not inside(pos) and rng.random() < 0.3:
                    cut = len(w) // 2
                    out.append(" " + w[:cut] + "-\n" + w[cut:])
                    shift_at.append(pos + 1 + cut)
                    col = len(w) - cut
                    pos += 1 + len(w)
                    continue
                out.append("\n")
                col = 0
            else:
                out.append(" ")
                col += 1
            pos += 1
        out.append(w)
        col += len(w)
        pos += len(w)
    new = "".join(out)
    moved = [(s + 2 * sum(a <= s for a in shift_at), e + 2 * sum(a < e for a in shift_at), t) for s, e, t in spans]
    return new, moved


def build(copies: int = 10, seed: int = 0, sentences=None):
    """[(text, gold spans, layout)] over `copies` passes of the real sentences."""
    sents = sentences or load_sentences()
    rng = random.Random(seed)
    docs = []
    for _ in range(copies):
        for i in range(0, len(sents), 5):
            parts = list(sents[i : i + 5])
            inserts = []
            for _k in range(rng.choice([0, 1, 1, 2, 3])):
                inserts.append(_positive(rng))
            for _k in range(rng.choice([0, 1, 1, 2])):
                inserts.append((lookalike(rng), []))
            pdf = rng.random() < 0.5
            heading = pdf and rng.random() < 0.3
            for phrase, spans in inserts:
                j = rng.randint(0, len(parts))
                if spans and rng.random() < 0.3 and j < len(parts) and ", " in parts[j]:
                    k = parts[j].index(", ") + 2  # spliced into a real sentence
                    parts[j] = (parts[j][:k], phrase.rstrip("."), spans, parts[j][k:])
                else:
                    parts.insert(j, (phrase, spans))
            text, gold = "", []
            sep = "\n" if pdf else " "
            prev = None
            for p in parts:
                if text:
                    glued = isinstance(p, str) and isinstance(prev, str) and prev.endswith(".") and rng.random() < 0.1
                    # a sentence end without a space ("... vej at gå.Politikerne"), as scraped pages have
                    text += "" if glued else sep if pdf and rng.random() < 0.3 else " "
                prev = p
                if isinstance(p, str):
                    text += p
                elif len(p) == 2:
                    gold += [(len(text) + s, len(text) + e, t) for s, e, t in p[1]]
                    text += p[0]
                else:
                    head, phrase, spans, tail = p
                    at = len(text) + len(head)
                    gold += [(at + s, at + e, t) for s, e, t in spans]
                    text += head + phrase + ", " + tail
            if pdf:
                text, gold = _wrap(text, gold, rng)
                if heading:  # a numbered heading on its own line, as a PDF's table of contents has
                    h = section_heading(rng) + "\n"
                    text, gold = h + text, [(s + len(h), e + len(h), t) for s, e, t in gold]
            if rng.random() < 0.15:  # a table after the text (its layout is its own: not wrapped)
                tab, spans = table(rng)
                at = len(text) + 2
                text, gold = text + "\n\n" + tab, gold + [(at + s, at + e, t) for s, e, t in spans]
            docs.append((text, sorted(gold), "pdf" if pdf else "plain"))
    return docs


def policy_gold(docs, ip_policy: str):
    """Gold spans under an IP policy: with `public`, non-global and resolver addresses are negatives."""
    out = []
    for text, gold, layout in docs:
        keep = [
            g
            for g in gold
            if g[2] != "ip"
            or ip_policy == "all"
            or ip_policy == "public"
            and pii._ip_wanted(text[g[0] : g[1]], "public")
        ]
        out.append((text, keep, layout))
    return out


def score(docs, ip_policy="all", finder=None):
    """{type: (precision, recall, gold, found)}, exact spans; and the misses/false hits for reading."""
    gold, pred, hit = Counter(), Counter(), Counter()
    errors = []
    for text, spans, _layout in policy_gold(docs, ip_policy):
        g, p = set(spans), set(finder(text) if finder else pii.find(text, ip=ip_policy))
        gold.update(t for *_, t in g)
        pred.update(t for *_, t in p)
        hit.update(t for *_, t in g & p)
        errors += [("missed", t, text[max(0, s - 40) : e + 10]) for s, e, t in g - p]
        errors += [("false", t, text[max(0, s - 40) : e + 10]) for s, e, t in p - g]
    res = {t: (hit[t] / max(pred[t], 1), hit[t] / max(gold[t], 1), gold[t], pred[t]) for t in pii.TYPES}
    return res, errors


def best_of(fn, repeat):
    """(wall seconds, CPU seconds of this process), each the best of `repeat`: on a shared machine
    the CPU time is the per-core figure (the wall time includes waiting for a core)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def load_baseline(path: str):
    """Another version of dfm_hpc/text/pii.py (e.g. `git show REV:dfm_hpc/pii.py > old.py`), timed on the
    same texts for a relative figure that the machine's load does not blur."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pii_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ip", default="all", choices=pii.IP_POLICIES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--errors", type=int, default=0, help="print this many misses and false hits")
    ap.add_argument("--baseline", help="a stand-alone older pii.py to time on the same texts")
    a = ap.parse_args()
    docs = build(a.copies, a.seed)
    size = sum(len(t.encode()) for t, *_ in docs)
    raw = load_sentences()
    raw_docs = [" ".join(raw[i : i + 5]) for i in range(0, len(raw), 5)] * 20
    raw_size = sum(len(t.encode()) for t in raw_docs)
    print(
        f"{len(docs)} documents ({sum(lay == 'pdf' for *_, lay in docs)} PDF-style), {size / 1e6:.2f} MB, "
        f"{sum(len(g) for _, g, _ in docs)} planted items; IP policy {a.ip}; Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; one process\n"
    )
    base = load_baseline(a.baseline) if a.baseline else None
    print(f"| filter | text | MB | wall s | CPU s (best of {a.repeat}) | MB/s per core (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, texts, mb in (
        ("the DDT sentences alone (x20)", raw_docs, raw_size),
        ("the benchmark documents", [t for t, *_ in docs], size),
    ):
        runs = [("this", lambda: [pii.find(t, ip=a.ip) for t in texts])]
        if base:
            runs.append(("baseline", lambda: [base.find(t) for t in texts]))
        for who, fn in runs:
            wall, cpu = best_of(fn, a.repeat)
            print(f"| {who} | {name} | {mb / 1e6:.2f} | {wall:.2f} | {cpu:.2f} | {mb / 1e6 / cpu:.2f} |")
    res, errors = score(docs, a.ip)
    print("\n| type | planted | found | precision | recall |\n|---|---|---|---|---|")
    for t, (prec, rec, g, f) in res.items():
        print(f"| {t} | {g} | {f} | {prec:.4f} | {rec:.4f} |")
    if base:
        print("\nthe baseline on the same documents:\n")
        print("| type | planted | found | precision | recall |\n|---|---|---|---|---|")
        for t, (prec, rec, g, f) in score(docs, a.ip, base.find)[0].items():
            print(f"| {t} | {g} | {f} | {prec:.4f} | {rec:.4f} |")
    for kind, t, ctx in errors[: a.errors]:
        print(f"{kind:6} {t:5} {ctx!r}")


if __name__ == "__main__":
    main()
