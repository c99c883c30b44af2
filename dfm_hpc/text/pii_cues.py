"""The context the PII detectors read around a candidate (stdlib only): cue words that raise or lower
confidence, URL and link context, placeholders, netmasks and section numbers, and the joining of
numbers wrapped over a line break. Every rule here was written against a real-text miss or false
positive (issue #16); docs/pii.md lists them.

Cue checks look at a short window before the candidate: `*_BEFORE` regexes are anchored at the
window's end (the cue is right before the number, with only connectors such as `nr.`, `:`, `er`,
`[` in between), `*_NEAR` ones may be anywhere in it.
"""

from __future__ import annotations

import bisect
import re
from typing import List, Tuple

WINDOW = 40  # characters before a candidate that its cues are read from

# connectors between a cue word and its number: "CVR-nr.: ", "CVR-nummer er [", "RID: ", "Kreditornr. "
_CONNECT = r"(?:\s*(?:er|is|:|#|=|\[|\(|\.|-|no|nr))*\s*"  # one way to parse each blank: no backtracking blow-up
_NR = r"(?:[-.]?\s?(?:nr|nummer|numre|no|number|id)\b\.?)?"

# ids that have a phone's or a CPR number's shape: company (CVR/SE/P), creditor, signature and
# person ids, case and journal numbers, ISBN/ISSN, orders, invoices, customers, members...
_ID_STEMS = (r"cvr|se-|p-|kreditor|debitor|fi-kreditor|rid|pid|uid|id|sag|sags|j\.|j|jr|jnr|journal|isbn|issn|"
             r"ean|gln|ordre|order|faktura|invoice|kunde|customer|vare|post|bilag|medlem|medlems|løbe|serie|serial|"
             r"ref|reference|licens|lot|batch|abonnement|police|tracking|pakke|forsendelse|konto|kto|reg|akt|dok|"
             # product codes: a barcode (EAN-8) has a phone's shape ("Stregkode: 57012345", issue #24)
             r"stregkoden?|barcode|ean-?(?:8|13)|gtin|upc|sku|art|artikel|produkt|produktnummer|produktkode|varekode|"
             r"model|modelnummer")
LOOKALIKE_BEFORE = re.compile(rf"(?i)(?<![\w-])(?:{_ID_STEMS}){_NR}{_CONNECT}$")

ACCOUNT_BEFORE = re.compile(rf"(?i)(?<![\w-])(?:reg|registr\w*|konto\w*|kto|account|acct|bankkonto){_NR}{_CONNECT}$")
PHONE_NEAR = re.compile(
    r"(?i)(?<!\w)(?:tlf|tel|telefon\w*|\w*telefon\w*|mobil\w*|mob|ring\w*|sms\w*|hotline|fax|kontakt\w*|direkte|"
    r"phone|call|mobile|opkald|vagt\w*)(?!\w)|\($")
CPR_NEAR = re.compile(r"(?i)(?<!\w)(?:cpr|personn(?:ummer|r)|person-?nr|personnummer|cpr-nr|fødselsnummer)")
ACCOUNT_NEAR = re.compile(r"(?i)(?<!\w)(?:reg(?:\.|nr\b|\b)|registr\w*|konto\w*|kto\b|bank(?:en|konto\w*|kort)?\b|"
                          r"account\w*|acct|"
                          r"\w*betal\w*|overf[øo]r\w*|inds[æa]t\w*)")
IP_NEAR = re.compile(r"(?i)(?<!\w)(?:ip\w*|\w*adresse\w*|address\w*|server\w*|router\w*|gateway\w*|dns|host\w*|"
                     r"ping|lan|wan|dhcp|proxy|vpn|port|login|klient|client)(?!\w)")
# the cue right before a number ("mobil: ", "tlf. ", "("): "2012 2013" (two years) needs one
PHONE_BEFORE = re.compile(r"(?i)(?:tlf|tel|telefon\w*|\w*telefon\w*|mobil\w*|mob|ring\w*|sms\w*|hotline|fax|phone|"
                          r"kontakt\w*)\.?:?\s*(?:på\s*)?\(?$")
# a dotted quad after these is a section, version or figure number
SECTION_BEFORE = re.compile(r"(?i)(?<!\w)(?:afsnit|kapitel|kap|punkt|pkt|section|chapter|version|ver|release|"
                            r"build|firmware|bilag|§|stk|jf|figur|fig|tabel|table|side|trin|step|note)\.?[ \t]*$")
NETMASK_NEAR = re.compile(r"(?i)(?:netmask|net-?maske|subnet\w*|maske|mask)")
# "mellem 10000000 og 99999999", "fra 20000000 til ...": a form's valid range
RANGE_BEFORE = re.compile(r"(?i)(?<!\w)(?:mellem|fra|between|from)[ \t]+(?:\d{8}[ \t]+(?:og|til|and|to)[ \t]+)?$")
AMOUNT_AFTER = re.compile(r"(?i)[ \t]*(?:kr\b|kr\.|,-|dkk|euro|eur\b|%|procent|pct)")
# either: no phone number after it (one look at the tokens instead of two)
NO_PHONE_BEFORE = re.compile(f"(?:{LOOKALIKE_BEFORE.pattern[4:]})|(?:{RANGE_BEFORE.pattern[4:]})", re.I)
# "[37741175](https://datacvr.virk.dk/...)": a link into a company register
REGISTER_LINK = re.compile(r"\]\([^)\s]*(?:cvr|virk\.dk|proff|krak|firmainfo)", re.I)

# e-mail placeholders of forms and guides ("navn@abc.dk", "fornavn.efternavn@firma.dk")
# A local part that says "your name" is a placeholder whatever the domain; a generic one (mail@, email@)
# is a real role address ("mail@roklub.dk", issue #24) unless the domain is a placeholder too.
PLACEHOLDER_LOCALS = frozenset(
    "navn ditnavn dit.navn dit_navn fornavn efternavn fornavn.efternavn brugernavn din dinmail din.mail din.email "
    "dinemail minmail min.mail xxx xx yourname your.name firstname.lastname first.last firstname username someone "
    "initialer".split())
PLACEHOLDER_DOMAINS = frozenset("abc.dk xxx.dk xx.dk eksempel.dk domæne.dk domaene.dk ditdomæne.dk mitdomæne.dk "
                                "domain.com domain.dk firma.xx".split())
# words that end a Danish clause before "at" ("for at", "håber at"): "X at domain.tld" is no address then
AT_STOPWORDS = frozenset(
    "for og men så end uden ved om til må skal kan vil tror mener siger sagde håber sikre sikrer betyder viser "
    "fortæller oplyser vide synes føler regner forventer glad nødt klar svært godt vigtigt muligt nemt let "
    "begyndte begynder prøve prøver forsøge lov lyst tid mulighed ønsker ønske besluttet valgt ud op ind hjem "
    "lære lærer huske husk bede beder look "
    # English: "at" is a preposition there ("our website at www.x.dk", "available at x.dk")
    "us me website site homepage webpage web page online available found located more here there it them "
    "now today visit blog shop store tickets information details hjemmeside hjemmesiden".split())

_MASKS = frozenset(".".join(str((((1 << 32) - 1) ^ ((1 << (32 - n)) - 1)) >> s & 255) for s in (24, 16, 8, 0))
                   for n in range(8, 33))  # 255.0.0.0 ... 255.255.255.255
# well-known public DNS resolvers: public addresses, but nobody's personal data
RESOLVERS = frozenset("8.8.8.8 8.8.4.4 1.1.1.1 1.0.0.1 9.9.9.9 149.112.112.112 208.67.222.222 208.67.220.220 "
                      "2001:4860:4860::8888 2001:4860:4860::8844 2606:4700:4700::1111 2606:4700:4700::1001".split())


def before(text: str, s: int, n: int = WINDOW) -> str:
    return text[max(0, s - n):s]


_CLAUSE_END = re.compile(r"[;!?]|\.(?=\s+[A-ZÆØÅ])")


def clause(w: str) -> str:
    """The window from its last clause boundary on: a cue in an earlier sentence does not count."""
    last = None
    for last in _CLAUSE_END.finditer(w):
        pass
    return w[last.end():] if last else w


def in_url(text: str, s: int) -> bool:
    """Inside a URL: the whitespace-delimited token up to s holds '://' or 'www.'."""
    w = before(text, s, 200)
    tok = w[max(w.rfind(" "), w.rfind("\n"), w.rfind("\t")) + 1:]
    return "://" in tok or "www." in tok or "WWW." in tok


_GLUED = re.compile(r"(?<=[\d)\]])[-–/|;,](?=[^\W\d_])")


def ends_with(rx, w: str, words: int = 4) -> bool:
    """rx (anchored with $) matches from the start of one of w's last `words` tokens: a few match
    attempts instead of a search from every position of the window."""
    w = w.replace("-\n", "")  # "Journal-\nnummer": a cue hyphenated over a line break
    if "-" in w or "/" in w or "|" in w:  # "CVR:12345678-RID:": a cue glued to the number before it
        w = _GLUED.sub(" ", w)
    end = len(w)
    for _ in range(words):
        i = max(w.rfind(" ", 0, end), w.rfind("\n", 0, end), w.rfind("\t", 0, end))
        p = i + 1
        while p < end and not w[p].isalnum() and w[p] != "§":  # "(CVR", "[se"
            p += 1
        if p < end and rx.match(w, p):
            return True
        if i < 0:
            return False
        end = i
    return False


def degenerate(digits: str) -> bool:
    """99999999, 12345678, 98765432: form hints and examples, not anyone's number."""
    return digits == digits[0] * len(digits) or digits in "0123456789" or digits in "9876543210"


def is_netmask(value: str, text: str, s: int) -> bool:
    return value in _MASKS or (value.startswith("0.") and bool(NETMASK_NEAR.search(before(text, s))))


def is_section(text: str, s: int, e: int, value: str) -> bool:
    """'4.2.3.1 Oversigt', 'afsnit 2.1.3.4', 'version 1.2.0.7': a dotted quad that is no address
    (small octets before a capitalised word, or after a section word, and no IP cue before it)."""
    w = before(text, s)
    if ends_with(SECTION_BEFORE, w):
        return True
    if any(len(o) > 2 for o in value.split(".")) or IP_NEAR.search(w):
        return False
    return re.match(r"\s+[A-ZÆØÅ]", text[e:e + 3]) is not None  # a numbered heading


def placeholder_email(local: str, domain: str) -> bool:
    return local.lower() in PLACEHOLDER_LOCALS or domain.lower() in PLACEHOLDER_DOMAINS


def at_word_ok(word: str, domain: str) -> bool:
    """'jens.p at firma-as.dk': the word before ' at ' is no clause or English word, and the domain no
    web address ('our website at www.roklub.dk')."""
    return word not in AT_STOPWORDS and not domain.lower().startswith("www")


_RULE = re.compile(r"[-|:+= \t]*")  # "|---|---|", "-----"
_DIGIT = re.compile(r"\d")


def _cells(line: str) -> bool:
    """A table row: a tab, a bar or aligned blanks (two or more inside the line) break its columns."""
    return "\t" in line or "|" in line or "  " in line.strip(" ")


def table_cue(text: str, s: int, cue=PHONE_NEAR, rows: int = 12) -> bool:
    """The number at s is in a table row under a header that names it ("Navn  Funktion  Telefon",
    issue #24): going up over rows (lines with column breaks), blank lines and rules, the first line
    without digits is the header, and it holds the cue."""
    ls = text.rfind("\n", 0, s) + 1
    le = text.find("\n", s)
    if not _cells(text[ls:le if le >= 0 else len(text)]):
        return False
    end = ls - 1
    for _ in range(rows):
        if end < 0:
            return False
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end]
        if not _RULE.fullmatch(line):
            if not _cells(line):
                return False  # prose: no table
            if not _DIGIT.search(line):
                return cue.search(line) is not None
        end = start - 1
    return False


# --- numbers wrapped over a line break (text extracted from PDFs) ----------------------------------
# a line break between digits (or after a hyphen) joined to one space ("2234\n5678" -> "2234 5678"),
# or to nothing after a hyphen ("0828-\n2709" -> "0828-2709")
WRAP = re.compile(r"(?<=[\d)-])[ \t]*\r?\n[ \t]*(?=[\d(+]|[-–][ \t]?\d)")


class Unwrapped:
    """The text with wrapped numbers joined, and the map of its positions back to the original."""

    def __init__(self, text: str):
        out: List[str] = []
        self.cuts: List[int] = []  # positions in the joined text where a join ended
        self.shift: List[int] = []  # how much the original is ahead from there on
        pos, delta, length = 0, 0, 0
        for m in WRAP.finditer(text):
            rep = "" if text[m.start() - 1] == "-" else " "
            out += [text[pos:m.start()], rep]
            length += m.start() - pos + len(rep)
            delta += (m.end() - m.start()) - len(rep)
            self.cuts.append(length)
            self.shift.append(delta)
            pos = m.end()
        out.append(text[pos:])
        self.text = "".join(out)

    def orig(self, i: int) -> int:
        k = bisect.bisect_right(self.cuts, i)
        return i + (self.shift[k - 1] if k else 0)

    def crosses(self, s: int, e: int) -> bool:
        k = bisect.bisect_right(self.cuts, s)
        return k < len(self.cuts) and self.cuts[k] < e

    def back(self, spans) -> List[Tuple[int, int, str]]:
        """Spans of the joined text in original positions."""
        return [(self.orig(s), self.orig(e - 1) + 1, t) for s, e, t in spans]
