"""Cut a chat message (markdown, often with code) into pieces for machine translation.

Only natural-language text goes through the model (MADLAD-400); code, URLs, math, markup and
whitespace stay verbatim, so `reassemble(pieces, translations)` rebuilds the message with every
non-prose byte untouched, and with the pieces' own texts as translations it gives back the input
byte for byte.

Three passes, line-based like the markdown they read (standard library only, no markdown parser):

1. blocks: multi-line verbatim regions: fenced code (``` / ~~~, an unclosed fence runs to the
   end), indented code (4 columns past the enclosing list, after a blank line), $$ / \\[ math
   blocks, raw <pre>/<script>/<style> HTML blocks;
2. lines: the markdown structure at a line's start (indentation, `>` quotes, list markers and
   task boxes, `#` headers) and its trailing whitespace stay verbatim; link reference
   definitions are verbatim; in table rows the pipes are verbatim;
3. inline: code spans, math, link targets (`](url)`: the link text is translated), HTML tags,
   URLs and e-mail addresses are cut out; what is left is prose.

Prose is translated when it has a letter; its leading/trailing whitespace (and punctuation left
over from a cut-out token, like the "," in "`x`, which") goes to the verbatim neighbours; a run
longer than `max_chars` is packed by sentence (then by word) into pieces of at most `max_chars`.
Emphasis markers (`**`, `_`) inside prose stay in the translated text.
Known limits: inline code and math spanning several lines are not recognised (their lines are
treated as prose); soft-wrapped paragraphs are translated line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Piece", "segment", "reassemble"]


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool  # True: send through the model; False: keep verbatim


# --- block level -------------------------------------------------------------------------------

_EOL = re.compile(r"(\r\n|\r|\n)")
# A fence may follow quote and list markers ("> ```", "1. ```python"); any indentation is
# accepted, since fences inside list items are indented by the item's content column.
_FENCE_OPEN = re.compile(r"(?:[ \t]*>)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?(?P<fence>`{3,}|~{3,})(?P<info>.*)")
_FENCE_CLOSE = re.compile(r"[ \t>]*(?P<fence>`{3,}|~{3,})[ \t]*$")
_RAW_HTML_OPEN = re.compile(r"[ \t]*<(pre|script|style|textarea)\b", re.IGNORECASE)
_MATH_LINES = 200  # a $$ or \[ block closes within this many lines, or it is no block
_LIST_ITEM = re.compile(r"(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_TABLE_SEP = re.compile(r"[ \t]*(?:>[ \t]*)*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?[ \t]*)?$")

# --- line level --------------------------------------------------------------------------------

# Verbatim line start: indentation, nested quotes, then a list marker (+ task box) or a header.
_PREFIX = re.compile(
    r"[ \t]*(?:>[ \t]*)*"
    r"(?:(?P<list>(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$))(?:\[[ xX]\](?:[ \t]+|$))?"
    r"|(?P<header>#{1,6})(?:[ \t]+|$))?"
)
_HEADER_CLOSE = re.compile(r"[ \t]+#+$")  # "## Title ##": the closing hashes are markup
# "[1]: https://..." (a link reference definition): the whole line is markup.
_REF_DEF = re.compile(r"[ \t]*\[[^\]]+\]:[ \t]*<?\S*[/.:#]\S*(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?$")

# --- inline level ------------------------------------------------------------------------------

_INLINE_PARTS = [
    # code span: a backtick run closed by a run of the same length (CommonMark)
    r"(?<!`)(?P<tick>`+)(?!`).+?(?<!`)(?P=tick)(?!`)",
    # math: $$..$$, \[..\], \(..\), and $..$ with pandoc's rule against prices
    # ("$5 and $10" is not math: the closing $ must follow a non-space and not precede a digit)
    # (here and below, no closer is searched past the next opener: linear time on many unclosed)
    r"\$\$.+?\$\$|\\\[(?:(?!\\\[).)+?\\\]|\\\((?:(?!\\\().)+?\\\)",
    r"\$(?=[^\s$])(?:\\.|[^\\$])*?(?<=[^\s\\])\$(?!\d)",
    # link/image target "](url "title")" and reference "][ref]"; the link text stays prose
    r"\]\((?:<[^>]*>|(?:[^()\s]|\([^()\s]*\))*)(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?[ \t]*\)",
    r"\]\[[^\]]*\]",
    # HTML: comments, inline code-like elements with their content, tags, autolinks <url> <mail>
    r"<!--(?:(?!<!--).)*?-->",
    r"(?i:<(?P<raw>code|kbd|samp|pre|var|tt)\b[^>]*>(?:(?!<(?P=raw)\b).)*?</(?P=raw)\s*>)",
    r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>",
    r"<[A-Za-z][A-Za-z0-9+.-]*:[^\s<>]*>|<[^\s<>@]+@[^\s<>]+>",
    # bare URL, any scheme or www., to the next space: punctuation stuck to its end ("x.org).")
    # stays with it, verbatim, rather than starting the next translated piece
    r"\b(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)[^\s<>\"`|]+",
    r"(?<![\w.+-])(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
]
_INLINE = re.compile("|".join(_INLINE_PARTS))
_INLINE_TABLE = re.compile("|".join([*_INLINE_PARTS, r"(?<!\\)\|"]))  # table rows: pipes too
# Cheap pre-test: lines without any of these have no inline token (most prose lines).
_TRIGGER = re.compile(r"[`$\\<\]@|]|://|www\.")

# --- prose -------------------------------------------------------------------------------------

_LETTER = re.compile(r"[^\W\d_]")  # candidate letters; _has_letter confirms with str.isalpha
# Sentence end: . ! ? … (+ closing quotes/brackets) before whitespace; CJK full stops need none.
_SENT_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s)"
    r"|[\u3002\uff01\uff1f]+[\"'\u201d\u2019\u300d\u300f)]*"
)
_LEAD_PUNCT = set(".,;:!?)]")
_OPENERS = set("\"'\u201c\u2018\u201e\u00ab([")
# A "." after these does not end a sentence (the source messages are English).
_ABBREVIATIONS = frozenset(
    "e.g. i.e. etc. vs. cf. approx. ca. al. fig. mr. mrs. ms. dr. prof. st. jr. sr. inc. ltd. co. corp.".split()
)


def _has_letter(s: str) -> bool:
    m = _LETTER.search(s)
    while m is not None:  # \w also takes e.g. "²" and "½", which are not letters
        if s[m.start()].isalpha():
            return True
        m = _LETTER.search(s, m.start() + 1)
    return False


def _is_sentence_end(s: str, m: re.Match) -> bool:
    """Whether a _SENT_END match really ends a sentence (Latin punctuation only; CJK always)."""
    if s[m.start()] in "\u3002\uff01\uff1f":
        return True
    nxt = m.end()
    while nxt < len(s) and s[nxt].isspace():
        nxt += 1
    if nxt == len(s):
        return False
    c = s[nxt]
    if not (c.isupper() or c.isdigit() or c in _OPENERS):
        return False  # "e.g. this", "3 p.m. and"
    if s[m.start()] == "." and m.end() - m.start() == 1:
        word_start = m.start()
        while word_start and not s[word_start - 1].isspace():
            word_start -= 1
        word = s[word_start:m.end()]
        word = word.lstrip("(\"'\u201c\u2018*_")
        if word.lower() in _ABBREVIATIONS or (len(word) == 2 and word[0].isupper()):
            return False  # "Dr. Smith", "e.g. Python", initials "J. Smith"
    return True


def _wrap(s: str, a: int, b: int, max_chars: int) -> list[tuple[int, int]]:
    """Spans of s[a:b] of at most max_chars, cut at the last space/tab before the limit."""
    spans = []
    while b - a > max_chars:
        cut = max(s.rfind(" ", a + 1, a + max_chars + 1), s.rfind("\t", a + 1, a + max_chars + 1))
        if cut <= a:
            spans.append((a, a + max_chars))  # one word longer than the limit: hard cut
            a += max_chars
            continue
        end = cut
        while end > a and s[end - 1].isspace():
            end -= 1
        spans.append((a, end))
        a = cut
        while a < b and s[a].isspace():
            a += 1
    spans.append((a, b))
    return spans


def _split_long(s: str, max_chars: int) -> list[str]:
    """Cut stripped prose longer than max_chars into parts that concatenate to s: chunks of
    consecutive sentences (packed up to max_chars, for context) and the whitespace between."""
    units, start = [], 0
    for m in _SENT_END.finditer(s):
        if m.end() < len(s) and _is_sentence_end(s, m):
            nxt = m.end()
            while nxt < len(s) and s[nxt].isspace():
                nxt += 1
            units.extend(_wrap(s, start, m.end(), max_chars))
            start = nxt
    units.extend(_wrap(s, start, len(s), max_chars))

    chunks = [list(units[0])]
    for a, b in units[1:]:
        if b - chunks[-1][0] <= max_chars:
            chunks[-1][1] = b  # the next sentence still fits: same piece
        else:
            chunks.append([a, b])
    parts, pos = [], 0
    for a, b in chunks:
        parts += [s[pos:a], s[a:b]]
        pos = b
    parts.append(s[pos:])
    return parts


# --- the segmenter -----------------------------------------------------------------------------


class _Pieces:
    """Collects pieces; consecutive verbatim text is merged into one piece."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.pieces: list[Piece] = []
        self.pending: list[str] = []  # verbatim text not yet turned into a piece

    def keep(self, s: str) -> None:
        if s:
            self.pending.append(s)

    def _translate(self, s: str) -> None:
        if self.pending:
            self.pieces.append(Piece("".join(self.pending), False))
            self.pending = []
        self.pieces.append(Piece(s, True))

    def prose(self, s: str) -> None:
        """Text between verbatim tokens: translated if it has a letter; see the module docstring."""
        core = s.strip()
        if not core or not _has_letter(core):
            self.keep(s)
            return
        # The edges stay verbatim: whitespace, punctuation closing the token before (", which"
        # after a code span) and brackets opening the one after ("see (" before a URL).
        a, b = len(s) - len(s.lstrip()), len(s.rstrip())
        if s[a] in _LEAD_PUNCT:
            while s[a] in _LEAD_PUNCT or s[a].isspace():
                a += 1
        if s[b - 1] in "([":
            while s[b - 1] in "([" or s[b - 1].isspace():
                b -= 1
        self.keep(s[:a])
        if b - a <= self.max_chars:
            self._translate(s[a:b])
        else:
            for part in _split_long(s[a:b], self.max_chars):
                self.prose(part)  # each part is at most max_chars: no deeper recursion
        self.keep(s[b:])

    def inline(self, s: str, table: bool) -> None:
        if not _TRIGGER.search(s):
            self.prose(s)
            return
        rx = _INLINE_TABLE if table else _INLINE
        last = 0
        m = rx.search(s)
        while m is not None:
            a, b = m.span()
            self.prose(s[last:a])
            self.keep(s[a:b])
            last = b
            m = rx.search(s, b)
        self.prose(s[last:])

    def line(self, line: str, table: bool) -> None:
        body = line.rstrip()
        if body[:1] in " \t[" and _REF_DEF.match(body):
            self.keep(line)
            return
        m = _PREFIX.match(body)
        self.keep(body[:m.end()])
        content, close = body[m.end():], ""
        if m.group("header"):
            c = _HEADER_CLOSE.search(content)
            if c:
                content, close = content[:c.start()], content[c.start():]
        self.inline(content, table)
        self.keep(close)
        self.keep(line[len(body):])

    def finish(self) -> list[Piece]:
        if self.pending:
            self.pieces.append(Piece("".join(self.pending), False))
            self.pending = []
        return self.pieces


def _indent(line: str) -> int:
    """Leading whitespace width in columns (tabs to the next multiple of 4)."""
    lead = len(line) - len(line.lstrip(" \t"))
    return len(line[:lead].expandtabs(4)) if "\t" in line[:lead] else lead


def _fence_end(lines: list[str], i: int) -> int | None:
    """Index of the last line of the fenced block opening at line i, or None if none opens."""
    m = _FENCE_OPEN.match(lines[i])
    if m is None:
        return None
    fence = m.group("fence")
    if fence[0] == "`" and "`" in m.group("info"):
        return None  # "```x```" is an inline code span, not a fence
    marker = fence[0] * 3
    for j in range(i + 1, len(lines)):
        if marker in lines[j]:
            c = _FENCE_CLOSE.match(lines[j])
            if c and c.group("fence")[0] == fence[0] and len(c.group("fence")) >= len(fence):
                return j
    return len(lines) - 1  # unclosed: code to the end of the message


def _block_end(lines: list[str], i: int, stripped: str) -> int | None:
    """Last line of a math or raw-HTML block opening at line i, or None."""
    if stripped.startswith("$$") and stripped.count("$$") == 1:
        close = "$$"
    elif stripped.startswith("\\[") and "\\]" not in stripped:
        close = "\\]"
    elif stripped.startswith("<") and (m := _RAW_HTML_OPEN.match(stripped)):
        close = f"</{m.group(1).lower()}"
        for j in range(i, len(lines)):
            if close in lines[j].lower():
                return j
        return None  # "<script> tags are..." in prose: an unclosed tag is not worth a whole message
    else:
        return None
    for j in range(i + 1, min(i + _MATH_LINES, len(lines))):
        if close in lines[j]:
            return j
    return None  # an unclosed $$ is more likely a stray dollar than math: treat as prose


def segment(text: str, max_chars: int = 400) -> list[Piece]:
    """Cut `text` into verbatim and translatable pieces whose texts concatenate to `text`."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if "\r" in text:
        parts = _EOL.split(text)
        lines, eols = parts[0::2], [*parts[1::2], ""]
    else:
        lines = text.split("\n")
        eols = ["\n"] * (len(lines) - 1) + [""]
    out = _Pieces(max_chars)
    n = len(lines)
    prev_blank = True  # the start of the message counts as after a blank line
    list_indent: int | None = None  # content column of the list item we are in, None outside lists
    in_table = False
    i = 0
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            out.keep(line + eols[i])
            prev_blank, in_table = True, False
            i += 1
            continue

        end = _fence_end(lines, i) if ("```" in line or "~~~" in line) else None
        if end is None and stripped[0] in "$\\<":
            end = _block_end(lines, i, stripped)
        width = _indent(line)
        if end is None and prev_blank and width >= (list_indent or 0) + 4 and not _LIST_ITEM.match(stripped):
            # indented code: runs while lines are blank or indented as deep; not its trailing blanks
            end, j = i, i + 1
            while j < n and (not lines[j].strip() or _indent(lines[j]) >= (list_indent or 0) + 4):
                if lines[j].strip():
                    end = j
                j += 1
        if end is not None:
            if width == 0:
                list_indent = None  # an unindented block ends the list
            for j in range(i, end + 1):
                out.keep(lines[j] + eols[j])
            i, prev_blank, in_table = end + 1, False, False
            continue

        # list context decides what indented code is (4 columns past the item's content)
        m = _PREFIX.match(line)
        if m.group("list"):
            list_indent = len(line[:m.end()].expandtabs(4))
        elif m.group("header") or (prev_blank and width == 0):
            list_indent = None
        elif prev_blank and list_indent is not None and width < list_indent:
            list_indent = width  # a paragraph of an outer item

        table = False
        if "|" in line:
            if _TABLE_SEP.match(line):
                in_table = table = True
            elif in_table or stripped.lstrip(">").lstrip().startswith("|"):
                table = True
            elif i + 1 < n and "|" in lines[i + 1] and _TABLE_SEP.match(lines[i + 1]):
                table = True  # header row
        else:
            in_table = False

        out.line(line, table)
        out.keep(eols[i])
        prev_blank = False
        i += 1
    return out.finish()


def reassemble(pieces: list[Piece], translations: Iterable[str]) -> str:
    """The message with each translate=True piece replaced, in order, by its translation."""
    translations = list(translations)
    wanted = sum(p.translate for p in pieces)
    if len(translations) != wanted:
        raise ValueError(f"{wanted} translatable pieces but {len(translations)} translations")
    it = iter(translations)
    return "".join(next(it) if p.translate else p.text for p in pieces)
