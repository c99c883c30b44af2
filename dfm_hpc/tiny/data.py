"""The `tiny:` data: an OASST-like fixture in both published forms and a learnable Danish toy corpus.

Everything is deterministic (same seed: same bytes) and written with a temporary name and a rename, so
ranks that write it at the same time are safe. The conversations are data (`oasst_fixture.json`), not code.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

from dfm_hpc.files import atomic_open, write_atomic

# OASST fixture: hand-written conversations (oasst_fixture.json) in both published formats.
# A node is {text, options..., replies}; roles alternate prompter / assistant from the root. Options: rank,
# deleted, review_result, lang (else the tree's). The seed only draws ids, users, times and emoji counts
# and shuffles tree and sibling order; the text, ranks and flags in the file are fixed.

_FIXTURE = Path(__file__).with_name("oasst_fixture.json")


def _load_trees() -> List[tuple]:
    """(lang, root node) per tree; a node is (text, options, replies) as in the fixture file."""
    def node(d: dict) -> tuple:
        opts = {k: v for k, v in d.items() if k not in ("text", "replies")}
        return (d["text"], opts, tuple(node(r) for r in d.get("replies", ())))
    return [(t["lang"], node(t["prompt"])) for t in json.loads(_FIXTURE.read_text(encoding="utf-8"))]


_LABEL_NAMES = ("spam", "lang_mismatch", "pii", "not_appropriate", "hate_speech", "sexual_content", "quality",
                "toxicity", "humor", "creativity", "violence")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _fixture_trees(seed: int) -> List[dict]:
    """The published trees format, as dicts; message field order as in the OASST export."""
    rng = random.Random(seed)
    users = [_uuid(rng) for _ in range(12)]
    specs = _load_trees()
    order = list(range(len(specs)))
    rng.shuffle(order)
    start = datetime(2023, 2, 5, 9, 0, tzinfo=timezone.utc)
    trees = []
    for i in order:
        lang, root = specs[i]
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
    write_atomic(path, buf.getvalue())


# A learnable toy corpus for tests and the local demo: patterned Danish sentences.
_WORDS = ["en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni", "ti"]
_TEMPLATES = ["Efter {a} kommer {b}, og efter {b} kommer {c}.", "Vi tæller: {a}, {b}, {c}.",
              "Tallet {b} står mellem {a} og {c}.", "Først {a}, så {b} og til sidst {c}."]


def tiny_corpus(path: Path, n_docs: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with atomic_open(path) as f:  # ranks may write it at the same time
        for i in range(n_docs):
            sents = []
            for _ in range(rng.randint(2, 6)):
                k = rng.randrange(len(_WORDS) - 2)
                sents.append(rng.choice(_TEMPLATES).format(a=_WORDS[k], b=_WORDS[k + 1], c=_WORDS[k + 2]))
            doc = {"id": f"doc-{i}", "text": " ".join(sents), "source": "tiny"}
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def tiny_chats(path: Path, kind: str, n: int = 200, seed: int = 0) -> Path:
    """A learnable toy chat set: 'what comes after X?' -> 'After X comes Y.' (DPO: a wrong answer rejected)."""
    rng = random.Random(seed)
    with atomic_open(path) as f:  # ranks may write it at the same time
        for _ in range(n):
            k = rng.randrange(len(_WORDS) - 1)
            q = {"role": "user", "content": f"Hvad kommer efter {_WORDS[k]}?"}
            good = {"role": "assistant", "content": f"Efter {_WORDS[k]} kommer {_WORDS[k + 1]}."}
            bad = {"role": "assistant", "content": f"Efter {_WORDS[k]} kommer {_WORDS[(k + 5) % len(_WORDS)]}."}
            row = {"messages": [q, good]} if kind == "sft" else {"prompt": [q], "chosen": [good], "rejected": [bad]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def resolve_data(source: str, cache: Path, kind: str = "corpus") -> str:
    """A `tiny:` data source -> a file written into cache (once); any other source unchanged.

    tiny:oasst2 (the OASST fixture, messages form), tiny:corpus (toy Danish documents), tiny:eval (held-out
    documents of the same kind), tiny:chats (toy chats: `kind` sft or dpo)."""
    if not str(source).startswith("tiny:"):
        return source
    name = str(source).removeprefix("tiny:")
    cache = Path(cache)
    if name == "oasst2":
        return str(write_fixture(cache / "oasst2_tiny")["messages"])
    if name == "eval":
        return str(tiny_corpus(cache / "eval_tiny.jsonl", n_docs=40, seed=1))
    if name == "chats":
        return str(tiny_chats(cache / f"tiny_{kind}.jsonl", kind))
    if name == "corpus":
        path = cache / "danish_tiny.jsonl"
        return str(path if path.exists() else tiny_corpus(path))  # race-safe; several workers may ask
    raise ValueError(f"unknown tiny data source {source!r}; known: tiny:oasst2, tiny:corpus, tiny:eval, tiny:chats")
