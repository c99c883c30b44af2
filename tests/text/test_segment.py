"""The translation segmenter: exact round trip, code/URLs never translated, sentence packing."""

from __future__ import annotations

import random

import pytest

from dfm_hpc.text.segment import Piece, reassemble, segment


def translated_spans(text: str, pieces: list[Piece]) -> list[tuple[int, int]]:
    """(start, end) in `text` of each translate=True piece; pieces concatenate to text."""
    spans, pos = [], 0
    for p in pieces:
        if p.translate:
            spans.append((pos, pos + len(p.text)))
        pos += len(p.text)
    assert pos == len(text)
    return spans


def check(text: str, protected: list[str] = (), max_chars: int = 400) -> list[Piece]:
    """Every property the segmenter promises, for one input; returns the pieces."""
    pieces = segment(text, max_chars)
    # the core invariant: identity translations give back the input, byte for byte
    assert reassemble(pieces, [p.text for p in pieces if p.translate]) == text
    assert "".join(p.text for p in pieces) == text
    for a, b in zip(pieces, pieces[1:]):
        assert a.translate or b.translate, "consecutive verbatim pieces are merged"
    for p in pieces:
        assert p.text, "no empty piece"
        if p.translate:
            assert p.text == p.text.strip(), repr(p.text)
            assert any(c.isalpha() for c in p.text), repr(p.text)
            assert len(p.text) <= max_chars, (len(p.text), max_chars)
    # protected strings (code, URLs, ...) never overlap a translated piece
    spans = translated_spans(text, pieces)
    for tok in protected:
        start = text.find(tok)
        assert start >= 0, f"test bug: {tok!r} not in the input"
        while start >= 0:
            end = start + len(tok)
            hit = [text[a:b] for a, b in spans if a < end and start < b]
            assert not hit, f"{tok!r} overlaps translated {hit!r}"
            start = text.find(tok, start + 1)
    # a "translation" that changes every translated byte leaves all protected strings intact
    out = reassemble(pieces, [f"<<{p.text.upper()}>>" for p in pieces if p.translate])
    for tok in protected:
        assert out.count(tok) >= text.count(tok), tok
    return pieces


def translatable(text: str, max_chars: int = 400) -> list[str]:
    return [p.text for p in check(text, max_chars=max_chars) if p.translate]


# --- hand-written cases: (text, strings that must stay verbatim) ------------------------------

CASES = {
    "empty": ("", []),
    "only spaces": ("   \n\t\n  ", []),
    "plain sentence": ("Hello, how are you today?", []),
    "trailing whitespace": ("Hello there.   \nNext line\t\n", []),
    "crlf": ("First line.\r\nSecond line with `code_x()`.\r\n\r\nThird.\r\n", ["`code_x()`"]),
    "lone cr": ("Old mac\rline endings\r", []),
    "danish": ("Rødgrød med fløde på æbleskiver, Århus og Ærø.", []),
    "emoji only": ("🎉🎉 👍", []),
    "numbers only": ("3.14 + 42 = 45.14 !!!", []),
    "emoji in text": ("Great job 🎉 you did it!", []),
    "fence python": ("Try this:\n\n```python\ndef hello():\n    print('hello world')\n```\n\nDone.",
                     ["```python\ndef hello():\n    print('hello world')\n```"]),
    "fence no lang": ("Run:\n```\nls -la /tmp\n```\n", ["```\nls -la /tmp\n```"]),
    "fence tilde": ("Code:\n~~~js\nconsole.log('hi there')\n~~~\nAfter the code.", ["~~~js\nconsole.log('hi there')\n~~~"]),
    "fence longer close": ("````md\n```python\nx = 1\n```\nstill inside\n````\nOutside now.",
                           ["````md\n```python\nx = 1\n```\nstill inside\n````"]),
    "unclosed fence": ("Here is the start:\n```bash\necho hello world\nmore words here", ["```bash\necho hello world\nmore words here"]),
    "fence crlf": ("Text.\r\n```c\r\nint main(void) { return 0; }\r\n```\r\nEnd.", ["```c\r\nint main(void) { return 0; }\r\n```"]),
    "fence in list": ("1. Install it:\n\n   ```bash\n   pip install numpy pandas\n   ```\n2. Then use it.",
                      ["   ```bash\n   pip install numpy pandas\n   ```"]),
    "fence in quote": ("> ```\n> some code here\n> ```\n", ["some code here"]),
    "only code": ("```\nfor i in range(10):\n    print(i)\n```", ["for i in range(10):\n    print(i)"]),
    "inline code": ("Use `git status` and ``a ` b`` to check.", ["`git status`", "``a ` b``"]),
    "triple backtick inline": ("Wrap it as ```inline code``` please.", ["```inline code```"]),
    "unmatched backtick": ("A lone ` backtick in text.", []),
    "bare urls": ("See https://example.com/a?b=c&d=e, http://x.org and www.dr.dk/nyheder.",
                  ["https://example.com/a?b=c&d=e", "http://x.org", "www.dr.dk/nyheder"]),
    "url in parens": ("Read the docs (https://docs.python.org/3/library/re.html) first.",
                      ["https://docs.python.org/3/library/re.html"]),
    "url with parens": ("See https://en.wikipedia.org/wiki/Python_(programming_language) now.",
                        ["https://en.wikipedia.org/wiki/Python_(programming_language)"]),
    "ftp url": ("Get it from ftp://ftp.example.org/pub/file.tar.gz today.", ["ftp://ftp.example.org/pub/file.tar.gz"]),
    "only url": ("https://huggingface.co/datasets/OpenAssistant/oasst2", ["https://huggingface.co/datasets/OpenAssistant/oasst2"]),
    "markdown link": ("Check [the documentation](https://docs.example.com/start \"Title\") for details.",
                      ["](https://docs.example.com/start \"Title\")"]),
    "image": ("![A cute cat](https://img.example.com/cat.png)", ["](https://img.example.com/cat.png)"]),
    "reference link": ("See [the guide][guide].\n\n[guide]: https://example.com/guide", ["][guide]", "[guide]: https://example.com/guide"]),
    "autolink": ("Visit <https://example.com/page> or mail <info@example.dk>.", ["<https://example.com/page>", "<info@example.dk>"]),
    "email": ("Write to jens.hansen+dfm@alexandra.dk or mailto:hej@example.com.",
              ["jens.hansen+dfm@alexandra.dk", "mailto:hej@example.com"]),
    "html": ("Line one<br>line two <span class=\"x\">styled</span> and <!-- a comment -->.",
             ["<br>", "<span class=\"x\">", "</span>", "<!-- a comment -->"]),
    "html code": ("Press <kbd>Ctrl</kbd> and run <code>make all</code>.", ["<kbd>Ctrl</kbd>", "<code>make all</code>"]),
    "unclosed script tag is prose": ("<script> tags run code in the page.\nBe careful.", ["<script>"]),
    "pre block": ("Output:\n<pre>\nsome output text\n</pre>\nDone.", ["<pre>\nsome output text\n</pre>"]),
    "inline math": ("The area is $A = \\pi r^2$ and $x$ is small.", ["$A = \\pi r^2$", "$x$"]),
    "display math": ("Solve\n$$\n\\int_0^1 x\\,dx = \\frac{1}{2}\n$$\nfor fun.", ["$$\n\\int_0^1 x\\,dx = \\frac{1}{2}\n$$"]),
    "latex brackets": ("Inline \\(a+b\\) and block:\n\\[\n\\sum_i x_i\n\\]\nend.", ["\\(a+b\\)", "\\[\n\\sum_i x_i\n\\]"]),
    "prices are not math": ("It costs $5 and $10, or $20-$30 in total.", []),
    "headers": ("# Title\n## Sub title ##\n###### Deep\n#NotAHeader", []),
    "lists nested": ("- one\n  - two\n    - three\n* star\n+ plus\n1. first\n2) second\n- [ ] todo\n- [x] done", []),
    "blockquote": ("> Quoted text here.\n> > Nested quote.\n>\n> Back.", []),
    "table": ("| Name | Value |\n|:-----|------:|\n| Alpha | `a|b` |\n| Beta | https://x.dk |\n",
              ["|:-----|------:|", "`a|b`", "https://x.dk"]),
    "table no outer pipes": ("Name | Value\n--- | ---\nOne | Two", ["--- | ---"]),
    "indented code": ("Example:\n\n    x = compute(y)\n    print(x)\n\nText again.", ["    x = compute(y)\n    print(x)"]),
    "tab indented code": ("Example:\n\n\tmake build\n\nText.", ["\tmake build"]),
    "list continuation is not code": ("1. Item one\n\n    Continuation paragraph of item one.", []),
    "code in list item": ("- Step one:\n\n        pip install dfm\n\nNext paragraph.", ["        pip install dfm"]),
    "horizontal rule": ("Above\n\n---\n\n***\nBelow", ["---", "***"]),
    "setext header": ("Title\n=====\nSub\n-----", ["=====", "-----"]),
    "bold": ("This is **very important** and _emphasised_.", []),
    "mixed unicode": ("Naïve café — “quoted” … 中文句子。 Ελληνικά.", []),
    "abbreviation": ("Use tools, e.g. Python, i.e. a language. Dr. Smith agrees.", []),
    "link text with code": ("[`segment()` docs](https://example.com/seg)", ["`segment()`", "](https://example.com/seg)"]),
}


@pytest.mark.parametrize("name", CASES)
def test_case(name):
    text, protected = CASES[name]
    check(text, protected)
    check(text, protected, max_chars=20)


def test_examples_of_what_is_translated():
    assert translatable("") == []
    assert translatable("## Heading\n- item *one*\n> quote") == ["Heading", "item *one*", "quote"]
    assert translatable("See [the docs](https://x.org/a) for more.") == ["See [the docs", "for more."]
    assert translatable("Run `make test` now") == ["Run", "now"]
    assert translatable("| a b | c |\n|---|---|\n| d | 42 |") == ["a b", "c", "d"]
    assert translatable("```\ncode here\n```") == []
    assert translatable("Hi 🎉\n\n🎉🎉") == ["Hi 🎉"]  # emoji inside prose stays in it
    assert translatable("Hello  \r\n") == ["Hello"]
    assert translatable("<script> tags run code.") == ["tags run code."]
    assert translatable("## Title ##\n#hashtag") == ["Title", "#hashtag"]
    assert translatable("Name | Value\n--- | ---\nOne | Two\n\nA | B") == ["Name", "Value", "One", "Two", "A | B"]
    assert translatable("```\ncode\n~~~\nstill code\n````\nText.") == ["Text."]  # same char, as long or longer
    assert translatable("~~~\ncode\n```\n~~~\nText.") == ["Text."]
    # indented code is 4 columns past the list item's content, else it continues the item
    assert translatable("1. Item one\n\n    More about item one.") == ["Item one", "More about item one."]
    assert translatable("1. Item one\n\n       code_here()\n\nText.") == ["Item one", "Text."]
    assert translatable("- Item\n\nParagraph.\n\n    code_here()") == ["Item", "Paragraph."]
    assert translatable("    indented at the start is code (CommonMark)") == []
    # punctuation stuck to a cut-out token stays verbatim with it, not at a translated piece's edge
    assert translatable("Visit https://x.org/a. Then go.") == ["Visit", "Then go."]
    assert translatable("Call `f()`, which returns (`None`) here.") == ["Call", "which returns", "here."]
    assert translatable("Read the (https://x.org/b) page, (see `y`).") == ["Read the", "page, (see"]


# --- randomized documents from the same building blocks ---------------------------------------

WORDS = ("the model translates chat messages into Danish with care and some words like "
         "æble øl får på hygge smørrebrød Über café naïve data quickly really").split()
EMOJI = ["🎉", "👍", "🤖", "❤️"]


class Doc:
    """A random markdown message and the strings in it that must never be translated."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.k = 0
        self.protected: list[str] = []

    def uid(self) -> int:
        self.k += 1
        return self.k

    def keep(self, s: str) -> str:
        self.protected.append(s)
        return s

    def sentence(self) -> str:
        r = self.r
        s = " ".join(r.choices(WORDS, k=r.randint(1, 14)))
        s = s[0].upper() + s[1:]
        if r.random() < 0.2:
            s = s.replace(" ", " e.g. ", 1) if r.random() < 0.5 else s + " costs 3.14 kr"
        return s + r.choice([".", "!", "?", "", ":"])

    def inline_token(self) -> str:
        r, k = self.r, self.uid()
        kind = r.randrange(11)
        if kind == 0:
            return self.keep(f"`code_{k}(x)`")
        if kind == 1:
            return self.keep(f"``a ` b_{k}``")
        if kind == 2:
            url = self.keep(f"https://example.com/path_{k}?q={k}&x=1")
            return r.choice([url, f"({url})", f"{url}.", f"<{url}>", f"**{url}**"])
        if kind == 3:
            return self.keep(f"www.side{k}.dk/nyheder")
        if kind == 4:
            return f"[link text {k}" + self.keep(f"](https://docs.example.org/{k})")
        if kind == 5:
            return self.keep(f"person{k}@mail.example.dk")
        if kind == 6:
            return self.keep(f"$x_{k}^2$")
        if kind == 7:
            return r.choice(["<br>", "<b>"]) if r.random() < 0.3 else self.keep(f'<span class="c{k}">')
        if kind == 8:
            return r.choice(EMOJI)
        if kind == 9:
            return r.choice(["3.14", "1,234", "(42)", "—"])
        return self.keep(f"ftp://files.example.net/f{k}.tar.gz")

    def prose(self) -> str:
        parts = [self.sentence() if self.r.random() < 0.6 else self.inline_token() for _ in range(self.r.randint(1, 6))]
        return " ".join(parts)

    def code_lines(self, indent: str = "") -> list[str]:
        return [self.keep(f"{indent}let value_{self.uid()} = call(arg, \"some words here\");")
                for _ in range(self.r.randint(1, 3))]

    def block(self, prev: str, last: bool) -> tuple[str, list[str]]:
        r = self.r
        kinds = ["para", "header", "list", "quote", "table", "fence", "math", "listfence"]
        if prev not in ("list", "listfence"):
            kinds.append("indented")
        if last:
            kinds.append("unclosed")
        kind = r.choice(kinds)
        if kind == "para":
            return kind, [self.prose() for _ in range(r.randint(1, 3))]
        if kind == "header":
            return kind, ["#" * r.randint(1, 6) + " " + self.prose() + r.choice(["", " ##"])]
        if kind == "list":
            lines = []
            for _ in range(r.randint(1, 5)):
                marker = r.choice(["-", "*", "+", "1.", "2)", "- [ ]", "- [x]"])
                lines.append(" " * r.choice([0, 0, 2, 4]) + marker + " " + self.prose())
            return kind, lines
        if kind == "quote":
            return kind, [r.choice(["> ", "> > ", ">"]) + self.prose() for _ in range(r.randint(1, 3))]
        if kind == "table":
            cols = r.randint(1, 3)
            row = lambda: "| " + " | ".join(  # noqa: E731
                self.keep(f"`a|b_{self.uid()}`") if r.random() < 0.2 else self.prose() for _ in range(cols)) + " |"
            return kind, [row(), self.keep("|" + "|".join([":---", "---:", "---"][c % 3] for c in range(cols)) + "|"),
                          *(row() for _ in range(r.randint(1, 3)))]
        if kind in ("fence", "unclosed"):
            opener = r.choice(["```", "```python", "~~~", "~~~js", "````", "``` bash"])
            lines = [self.keep(opener), *self.code_lines()]
            if kind == "fence":
                lines.append(self.keep(opener.split()[0].rstrip("pythonjsba")))  # "```python" -> "```"
            return kind, lines
        if kind == "math":
            return kind, ["$$", self.keep(f"\\frac{{a_{self.uid()}}}{{b}} = c"), "$$"]
        if kind == "listfence":
            return kind, ["1. " + self.prose(), "", "   ```bash", *self.code_lines("   "), "   ```"]
        return kind, self.code_lines("    ")  # indented code

    def text(self) -> str:
        r = self.r
        eol = r.choice(["\n", "\r\n", None])  # None: mixed
        n = r.randint(1, 8)
        lines, prev = [], ""
        for i in range(n):
            if i:
                lines.append(r.choice(["", "", "  "]))  # blank line between blocks
            prev, block = self.block(prev, last=i == n - 1)
            lines += block
        lines = [ln + r.choice(["", "", "", " ", "  ", "\t"]) if ln.strip() else ln for ln in lines]
        out = ""
        for i, ln in enumerate(lines):
            out += ln
            if i < len(lines) - 1 or r.random() < 0.5:
                out += eol or r.choice(["\n", "\r\n"])
        return r.choice(["", "\n"]) + out


@pytest.mark.parametrize("seed", range(300))
def test_random_documents(seed):
    doc = Doc(seed)
    text = doc.text()
    check(text, doc.protected, max_chars=doc.r.choice([400, 400, 120, 40, 15]))


@pytest.mark.parametrize("seed", range(200))
def test_random_markdown_noise(seed):
    """Arbitrary mixes of markdown-significant characters: the round trip always holds."""
    r = random.Random(seed)
    alphabet = ["`", "```", "~~~", "$", "$$", "\\", "[", "]", "(", ")", "<", ">", "|", "-", "*", "#", "_", "@",
                "http://", "www.", ".", "!", "?", " ", "  ", "\t", "\n", "\r\n", "\r", "1.", "a", "Æ", "ø",
                "word", "Sentence", "é", "🎉", "\u00a0", "\u3000", "。", "e.g.", "3.14", "    "]
    text = "".join(r.choices(alphabet, k=r.randint(0, 200)))
    check(text, max_chars=r.choice([1, 5, 30, 400]))


# --- max_chars: sentence packing ----------------------------------------------------------------

def test_short_sentences_stay_together():
    text = "One short sentence. Another one! And a third? Yes."
    assert translatable(text) == [text]


def test_long_line_is_packed_by_sentence():
    sentences = [f"Sentence number {i} talks about the model and the data for a while." for i in range(30)]
    text = " ".join(sentences)
    pieces = translatable(text, max_chars=200)
    assert len(pieces) > 1
    assert all(len(p) <= 200 and p.endswith("while.") for p in pieces)
    assert all(p.count("Sentence") >= 2 for p in pieces[:-1]), "consecutive sentences are packed"
    # nothing lost: greedy packing, no piece could take the next sentence
    assert " ".join(pieces) == text
    for p, q in zip(pieces, pieces[1:]):
        first_next = q.split(". ")[0] + "."
        assert len(p) + 1 + len(first_next) > 200


def test_no_split_after_abbreviations_or_inside_numbers():
    sentences = ["We use tools, e.g. Python and Rust.", "Dr. Smith said so, i.e. Nothing more.",
                 "Pi is 3.14 or so.", "Mr. Jensen agrees, etc. The end."]
    # each fits in 45 characters, no two neighbours do: one piece per real sentence
    assert translatable(" ".join(sentences), max_chars=45) == sentences


def test_sentence_end_needs_capital_digit_or_quote():
    text = "It was fine. then it was not. 2 more. \"Quoted\" too."
    cut = translatable(text, max_chars=15)
    assert cut == ["It was fine.", "then it was", "not. 2 more.", "\"Quoted\" too."]


def test_long_sentence_is_split_at_whitespace():
    text = " ".join(f"word{i}" for i in range(200))
    pieces = translatable(text, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split() == text.split(), "words are never cut"
    assert all(len(p) > 40 for p in pieces[:-1]), "cut at the last whitespace before the limit"


def test_word_longer_than_limit_is_cut_hard():
    text = "a" * 95
    assert translatable(text, max_chars=40) == ["a" * 40, "a" * 40, "a" * 15]


def test_cjk_sentences():
    text = "这是第一句。这是第二句。这是第三句。"
    assert "".join(translatable(text, max_chars=12)) == text
    assert translatable(text, max_chars=12) == ["这是第一句。这是第二句。", "这是第三句。"]


def test_long_line_with_code_splits_only_prose():
    text = "Intro sentence here. " * 20 + "`keep_this_code()` " + "Outro sentence there. " * 20
    pieces = check(text, ["`keep_this_code()`"], max_chars=100)
    assert all(len(p.text) <= 100 for p in pieces if p.translate)


# --- reassemble ------------------------------------------------------------------------------------

def test_reassemble_replaces_in_order():
    pieces = segment("# Hello\n\nSee `x` and [docs](https://a.dk).")
    out = reassemble(pieces, ["Hej", "Se", "og [dokumentation"])
    assert out == "# Hej\n\nSe `x` og [dokumentation](https://a.dk)."


def test_reassemble_count_mismatch():
    pieces = segment("One. `code` Two.")
    assert sum(p.translate for p in pieces) == 2
    with pytest.raises(ValueError):
        reassemble(pieces, ["En."])
    with pytest.raises(ValueError):
        reassemble(pieces, ["En.", "To.", "Tre."])
    with pytest.raises(ValueError):
        reassemble(segment("```\ncode\n```"), ["x"])
    assert reassemble(segment("```\ncode\n```"), iter([])) == "```\ncode\n```"


def test_bad_max_chars():
    with pytest.raises(ValueError):
        segment("text", max_chars=0)


def test_the_same_pieces_in_another_process():
    """A resumed translate job must cut a message exactly as the first job did: no dependence on hash
    order (sets, dict of sets) or anything else that differs between processes."""
    import subprocess
    import sys

    code = ("import json, sys; from dfm_hpc.text.segment import segment; text = sys.stdin.read(); "
            "print(json.dumps([[p.text, p.translate] for p in segment(text)]))")
    text = Doc(7).text()
    runs = {subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout for seed in ("1", "2")}
    assert len(runs) == 1 and runs.pop().startswith("[[")
