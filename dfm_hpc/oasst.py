"""OpenAssistant OASST2: read it in its published forms, filter it, write small realistic fixtures.

Published forms (https://huggingface.co/datasets/OpenAssistant/oasst2):

- the hub dataset (`datasets.load_dataset("OpenAssistant/oasst2")`, splits train/validation, flat rows);
- `*.messages.jsonl[.gz]`: one flat message per line;
- `*.trees.jsonl[.gz]`: one tree per line, `{"message_tree_id", "tree_state", "prompt": {...message,
  "replies": [{...message, "replies": [...]}, ...]}}`; nested messages need not carry
  `message_tree_id` / `tree_state` (the outer tree has them) and may lack `parent_id`.

Everything here is standard library; `datasets` is imported only when a hub id (or a local dataset
directory that only `datasets` can read) is loaded, so the login node and the tests need nothing heavy.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

FIELDS = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "text",
          "review_result", "deleted", "synthetic")

_MESSAGES_SUFFIXES = (".messages.jsonl", ".messages.jsonl.gz")
_TREES_SUFFIXES = (".trees.jsonl", ".trees.jsonl.gz")


# ----------------------------------------------------------------------------------------------------
# Loading


def load_messages(source: str, revision: Optional[str] = None) -> List[dict]:
    """Flat message dicts (FIELDS, plus any other columns kept as they are) from:

    - a hub id like "OpenAssistant/oasst2": `datasets.load_dataset(source, revision=revision)`, all splits
      concatenated in the dataset's split order (works offline from the HF cache);
    - a local `*.messages.jsonl` / `*.messages.jsonl.gz` file (one message per line, flat);
    - a local `*.trees.jsonl` / `*.trees.jsonl.gz` file, flattened depth-first in reply order, with
      parent_id, message_tree_id and tree_state filled in from the structure where absent;
    - a directory holding one such file (a messages file is preferred over a trees file); failing that,
      a directory written by `Dataset.save_to_disk` or a local copy of a hub dataset repo (parquet
      files), read with `datasets`.

    A local path wins over a hub id of the same spelling; `revision` only applies to hub ids.
    FIELDS missing from a record are added as None; `rank` is normalised to int or None (parquet
    copies store it as a float). Order is stable: file order / depth-first order.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_dir(path)
    if path.is_file():
        return _load_file(path)
    if _looks_like_path(source):
        raise FileNotFoundError(f"OASST source {source!r} not found (no such file or directory)")
    return _load_with_datasets(source, revision=revision)


def _looks_like_path(source: str) -> bool:
    """A missing local file should say so, not send a hub request for './data/x.jsonl'."""
    s = str(source)
    return (s.startswith((".", "/", "~")) or s.endswith((".jsonl", ".jsonl.gz", ".json", ".gz", ".parquet"))
            or s.count("/") > 1 or "\\" in s)


def _kind(path: Path) -> Optional[str]:
    name = path.name
    if name.endswith(_MESSAGES_SUFFIXES):
        return "messages"
    if name.endswith(_TREES_SUFFIXES):
        return "trees"
    return None


def _load_file(path: Path) -> List[dict]:
    kind = _kind(path)
    if kind is None:
        if not path.name.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"{path}: expected *.messages.jsonl[.gz] or *.trees.jsonl[.gz]")
        kind = _sniff(path)
    records = _read_jsonl(path)
    if kind == "messages":
        return [_normalise(r) for r in records]
    return [m for tree in records for m in _flatten_tree(tree, path)]


def _sniff(path: Path) -> str:
    """A plain *.jsonl of unknown kind: a tree line has "prompt", a message line has "message_id"."""
    for rec in _read_jsonl(path):
        if "prompt" in rec and "message_tree_id" in rec:
            return "trees"
        if "message_id" in rec:
            return "messages"
        break
    raise ValueError(f"{path}: neither OASST messages nor trees (first line has neither message_id nor prompt)")


def _load_dir(path: Path) -> List[dict]:
    files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
    for kind in ("messages", "trees"):
        found = [p for p in files if _kind(p) == kind]
        if len(found) > 1:
            raise ValueError(f"{path}: several OASST {kind} files, name one of them: "
                             + ", ".join(p.name for p in found))
        if found:
            return _load_file(found[0])
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        import datasets  # a Dataset(Dict).save_to_disk directory

        return _rows_from_hf(datasets.load_from_disk(str(path)))
    if any(path.rglob("*.parquet")):
        return _load_with_datasets(str(path))  # a local copy of the hub repo: data/train-*.parquet ...
    raise FileNotFoundError(f"{path}: no *.messages.jsonl[.gz], *.trees.jsonl[.gz], saved dataset or parquet files")


def _load_with_datasets(source: str, revision: Optional[str] = None) -> List[dict]:
    """The hub branch: `datasets.load_dataset`, every split, in the dataset's split order."""
    import datasets

    return _rows_from_hf(datasets.load_dataset(source, revision=revision))


def _rows_from_hf(ds) -> List[dict]:
    parts = [ds[split] for split in ds] if hasattr(ds, "keys") else [ds]  # DatasetDict or Dataset
    return [_normalise(row) for part in parts for row in part.to_list()]


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e})") from None


def _normalise(rec: dict) -> dict:
    """Every FIELD present (None where missing); rank as int or None. Other keys kept as they are."""
    out = dict(rec)
    for k in FIELDS:
        out.setdefault(k, None)
    r = out["rank"]
    if isinstance(r, float):
        out["rank"] = None if math.isnan(r) else int(r)
    return out


def _flatten_tree(tree: dict, path: Path) -> Iterator[dict]:
    """Depth-first, replies in order; parent_id / message_tree_id / tree_state from the structure."""
    root = tree.get("prompt")
    if root is None:
        return
    tree_id = tree.get("message_tree_id") or root.get("message_id")
    state = tree.get("tree_state")
    stack: List[Tuple[dict, Optional[str]]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        msg = {k: v for k, v in node.items() if k != "replies"}
        if msg.get("parent_id") is None:
            msg["parent_id"] = parent
        elif msg["parent_id"] != parent:
            raise ValueError(f"{path}: message {msg.get('message_id')} says parent {msg['parent_id']} "
                             f"but sits under {parent} in tree {tree_id}")
        if msg.get("message_tree_id") is None:
            msg["message_tree_id"] = tree_id
        if msg.get("tree_state") is None and state is not None:
            msg["tree_state"] = state
        yield _normalise(msg)
        stack.extend((child, msg["message_id"]) for child in reversed(node.get("replies") or []))


# ----------------------------------------------------------------------------------------------------
# Filtering and structure


def filter_messages(messages: List[dict], langs: Sequence[str] = ("en",)) -> Tuple[List[dict], dict]:
    """Keep messages whose lang is in `langs`, not deleted, review_result not False; a message whose
    parent was dropped (or is not in `messages` at all) is dropped too, so kept trees stay connected.

    Returns (kept, counts), counts = {"input", "kept", "deleted", "review_failed", "other_language",
    "orphaned"}; each dropped message is counted once, under the first reason in that order. Kept
    messages are the input dicts themselves, in input order, ids unchanged. The input order need not be
    parents-first.
    """
    langs = set(langs)
    by_id = {m["message_id"]: m for m in messages}
    reason: Dict[str, Optional[str]] = {}
    for m in messages:
        if m.get("deleted"):
            reason[m["message_id"]] = "deleted"
        elif m.get("review_result") is False:
            reason[m["message_id"]] = "review_failed"
        elif m.get("lang") not in langs:
            reason[m["message_id"]] = "other_language"
        else:
            reason[m["message_id"]] = None

    memo: Dict[str, bool] = {}

    def kept(mid: str) -> bool:
        """Walk up to the root (iteratively); every message on the way shares the answer."""
        path: List[str] = []
        on_path = set()
        cur: Optional[str] = mid
        while True:
            if cur in memo:
                ok = memo[cur]
                break
            if cur not in by_id or reason[cur] is not None or cur in on_path:  # missing parent, dropped, cycle
                ok = False
                break
            path.append(cur)
            on_path.add(cur)
            cur = by_id[cur].get("parent_id")
            if cur is None:
                ok = True
                break
        for p in path:
            memo[p] = ok
        return ok

    counts = {"input": len(messages), "kept": 0, "deleted": 0, "review_failed": 0, "other_language": 0,
              "orphaned": 0}
    out = []
    for m in messages:
        mid = m["message_id"]
        if reason[mid] is not None:
            counts[reason[mid]] += 1
        elif kept(mid):
            out.append(m)
        else:
            counts["orphaned"] += 1
    counts["kept"] = len(out)
    return out, counts


def children(messages: Iterable[dict]) -> Dict[Optional[str], List[dict]]:
    """parent_id -> replies, in input order (roots under None)."""
    out: Dict[Optional[str], List[dict]] = {}
    for m in messages:
        out.setdefault(m.get("parent_id"), []).append(m)
    return out


# ----------------------------------------------------------------------------------------------------
# Fixture: hand-written OASST-like conversations in both published formats
#
# A node is (text, options, replies); roles alternate prompter / assistant from the root. Options: rank,
# deleted, review_result, lang (else the tree's). The seed only draws ids, users, times and emoji counts
# and shuffles tree and sibling order; the text, ranks and flags below are fixed.


def _n(text: str, replies: Sequence = (), **opts) -> tuple:
    return (text, opts, tuple(replies))


_TREES = [
    # 1. code, inline code, markdown link; depth 5; ranks 0, 1, 2 and an unranked late reply
    ("en", _n(
        "How do I read a CSV file in Python and compute the average of one column? The file has a header "
        "row and the column I care about is called `price`.",
        [
            _n(
                "You can do this with the `csv` module from the standard library, no extra packages needed:\n\n"
                "```python\nimport csv\n\nwith open(\"data.csv\", newline=\"\") as f:\n    reader = csv.DictReader(f)\n"
                "    prices = [float(row[\"price\"]) for row in reader]\n\naverage = sum(prices) / len(prices)\n"
                "print(f\"Average price: {average:.2f}\")\n```\n\n"
                "`csv.DictReader` uses the header row as keys, so each `row` is a dictionary and you can look the "
                "column up by name. The values come in as strings, which is why each one goes through `float()`.",
                [
                    _n("What if some rows have an empty value in that column?", [
                        _n(
                            "Then `float(\"\")` raises a `ValueError`. Skip the empty cells while you collect the "
                            "values:\n\n```python\nimport csv\n\nprices = []\nwith open(\"data.csv\", newline=\"\") as f:\n"
                            "    for row in csv.DictReader(f):\n        value = row[\"price\"].strip()\n"
                            "        if value:\n            prices.append(float(value))\n\n"
                            "average = sum(prices) / len(prices) if prices else None\n```\n\n"
                            "The last line also guards against a file where every value is missing, which would "
                            "otherwise divide by zero.",
                            [
                                _n("Thanks! Can I do the same thing with pandas?", [
                                    _n(
                                        "Yes, and it is shorter. pandas reads empty cells as `NaN` and "
                                        "`mean()` skips `NaN` by default:\n\n```python\nimport pandas as pd\n\n"
                                        "df = pd.read_csv(\"data.csv\")\nprint(df[\"price\"].mean())\n```\n\n"
                                        "If the column contains text such as `\"n/a\"`, convert it first with "
                                        "`pd.to_numeric(df[\"price\"], errors=\"coerce\")`. See the "
                                        "[pandas documentation for `DataFrame.mean`]"
                                        "(https://pandas.pydata.org/docs/reference/api/pandas.DataFrame.mean.html) "
                                        "for the other options.",
                                        rank=0),
                                    _n("`pd.read_csv(\"data.csv\")[\"price\"].mean()` does it in one line; "
                                       "missing values are ignored.", rank=1),
                                ]),
                            ]),
                    ]),
                ],
                rank=0),
            _n(
                "If you already use pandas:\n\n```python\nimport pandas as pd\n"
                "print(pd.read_csv(\"data.csv\")[\"price\"].mean())\n```",
                rank=1),
            _n("Open the file in Excel, select the column and look at the average in the status bar at the bottom.",
               rank=2),
            _n(
                "Another option that avoids loading the whole file into a list is to keep a running sum and a "
                "count while you loop over `csv.reader`. For very large files this keeps memory use constant.",
                rank=None),
        ])),
    # 2. headers and lists
    ("en", _n(
        "Can you give me a simple recipe for pancakes? I only have basic stuff at home.",
        [
            _n(
                "## Ingredients\n\n- 200 g plain flour\n- 2 teaspoons baking powder\n- 1 tablespoon sugar\n"
                "- a pinch of salt\n- 300 ml milk\n- 1 egg\n- 2 tablespoons melted butter, plus extra for the pan\n\n"
                "## Steps\n\n1. Whisk the flour, baking powder, sugar and salt in a large bowl.\n"
                "2. In a jug, beat the milk, egg and melted butter together.\n"
                "3. Pour the wet ingredients into the dry ones and stir until just combined. A few lumps are fine.\n"
                "4. Heat a frying pan over medium heat and brush it with butter.\n"
                "5. Pour in about a ladle of batter per pancake. Flip when bubbles appear on the surface, after "
                "about two minutes, and cook the other side for one more minute.\n\n"
                "Serve with maple syrup, berries or a squeeze of lemon and sugar.",
                [
                    _n("Can I make them without eggs?", [
                        _n(
                            "Yes. The egg mostly helps with binding and a bit of lift, and you can replace it "
                            "with one of these:\n\n- half a mashed ripe banana\n- 3 tablespoons of apple sauce\n"
                            "- 1 tablespoon of ground flaxseed mixed with 3 tablespoons of water, left for five "
                            "minutes\n\nThe pancakes will be slightly denser, so add an extra half teaspoon of "
                            "baking powder.",
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("Mix one cup of flour, one cup of milk, one egg and a spoon of sugar, then fry small amounts in a "
               "buttered pan until golden on both sides.", rank=1),
        ])),
    # 3. a reply that failed review, with a follow-up under it (both dropped by the filter)
    ("en", _n(
        "Explain quantum entanglement like I'm 10 years old.",
        [
            _n(
                "Imagine you have two magic coins. You give one to your friend, and she takes it to the other side "
                "of the world. Whenever you flip your coin and it lands on heads, her coin always lands on tails, "
                "and the other way round, no matter how far apart you are.\n\n"
                "The strange part is that neither coin \"decided\" before it was flipped. It is not like putting a "
                "left glove and a right glove into two boxes. Until someone looks, both coins are undecided, and "
                "the moment one is looked at, the pair is settled together.\n\n"
                "Scientists call coins like these *entangled*. Real entangled things are tiny particles such as "
                "photons, not coins, and you cannot use them to send messages faster than light, because each "
                "coin on its own still looks completely random.",
                rank=0),
            _n(
                "lol just google it, this is way too complicated for a kid",
                [
                    _n("That's not very helpful. Can you try again?", [
                        _n("Entanglement means two particles share one state, so measuring one tells you about "
                           "the other.", rank=0),
                    ]),
                ],
                rank=1, review_result=False),
            _n("Two particles can be linked so that what happens to one tells you what happened to the other, even "
               "if they are very far apart.", rank=2),
        ])),
    # 4. git, shell code, bare URL, depth 5
    ("en", _n(
        "How do I undo my last git commit but keep the changes in my working directory?",
        [
            _n(
                "Use a soft reset:\n\n```bash\ngit reset --soft HEAD~1\n"
                "git commit --author=\"Mette Hansen <mette.hansen@example.dk>\" -m \"Ret stavefejl\"\n```\n\n"
                "This moves your branch back by one commit and leaves the changes from that commit staged. If you "
                "would rather have them unstaged, use `git reset --mixed HEAD~1` (which is also what plain "
                "`git reset HEAD~1` does).",
                [
                    _n("And what if I already pushed that commit to GitHub?", [
                        _n(
                            "Then rewriting history is risky, because other people may already have the commit. "
                            "The safe way is to create a new commit that undoes it:\n\n"
                            "```bash\ngit revert HEAD\ngit push\n```\n\n"
                            "If you are the only person working on the branch, you can reset and force-push "
                            "instead, but prefer `git push --force-with-lease` over `--force` so you do not "
                            "overwrite work you have not seen. The details are in the manual: "
                            "https://git-scm.com/docs/git-revert",
                            [
                                _n("What does --no-edit do with git revert?", [
                                    _n("It skips opening the editor and uses the default commit message, "
                                       "`Revert \"<original subject>\"`. Handy in scripts.", rank=0),
                                ]),
                            ],
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("`git reset HEAD~1` will do it. Your files stay as they are, only the commit is removed.", rank=1),
        ])),
    # 5. short creative replies, one deleted with a follow-up under it
    ("en", _n(
        "Write a haiku about autumn.",
        [
            _n("Crisp leaves drift and fall\nthe maple lets go of red\nwind carries it home", rank=0),
            _n("Cold morning, grey light\nsteam rises from my coffee\ngeese call, heading south", rank=1),
            _n("Autumn is a season\nwhere leaves fall from the trees\nit is very nice", rank=2),
            _n("Pumpkin spice pumpkin spice pumpkin spice pumpkin spice", [
                _n("Is that supposed to be a haiku?"),
            ], deleted=True, rank=None),
        ])),
    # 6. a markdown table; two ranked replies at depth 3
    ("en", _n(
        "What's the difference between TCP and UDP?",
        [
            _n(
                "Both are transport protocols on top of IP, but they make different trade-offs.\n\n"
                "| | TCP | UDP |\n|---|---|---|\n| Connection | set up with a handshake | none |\n"
                "| Delivery | guaranteed, in order | best effort, may arrive out of order |\n"
                "| Overhead | higher | lower |\n| Typical uses | web pages, email, file transfer | "
                "video calls, DNS, online games |\n\n"
                "In short: use TCP when every byte must arrive, and UDP when fresh data matters more than "
                "complete data.",
                [
                    _n("Which one do online games use, then?", [
                        _n(
                            "Most fast-paced games send the game state over UDP. If a position update gets lost, "
                            "the next one arrives a few milliseconds later anyway, and waiting for a "
                            "retransmission (as TCP would) causes the lag spikes players hate. Games usually "
                            "build their own light reliability layer on top of UDP for the messages that must "
                            "arrive, such as chat or purchases.\n\n"
                            "Turn-based games and many mobile games simply use TCP or even HTTP, because a delay "
                            "of a few hundred milliseconds does not matter there.",
                            rank=0),
                        _n("Mostly UDP, because it's faster.", rank=1),
                    ]),
                ],
                rank=0),
            _n("TCP checks that everything arrives and resends what is lost. UDP just sends and hopes for the best, "
               "which makes it faster.", rank=1),
        ])),
    # 7. travel, headers, markdown and bare links, depth 5
    ("en", _n(
        "I'm visiting Copenhagen for three days in May. What should I see?",
        [
            _n(
                "May is a lovely time to visit: long days and the parks are green. Here is a relaxed plan.\n\n"
                "### Day 1: the old centre\n- Walk down Strøget and stop at Nyhavn for the coloured houses.\n"
                "- Take a canal tour from Nyhavn or Gammel Strand; it is the easiest way to get your bearings.\n"
                "- Evening: Tivoli Gardens, which is open for the summer season by then.\n\n"
                "### Day 2: palaces and art\n- Rosenborg Castle and the King's Garden.\n"
                "- Statens Museum for Kunst, the national gallery, right next to it.\n"
                "- Christiansborg Palace; the tower has a free viewpoint.\n\n"
                "### Day 3: something different\n- Christiania and the Church of Our Saviour (climb the spiral "
                "spire if you are not afraid of heights).\n- Reffen street food market in the afternoon.\n\n"
                "The [official tourist site](https://www.visitcopenhagen.com/) has opening hours and events.",
                [
                    _n("Is it easy to get around by bike?", [
                        _n(
                            "Very. Copenhagen is flat and has separate bike lanes on almost every main road. A "
                            "few tips:\n\n1. Keep to the right and signal with your hand before you stop or "
                            "turn.\n2. Left turns are done in two steps: cross the junction, stop at the far "
                            "corner, then cross again.\n3. You need lights after dark; the police do fine "
                            "cyclists without them.\n\nMany hotels rent bikes, and there are shared city bikes "
                            "you unlock with an app, see https://bycyklen.dk/en/ for the official ones.",
                            [
                                _n("Great. What's a typical Danish dish I should try?", [
                                    _n(
                                        "Try *smørrebrød*: open sandwiches on dark rye bread with toppings such "
                                        "as pickled herring, roast beef with remoulade, or egg and shrimp. For "
                                        "something warm, *frikadeller* (pork meatballs) or *stegt flæsk* "
                                        "(crispy pork belly with parsley sauce), which was voted the national "
                                        "dish. And have a cinnamon pastry, a *kanelsnegl*, with your morning "
                                        "coffee.",
                                        rank=0),
                                ]),
                            ],
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("Nyhavn, Tivoli, the Little Mermaid and Christiania are the classics. Three days is enough to see all "
               "of them without rushing.", rank=1),
        ])),
    # 8. a little maths
    ("en", _n(
        "Solve for x: 3x + 7 = 22",
        [
            _n(
                "Subtract 7 from both sides:\n\n3x = 15\n\nThen divide both sides by 3:\n\nx = 5",
                [
                    _n("Can you check it by putting it back in?", [
                        _n("Sure: 3 · 5 + 7 = 15 + 7 = 22, which matches the right-hand side, so x = 5 is correct.",
                           rank=0),
                    ]),
                ],
                rank=0),
            _n("x = 5", rank=1),
        ])),
    # 9. JavaScript and TypeScript code, a markdown link
    ("en", _n(
        "Write a debounce function in JavaScript.",
        [
            _n(
                "Here is a small debounce that delays calling `fn` until `wait` milliseconds have passed without "
                "another call:\n\n```javascript\nfunction debounce(fn, wait) {\n  let timer;\n"
                "  return function (...args) {\n    clearTimeout(timer);\n"
                "    timer = setTimeout(() => fn.apply(this, args), wait);\n  };\n}\n\n"
                "// usage\nwindow.addEventListener(\"resize\", debounce(() => {\n"
                "  console.log(\"resized to\", window.innerWidth);\n}, 200));\n```\n\n"
                "Every call clears the pending timer and starts a new one, so `fn` only runs once the calls stop.",
                [
                    _n("How would I write the same thing in TypeScript with proper types?", [
                        _n(
                            "Use a generic over the function's parameters so the debounced version accepts the "
                            "same arguments:\n\n```typescript\nfunction debounce<A extends unknown[]>(\n"
                            "  fn: (...args: A) => void,\n  wait: number,\n): (...args: A) => void {\n"
                            "  let timer: ReturnType<typeof setTimeout> | undefined;\n  return (...args: A) => {\n"
                            "    clearTimeout(timer);\n    timer = setTimeout(() => fn(...args), wait);\n  };\n}\n```\n\n"
                            "`ReturnType<typeof setTimeout>` works both in the browser (where it is a `number`) "
                            "and in Node.js (where it is a `Timeout` object).",
                            rank=0),
                    ]),
                ],
                rank=0),
            _n(
                "```javascript\nconst debounce = (fn, ms) => {\n  let t;\n"
                "  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };\n};\n```",
                rank=1),
            _n("You don't need to write it yourself: lodash has one, see "
               "[lodash.debounce](https://lodash.com/docs/#debounce).", rank=2),
        ])),
    # 10. a letter; two ranked replies at depth 3
    ("en", _n(
        "Help me write a polite email to my landlord about a broken heater.",
        [
            _n(
                "Subject: Heater not working in flat 3B\n\nDear Mr. Hansen,\n\n"
                "I hope you are well. I am writing to let you know that the heater in the living room of my flat "
                "stopped working on Monday. It no longer turns on at all, and the flat is getting quite cold in "
                "the evenings.\n\nCould you please arrange for someone to look at it? I am at home most "
                "afternoons and can also leave a key with a neighbour if that is easier.\n\n"
                "Thank you for your help.\n\nKind regards,\nAnna Larsen",
                [
                    _n("Make it a bit more firm, it's been two weeks now and he hasn't answered.", [
                        _n(
                            "Subject: Second request: heater repair in flat 3B\n\nDear Mr. Hansen,\n\n"
                            "I wrote to you two weeks ago about the broken heater in my living room and have not "
                            "yet had a reply. The heater is still not working, and with the current temperatures "
                            "the flat is uncomfortably cold.\n\nAs the landlord you are responsible for keeping "
                            "the heating in working order, so I ask that a repair is arranged within the next "
                            "seven days. Please confirm by Friday when someone will come.\n\n"
                            "If I do not hear from you, I will have to contact the local housing authority for "
                            "advice.\n\nKind regards,\nAnna Larsen",
                            rank=0),
                        _n("Dear Mr. Hansen, this is my second email about the heater. Please fix it this week. "
                           "Regards, Anna", rank=1),
                    ]),
                ],
                rank=0),
            _n("Hi, the heater is broken, can you send someone to fix it? Thanks!", rank=1),
        ])),
    # 11. German
    ("de", _n(
        "Wie koche ich ein weiches Ei?",
        [
            _n(
                "Bring Wasser in einem kleinen Topf zum Kochen und lege das Ei mit einem Löffel vorsichtig "
                "hinein. Für ein weiches Ei mit flüssigem Eigelb reichen etwa 5 bis 6 Minuten. Danach das Ei kurz "
                "kalt abschrecken, damit es nicht weitergart.",
                [
                    _n("Und wie lange für ein hartes Ei?", [
                        _n("Ungefähr 9 bis 10 Minuten, je nach Größe des Eis.", rank=0),
                    ]),
                ],
                rank=0),
            _n("Etwa 6 Minuten in kochendem Wasser.", rank=1),
        ])),
    # 12. Spanish
    ("es", _n(
        "¿Cuál es la capital de Australia?",
        [
            _n("La capital de Australia es Canberra. Mucha gente piensa que es Sídney, pero Canberra fue elegida "
               "como compromiso entre Sídney y Melbourne.", rank=0),
            _n("Canberra.", rank=1),
        ])),
    # 13. SQL, depth 5
    ("en", _n(
        "Write a SQL query that returns the top 5 customers by total order value. Tables: "
        "customers(id, name) and orders(id, customer_id, amount).",
        [
            _n(
                "```sql\nSELECT c.id, c.name, SUM(o.amount) AS total\nFROM customers AS c\n"
                "JOIN orders AS o ON o.customer_id = c.id\nGROUP BY c.id, c.name\nORDER BY total DESC\n"
                "LIMIT 5;\n```\n\nThe `JOIN` matches each order to its customer, `GROUP BY` adds up the amounts "
                "per customer, and `ORDER BY ... DESC LIMIT 5` keeps the five largest totals.",
                [
                    _n("How do I include customers who have no orders at all?", [
                        _n(
                            "Use a `LEFT JOIN` so customers without orders are kept, and `COALESCE` to turn "
                            "their missing sum into 0:\n\n```sql\n"
                            "SELECT c.id, c.name, COALESCE(SUM(o.amount), 0) AS total\nFROM customers AS c\n"
                            "LEFT JOIN orders AS o ON o.customer_id = c.id\nGROUP BY c.id, c.name\n"
                            "ORDER BY total DESC;\n```",
                            [
                                _n("Does this work in SQLite too?", [
                                    _n("Yes. `LEFT JOIN`, `COALESCE` and `LIMIT` are all supported by SQLite, "
                                       "so the query runs unchanged.", rank=0),
                                ]),
                            ],
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("`SELECT customer_id, SUM(amount) FROM orders GROUP BY customer_id ORDER BY 2 DESC LIMIT 5;` "
               "gives you the ids; join with `customers` if you need the names.", rank=1),
        ])),
    # 14. one-liners
    ("en", _n(
        "Tell me a joke about programmers.",
        [
            _n("Why do programmers prefer dark mode?\n\nBecause light attracts bugs.", rank=0),
            _n("A programmer's partner says: \"Go to the shop and buy a loaf of bread. If they have eggs, buy "
               "six.\" The programmer comes home with six loaves of bread.", rank=1),
            _n("There are 10 kinds of people: those who understand binary and those who don't.", rank=2),
        ])),
    # 15. regex with inline code in the prompt
    ("en", _n(
        "What does this regex do: `^\\d{3}-\\d{4}$`",
        [
            _n(
                "It matches a whole string made of three digits, a hyphen and four digits, such as `555-1234`:\n\n"
                "- `^` anchors the match at the start of the string\n- `\\d{3}` means exactly three digits\n"
                "- `-` is a literal hyphen\n- `\\d{4}` means exactly four digits\n"
                "- `$` anchors the match at the end\n\n"
                "Because of the anchors, `555-12345` or `call 555-1234` do not match.",
                [
                    _n("How do I use it in Python?", [
                        _n(
                            "With the `re` module. `re.fullmatch` already requires the whole string to match, so "
                            "the anchors become optional:\n\n```python\nimport re\n\n"
                            "pattern = re.compile(r\"\\d{3}-\\d{4}\")\n\n"
                            "print(bool(pattern.fullmatch(\"555-1234\")))   # True\n"
                            "print(bool(pattern.fullmatch(\"555-12345\")))  # False\n```\n\n"
                            "Note the `r` prefix: a raw string keeps the backslashes as they are.",
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("It checks for a phone number like 123-4567.", rank=1),
        ])),
    # 16. advice, numbered list
    ("en", _n(
        "Any tips for falling asleep faster? I lie awake for an hour most nights.",
        [
            _n(
                "That sounds frustrating. Things that help many people:\n\n"
                "1. Go to bed and get up at the same time every day, including weekends.\n"
                "2. Avoid caffeine after about 2 pm; it stays in your body for many hours.\n"
                "3. Put screens away 30 to 60 minutes before bed, or at least dim them.\n"
                "4. Keep the bedroom cool, dark and quiet.\n"
                "5. If you are still awake after about 20 minutes, get up and do something calm in dim light "
                "until you feel sleepy, then go back to bed.\n\n"
                "If this goes on for weeks and affects your days, it is worth talking to a doctor, since "
                "insomnia is very treatable.",
                [
                    _n("What about melatonin? Is it safe to take every night?", [
                        _n(
                            "Melatonin is generally considered safe for short-term use, and low doses (0.5 to 3 mg) "
                            "taken an hour or two before bed seem to work as well as higher ones. It helps most "
                            "with shifting your sleep timing, for example jet lag, and less with staying asleep.\n\n"
                            "Less is known about taking it every night for months, and it can interact with some "
                            "medicines, so please check with a doctor or pharmacist before making it a habit.",
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("Try reading a paper book in bed and no phone. Works for me.", rank=1),
        ])),
    # 17. Linux, shell code, depth 5
    ("en", _n(
        "How can I find which process is using port 8080 on Linux?",
        [
            _n(
                "Any of these will show it:\n\n```bash\nss -ltnp | grep :8080\n# or\nlsof -i :8080\n```\n\n"
                "`ss` is part of iproute2 and installed almost everywhere; the `-p` flag adds the process name and "
                "PID to each listening socket.",
                [
                    _n("The process column is empty, and lsof prints nothing.", [
                        _n(
                            "That usually means the process belongs to another user (often root), and you are "
                            "only allowed to see your own processes. Run the same command with `sudo`:\n\n"
                            "```bash\nsudo ss -ltnp | grep :8080\n```",
                            [
                                _n("That worked. How do I stop it?", [
                                    _n(
                                        "Take the PID from the output and send it a terminate signal:\n\n"
                                        "```bash\nsudo kill 12345\n```\n\nIf it does not exit after a few "
                                        "seconds, `sudo kill -9 12345` forces it. If the process is a system "
                                        "service, stop it with `sudo systemctl stop <service>` instead, or it "
                                        "may simply be restarted.",
                                        rank=0),
                                ]),
                            ],
                            rank=0),
                    ]),
                ],
                rank=0),
            _n("`sudo netstat -tulpn | grep 8080` if you have net-tools installed.", rank=1),
        ])),
]

_LABEL_NAMES = ("spam", "lang_mismatch", "pii", "not_appropriate", "hate_speech", "sexual_content", "quality",
                "toxicity", "humor", "creativity", "violence")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _fixture_trees(seed: int) -> List[dict]:
    """The published trees format, as dicts; message field order as in the OASST export."""
    rng = random.Random(seed)
    users = [_uuid(rng) for _ in range(12)]
    order = list(range(len(_TREES)))
    rng.shuffle(order)
    start = datetime(2023, 2, 5, 9, 0, tzinfo=timezone.utc)
    trees = []
    for i in order:
        lang, root = _TREES[i]
        when = start + timedelta(days=3 * i, minutes=rng.randrange(24 * 60), microseconds=rng.randrange(10 ** 6))
        tree_id = None

        def build(node: tuple, parent: Optional[str], depth: int) -> dict:
            nonlocal when, tree_id
            text, opts, replies = node
            mid = _uuid(rng)
            tree_id = tree_id or mid
            role = "prompter" if depth % 2 == 0 else "assistant"
            deleted = bool(opts.get("deleted", False))
            review_result = opts.get("review_result", None if deleted else True)
            msg = {
                "message_id": mid,
                "parent_id": parent,
                "user_id": rng.choice(users),
                "created_date": when.isoformat(),
                "text": text,
                "role": role,
                "lang": opts.get("lang", lang),
                "review_count": 3 if review_result is not None else rng.randrange(2),
                "review_result": review_result,
                "deleted": deleted,
                "rank": opts.get("rank"),
                "synthetic": False,
                "model_name": None,
                "emojis": _emojis(rng, role),
                "labels": _labels(rng),
            }
            when += timedelta(minutes=rng.randrange(5, 600), seconds=rng.randrange(60))
            kids = list(replies)
            rng.shuffle(kids)
            msg["replies"] = [build(k, mid, depth + 1) for k in kids]
            return msg

        prompt = build(root, None, 0)
        trees.append({"message_tree_id": tree_id, "tree_state": "ready_for_export", "prompt": prompt,
                      "origin": None})
    return trees


def _emojis(rng: random.Random, role: str) -> dict:
    names = ["+1", "-1", "_skip_reply", "_skip_ranking"] if role == "assistant" else ["+1", "_skip_reply"]
    picked = sorted(rng.sample(names, rng.randrange(1, len(names))))
    return {name: rng.randrange(1, 6) for name in picked}


def _labels(rng: random.Random) -> dict:
    count = rng.choice((3, 3, 3, 4, 5))
    out = {}
    for name in _LABEL_NAMES:
        if name in ("quality", "humor", "creativity", "toxicity"):
            value = round(rng.randrange(count + 1) / count, 3) if name != "toxicity" else 0.0
        else:
            value = 0.0
        out[name] = {"value": value, "count": count}
    return out


def _tree_messages(trees: List[dict]) -> Iterator[dict]:
    """The published messages format: depth-first, without replies, with message_tree_id and tree_state."""
    for tree in trees:
        stack = [tree["prompt"]]
        while stack:
            node = stack.pop()
            msg = {k: v for k, v in node.items() if k not in ("replies", "labels")}
            msg["message_tree_id"] = tree["message_tree_id"]
            msg["tree_state"] = tree["tree_state"]
            msg["labels"] = node["labels"]
            yield msg
            stack.extend(reversed(node["replies"]))


def write_fixture(out_dir, seed: int = 0) -> Dict[str, Path]:
    """Write `oasst2_tiny.messages.jsonl.gz` and `oasst2_tiny.trees.jsonl.gz` into out_dir: the same
    hand-written conversations in the two published formats. Deterministic (same seed: same bytes);
    each file is written to a temporary name and renamed, so ranks writing it at once are safe."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trees = _fixture_trees(seed)
    paths = {"messages": out / "oasst2_tiny.messages.jsonl.gz", "trees": out / "oasst2_tiny.trees.jsonl.gz"}
    _write_jsonl_gz(paths["messages"], _tree_messages(trees))
    _write_jsonl_gz(paths["trees"], trees)
    return paths


def _write_jsonl_gz(path: Path, records: Iterable[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:  # no name, no time: same bytes
        gz.write(text.encode("utf-8"))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
