"""The PII detectors on the formats and look-alikes that real Danish text showed (issue #16).

Every example is real-shaped with synthetic digits and invented names; none is anyone's data.
"""

from __future__ import annotations

import pytest

from dfm_hpc.text import pii


def _kinds(text, **kw):
    return [(text[s:e], t) for s, e, t in pii.find(text, **kw)]


FOUND = [
    # e-mail, plain and obfuscated
    ("Skriv til mette.k(på)roklub.dk inden fredag.", [("mette.k(på)roklub.dk", "email")]),
    ("Kasserer: kasserer.lise[at]roklub.dk", [("kasserer.lise[at]roklub.dk", "email")]),
    ("Kontakt lone [at] skolen [dot] dk for en tid.", [("lone [at] skolen [dot] dk", "email")]),
    ("Formanden træffes på jens.p at firma-as.dk eller på mødet.", [("jens.p at firma-as.dk", "email")]),
    ("Mail til bo (at) mail.dk", [("bo (at) mail.dk", "email")]),
    # phone: groupings, prefixes, '/' joins, wraps
    ("Tlf. 22 33 44 55 / 33 44 55 66", [("22 33 44 55", "phone"), ("33 44 55 66", "phone")]),
    ("ring 22334455/33445566 efter kl. 16", [("22334455", "phone"), ("33445566", "phone")]),
    ("Mobil: 60 789 123", [("60 789 123", "phone")]),
    ("Tlf. 6078 91 23", [("6078 91 23", "phone")]),
    ("Tlf.: 2233\n4455 (hverdage)", [("2233\n4455", "phone")]),
    ("kontakt os på telefon 22 33\n44 55.", [("22 33\n44 55", "phone")]),
    ("Tlf.: 2012 3456", [("2012 3456", "phone")]),
    ("Tlf. +45 22 33 44 55", [("+45 22 33 44 55", "phone")]),
    ("Vagttelefon: 4012 3456, CVR: 12345678", [("4012 3456", "phone")]),
    # cpr: strict shape, a cue admits looser ones; wrapped after a cue
    ("Mit CPR-nr. er 010190-1234.", [("010190-1234", "cpr")]),
    ("CPR-nr.: 010190 - 1234", [("010190 - 1234", "cpr")]),
    ("personnummer 010190-\n1234", [("010190-\n1234", "cpr")]),
    # bank accounts, Danish and English wording
    ("reg.nr/Kontonummer: 0828 / 0000270912", [("0828 / 0000270912", "iban")]),
    ("Bankkonto 0828 – 0000270912", [("0828 – 0000270912", "iban")]),
    ("Indbetal venligst på 0828 – 0000270912 inden 1. maj.", [("0828 – 0000270912", "iban")]),
    ("vores kontonummer er 0828-\n270912", [("0828-\n270912", "iban")]),
    ("vores kontonummer er 0828-270912", [("0828-270912", "iban")]),
    ("konto nr.5371 245678", [("5371 245678", "iban")]),
    ("reg. / konto nr. 5371 / 245678", [("5371 / 245678", "iban")]),
    ("Reg. no. 1234, account no. 12345678", [("1234, account no. 12345678", "iban")]),
    ("Account number: 1234 1234567890", [("1234 1234567890", "iban")]),
    ("Please transfer to bank account 1234-12345678.", [("1234-12345678", "iban")]),
    ("Reg.nr. og kontonr.: 1234 0012345678", [("1234 0012345678", "iban")]),
    ("Konto: 0101901234", [("0101901234", "iban")]),  # the account cue wins over CPR
    ("Kontonummer:\n5371 245678", [("5371 245678", "iban")]),
    # issue #24: a generic local part with a real domain is a role address, no placeholder
    ("Skriv til mail@roklub.dk eller ring.", [("mail@roklub.dk", "email")]),
    ("E-mail: e-mail@firma-as.dk", [("e-mail@firma-as.dk", "email")]),
    ("Kontakt: email@skolen.dk.Næste møde er i maj.", [("email@skolen.dk", "email")]),
    ("Skriv til lone at skolen.dk.Vi svarer hurtigt.", [("lone at skolen.dk", "email")]),
    # issue #24: a phone number under a table header, one or more rows below it
    ("Navn            Funktion        Telefon\nJens Hansen     Formand         60 789 123\n"
     "Mette Holm      Kasserer        4012 34 56", [("60 789 123", "phone"), ("4012 34 56", "phone")]),
    ("| Navn | Tlf. |\n|---|---|\n| Ida Møller | 42 826 605 |", [("42 826 605", "phone")]),
    ("Navn\tMobil\n\nSøren Berg\t31 456 789", [("31 456 789", "phone")]),
]

NOT_FOUND = [
    # e-mail placeholders and clauses with "at"
    "Angiv din e-mail (fx navn@abc.dk).", "Brug formatet fornavn.efternavn@kommune.dk.",
    "Det er vigtigt at dr.dk viser det.", "Læs mere på dr.dk eller på tv2.dk.",
    # company, creditor, signature, case, journal and book numbers
    "Se https://datacvr.virk.dk/enhed/virksomhed/38016938?fritekst=x&id=38016938&soeg=1 for detaljer.",
    "Vores CVR-nummer er [37741175](https://datacvr.virk.dk/enhed/virksomhed/37741175).",
    "Se [37741175](https://datacvr.virk.dk/enhed/virksomhed/37741175).",
    "CVR 37741175, SE-nr. 22334455, P-nummer 1012345678.",
    "Signeret digitalt. RID: 29741234", "PID: 9208-2002-2-123456789012", "Kreditornr. 81135045",
    "Indbetalingskort +71<000000000000000+81135045<", "Sagsnr. 2023-123456 og j.nr. 2019-1234567",
    "Journalnummer 22334455 er lukket.", "ISBN 87-7714-123-4 og ISBN 0101901234",
    "Sagsnr. 0101901234", "Åbn https://apps.example.com/dk/app/navn/id0101901234 på telefonen.",
    "https://example.dk/app?appid=0101901234",
    # form ranges, placeholders, years with counts, amounts
    "Nummeret skal være mellem 10000000 og 99999999.", "Indtast 8 cifre, fx 12345678 eller 99999999.",
    "I 2018 1500 deltagere ved løbet.", "Prisen er 25 000 000 kr.", "i årene 2012 2013 steg den",
    "Der var 22 345 678 indbyggere.",
    # IPv4 look-alikes: netmasks, section and version numbers
    "netmask 255.255.255.0 og 255.255.0.0", "Se afsnit 4.2.3.1 om reglerne.", "4.2.3.1 Oversigt\nTeksten.",
    "Indhold\n4.2.3.1 Oversigt over tilskud", "Opdater til version 1.2.0.7.", "punkt 2.1.3.4 i vedtægterne",
    # issue #24: "X at Y" over a sentence end without a space, and before a web address
    "Der er lang vej at gå.Politikerne vil ikke.", "Han havde intet at skjule.Derfor gik han.",
    "Visit our website at www.roklub.dk for the programme.", "Read more at www.kk.dk/nyheder",
    "Tickets are available at billetlugen.dk.", "Find us online at www.dbu.dk.",
    "Angiv e-mail som fx mail@abc.dk.",  # a generic local part with a placeholder domain
    # issue #24: a look-alike cue glued to the number before it
    "Signeret af Jens Hansen, CVR:29741234-RID:42151234", "CVR 37741175|RID 29741234",
    "Kreditor:81135045/Ordre:42151234", "SE-nr.:37741175-P-nr.:1012345678",
    # issue #24: barcodes and product numbers
    "Stregkode: 57012345", "Stregkode 5701 2345", "EAN-8: 57012345", "Barcode: 57012345",
    "Art.nr. 42151234", "Produktnummer: 42151234",
    # a table of amounts of a phone's 2-3-3 shape: its header is no phone cue
    "Kommune         Indbyggere\nAarhus          34 567 890\nOdense          20 123 456",
]


@pytest.mark.parametrize("text, want", FOUND)
def test_found(text, want):
    assert _kinds(text) == want


@pytest.mark.parametrize("text", NOT_FOUND)
def test_not_found(text):
    assert _kinds(text) == []


def test_ip_policy():
    text = "Routeren 192.168.1.1, DNS 8.8.8.8, serveren 77.66.12.34 og ::1 samt 2a00:1450:4001:82a::200e."
    assert [v for v, _ in _kinds(text)] == ["192.168.1.1", "8.8.8.8", "77.66.12.34", "::1", "2a00:1450:4001:82a::200e"]
    # public: global addresses only, and not the well-known resolvers (nobody's personal data)
    assert [v for v, _ in _kinds(text, ip="public")] == ["77.66.12.34", "2a00:1450:4001:82a::200e"]
    assert _kinds(text, ip="off") == []
    with pytest.raises(ValueError, match="IP policy"):
        pii.find(text, ip="private")
    # netmasks and section numbers under every policy
    for policy in pii.IP_POLICIES:
        assert _kinds("maske 255.255.255.0, afsnit 4.2.3.1", ip=policy) == []


def test_wrapped_numbers_need_a_cue():
    # a line break between two numbers in a table is no phone number...
    assert _kinds("Antal\n2233\n4455\n") == []
    # ...after a phone cue it is; the replacement takes the line break with it
    new, counts = pii.scrub("Tlf.: 2233\n4455 (hverdage)")
    assert new == "Tlf.: <PHONE> (hverdage)" and counts == {"phone": 1}


def test_scrub_obfuscated_and_accounts():
    new, counts = pii.scrub("Skriv til mette.k(på)roklub.dk, reg.nr/Kontonummer: 0828 / 0000270912.")
    assert new == "Skriv til <EMAIL>, reg.nr/Kontonummer: <IBAN>."
    assert counts == {"email": 1, "iban": 1}
    fake, _ = pii.scrub("konto nr.5371 245678", replacement="fake")
    assert fake.startswith("konto nr.") and fake != "konto nr.5371 245678"
    assert _kinds(fake) == [(fake[len("konto nr."):], "iban")]  # a fake account is found again


def test_long_blank_runs_are_no_separator_and_stay_linear():
    """PDF text has long runs of blanks. An unbounded \\s* next to another one made this input take
    9 s (quadratic backtracking); the separators are now a few blanks and at most one line break."""
    blanks = " " * 20000
    text = f"reg. nr. 1234{blanks}kontonr. 12345678 og igen: reg. nr. 1234 kontonr. 12345678"
    # the account word alone still takes its account; the blank run joins nothing
    assert [(text[s:e], t) for s, e, t in pii.find(text)] == [("12345678", "iban"), ("1234 kontonr. 12345678", "iban")]
    assert pii.find("12\n" * 20000) == [] and pii.find("1234-\n" * 5000) == []
