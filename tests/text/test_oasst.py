"""dfm_hpc.text.oasst: the published OASST2 forms load alike, the filter keeps trees connected, the fixture
is realistic and deterministic. Everything runs on the fixture the module writes itself (no hub)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dfm_hpc.text import oasst, oasst_filter
from dfm_hpc.tiny import data as tiny_data

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The fixture's fixed content (the seed only reorders it and draws ids): see dfm_hpc/tiny/oasst_fixture.json.
N_TREES, N_MESSAGES = 17, 100
EN_COUNTS = {"input": 100, "kept": 87, "tree_state": 0, "deleted": 1, "review_failed": 1, "unreviewed": 0,
             "synthetic": 0, "empty_text": 0, "other_language": 8, "orphaned": 3}


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict:
    return tiny_data.write_fixture(tmp_path_factory.mktemp("fx"))


@pytest.fixture(scope="module")
def msgs(fx) -> list:
    return oasst.load_messages(str(fx["messages"]))


def _gunzip(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.decompress(src.read_bytes()))
    return dst


def _depth(m: dict, by_id: dict) -> int:
    d = 0
    while m["parent_id"] is not None:
        m, d = by_id[m["parent_id"]], d + 1
    return d


# ---------------------------------------------------------------------------------------------- loading


def test_both_formats_load_to_the_same_flat_list(fx, msgs):
    trees = oasst.load_messages(str(fx["trees"]))
    assert len(msgs) == N_MESSAGES
    assert [m["message_id"] for m in trees] == [m["message_id"] for m in msgs]
    assert [m["parent_id"] for m in trees] == [m["parent_id"] for m in msgs]
    assert [m["text"] for m in trees] == [m["text"] for m in msgs]
    assert trees == msgs  # every column, tree_state and message_tree_id filled in from the outer tree
    for m in msgs:
        assert set(oasst.FIELDS) <= m.keys()
        assert {"user_id", "created_date", "review_count", "emojis", "labels", "tree_state"} <= m.keys()
        assert "replies" not in m


def test_plain_and_gz_load_alike(fx, msgs, tmp_path):
    plain_m = _gunzip(fx["messages"], tmp_path / "x.messages.jsonl")
    plain_t = _gunzip(fx["trees"], tmp_path / "x.trees.jsonl")
    assert oasst.load_messages(str(plain_m)) == msgs
    assert oasst.load_messages(str(plain_t)) == msgs
    # a plain *.jsonl of either kind is recognised by its first line
    assert oasst.load_messages(str(shutil.copy(plain_t, tmp_path / "dump.jsonl"))) == msgs
    assert oasst.load_messages(str(shutil.copy(plain_m, tmp_path / "dump2.jsonl"))) == msgs


def test_directory(fx, msgs, tmp_path):
    assert oasst.load_messages(str(fx["messages"].parent)) == msgs  # both files there: messages
    only_trees = tmp_path / "trees_only"
    only_trees.mkdir()
    shutil.copy(fx["trees"], only_trees)
    assert oasst.load_messages(str(only_trees)) == msgs
    # messages win over trees: a trees file with other ids beside it is not read
    mixed = tmp_path / "mixed"
    other = tiny_data.write_fixture(tmp_path / "other", seed=1)
    mixed.mkdir()
    shutil.copy(fx["messages"], mixed)
    shutil.copy(other["trees"], mixed / "z.trees.jsonl.gz")
    assert [m["message_id"] for m in oasst.load_messages(str(mixed))] == [m["message_id"] for m in msgs]
    # two messages files: ambiguous, say which
    shutil.copy(other["messages"], mixed / "z.messages.jsonl.gz")
    with pytest.raises(ValueError, match="several OASST messages files"):
        oasst.load_messages(str(mixed))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        oasst.load_messages(str(empty))


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    for src in ("./nope/oasst2.messages.jsonl", str(tmp_path / "missing.trees.jsonl.gz"), "runs/_data/x.jsonl"):
        with pytest.raises(FileNotFoundError):
            oasst.load_messages(src)


def test_trees_without_parent_or_tree_ids_are_filled_in(fx, msgs, tmp_path):
    """Nested messages in a trees file need not carry parent_id / message_tree_id: the structure says."""

    def strip(node):
        node.pop("message_tree_id", None)
        node.pop("parent_id", None)
        for r in node["replies"]:
            strip(r)

    lines = [json.loads(ln) for ln in gzip.decompress(fx["trees"].read_bytes()).decode().splitlines()]
    for t in lines:
        strip(t["prompt"])
    bare = tmp_path / "bare.trees.jsonl"
    bare.write_text("".join(json.dumps(t) + "\n" for t in lines))
    assert oasst.load_messages(str(bare)) == msgs

    # a parent_id that contradicts the nesting is an error, not a silent guess
    lines[0]["prompt"]["replies"][0]["parent_id"] = "not-the-parent"
    bad = tmp_path / "bad.trees.jsonl"
    bad.write_text("".join(json.dumps(t) + "\n" for t in lines))
    with pytest.raises(ValueError, match="not-the-parent"):
        oasst.load_messages(str(bad))


def test_minimal_records_get_every_field(tmp_path):
    """The export README's minimal message: only id, text, role, lang."""
    p = tmp_path / "min.messages.jsonl"
    p.write_text(json.dumps({"message_id": "a", "text": "Hi", "role": "prompter", "lang": "en"}) + "\n\n"
                 + json.dumps({"message_id": "b", "parent_id": "a", "text": "Hello!", "role": "assistant",
                               "lang": "en", "rank": 0.0, "extra": [1, 2]}) + "\n")
    a, b = oasst.load_messages(str(p))
    assert set(oasst.FIELDS) <= a.keys() and a["parent_id"] is None and a["deleted"] is None
    assert b["rank"] == 0 and isinstance(b["rank"], int) and b["extra"] == [1, 2]
    assert oasst_filter.filter_messages([a, b])[1]["kept"] == 2


def test_no_heavy_imports():
    code = "import sys, dfm_hpc.text.oasst, dfm_hpc.text.oasst_filter; " \
           "bad = {'datasets', 'torch', 'pandas', 'pyarrow'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------------- structure


def test_parent_links_rebuild_the_trees(msgs):
    by_id = {m["message_id"]: m for m in msgs}
    kids = oasst.children(msgs)
    roots = kids[None]
    assert len(roots) == N_TREES
    assert sum(len(v) for v in kids.values()) == len(msgs)
    for m in msgs:
        root = m
        while root["parent_id"] is not None:
            root = by_id[root["parent_id"]]  # every parent is there
        assert m["message_tree_id"] == root["message_id"]
        assert m["role"] == ("prompter" if _depth(m, by_id) % 2 == 0 else "assistant")
    # depth-first order: every message comes after its parent, and a tree's messages are contiguous
    pos = {m["message_id"]: i for i, m in enumerate(msgs)}
    assert all(pos[m["parent_id"]] < pos[m["message_id"]] for m in msgs if m["parent_id"])
    tree_ids = [m["message_tree_id"] for m in msgs]
    assert len([t for i, t in enumerate(tree_ids) if i == 0 or tree_ids[i - 1] != t]) == N_TREES
    # prompt -> assistant -> prompter -> assistant ...
    assert max(_depth(m, by_id) for m in msgs) >= 3
    # siblings with ranks 0, 1, 2 and an unranked one
    sibling_ranks = [sorted((r["rank"] for r in v), key=lambda r: (r is None, r)) for k, v in kids.items() if k]
    assert [0, 1, 2, None] in sibling_ranks
    assert sibling_ranks.count([0, 1, 2]) >= 2
    assert kids[roots[0]["message_id"]] == [m for m in msgs if m["parent_id"] == roots[0]["message_id"]]


def test_fixture_content_is_realistic(msgs):
    texts = [m["text"] for m in msgs]
    assert any("```python\n" in t for t in texts)
    assert any(re.search(r"```(bash|sql|javascript|typescript)\n", t) for t in texts)
    assert any(re.search(r"(?<!`)`[^`\n]+`(?!`)", t) for t in texts)  # inline code
    assert any(re.search(r"\]\(https?://[^)]+\)", t) for t in texts)  # markdown link
    assert any(re.search(r"(?<!\()https?://\S+", t) for t in texts)  # bare URL
    assert any(re.search(r"^#{2,3} ", t, re.M) for t in texts)
    assert any(re.search(r"^- ", t, re.M) for t in texts) and any(re.search(r"^1\. ", t, re.M) for t in texts)
    lengths = sorted(len(t) for t in texts)
    assert lengths[0] < 40 and lengths[-1] > 800 and any(t.count("\n\n") >= 3 for t in texts)
    assert len(set(texts)) == len(texts)
    assert sum(m["deleted"] for m in msgs) >= 1
    assert sum(m["review_result"] is False for m in msgs) >= 1
    assert {m["lang"] for m in msgs} >= {"en", "de", "es"}
    for m in msgs:
        assert UUID.match(m["message_id"]) and UUID.match(m["user_id"])
        assert m["role"] in ("prompter", "assistant")
        assert m["synthetic"] is False and isinstance(m["deleted"], bool)
        assert m["rank"] is None or type(m["rank"]) is int
        assert m["review_result"] in (True, False, None)
        assert m["tree_state"] == "ready_for_export"


# -------------------------------------------------------------------------------------------- filtering


def test_filter_counts_and_orphans(msgs):
    kept, counts = oasst_filter.filter_messages(msgs)
    assert counts == EN_COUNTS
    assert counts["input"] == counts["kept"] + sum(counts[k] for k in ("deleted", "review_failed",
                                                                       "other_language", "orphaned"))
    kept_ids = {m["message_id"] for m in kept}
    assert all(m["lang"] == "en" and not m["deleted"] and m["review_result"] is not False for m in kept)
    assert all(m["parent_id"] is None or m["parent_id"] in kept_ids for m in kept)  # trees stay connected
    # everything below a dropped message is gone
    by_id = {m["message_id"]: m for m in msgs}
    dropped = [m for m in msgs if m["deleted"] or m["review_result"] is False]
    below = [m for m in msgs if any(d["message_id"] in _ancestors(m, by_id) for d in dropped)]
    assert len(below) == EN_COUNTS["orphaned"] and not kept_ids & {m["message_id"] for m in below}
    # ids and dicts unchanged, input order kept
    assert kept == [m for m in msgs if m["message_id"] in kept_ids]
    assert all(k is m for k, m in zip(kept, (m for m in msgs if m["message_id"] in kept_ids)))

    kept3, counts3 = oasst_filter.filter_messages(msgs, ["en", "de", "es"])
    assert counts3 == {**EN_COUNTS, "kept": 95, "other_language": 0}
    assert {m["lang"] for m in kept3} == {"en", "de", "es"}
    assert oasst_filter.filter_messages(msgs, langs=("de",))[1]["kept"] == 5


def _ancestors(m: dict, by_id: dict) -> set:
    out = set()
    while m["parent_id"] is not None:
        out.add(m["parent_id"])
        m = by_id[m["parent_id"]]
    return out


def test_filter_rules_on_handmade_messages():
    def msg(mid, parent=None, lang="en", deleted=False, review=True):
        return {"message_id": mid, "parent_id": parent, "lang": lang, "deleted": deleted, "review_result": review}

    ms = [
        msg("c", "b"),  # child listed before its parent: order does not matter
        msg("b", "a"),
        msg("a"),
        msg("x", deleted=True, review=False),  # deleted wins over review_failed
        msg("x1", "x", lang="de"),  # other_language wins over orphaned
        msg("x2", "x"),
        msg("r", "a", review=None),  # not reviewed yet: kept
        msg("q", "a", review=False),
        msg("q1", "q"),
        msg("q2", "q1"),
        msg("lost", "not-in-input"),  # parent missing altogether
        msg("loop1", "loop2"),
        msg("loop2", "loop1"),
    ]
    kept, counts = oasst_filter.filter_messages(ms)
    assert [m["message_id"] for m in kept] == ["c", "b", "a", "r"]
    zero = {r: 0 for r in oasst_filter.REASONS}
    assert counts == {**zero, "input": 13, "kept": 4, "deleted": 1, "review_failed": 1, "other_language": 1,
                      "orphaned": 6}
    assert oasst_filter.filter_messages([])[1] == {**zero, "input": 0, "kept": 0}


# ------------------------------------------------------------------------------------------ determinism


def test_fixture_is_deterministic(tmp_path, msgs):
    a = tiny_data.write_fixture(tmp_path / "a", seed=0)
    b = tiny_data.write_fixture(tmp_path / "b", seed=0)
    for kind in ("messages", "trees"):
        assert a[kind].name == f"oasst2_tiny.{kind}.jsonl.gz"
        assert a[kind].read_bytes() == b[kind].read_bytes()
    assert oasst.load_messages(str(a["messages"])) == msgs
    tiny_data.write_fixture(tmp_path / "a", seed=0)  # rewriting in place: same bytes, no temp files left
    assert a["messages"].read_bytes() == b["messages"].read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in a.values())

    other = oasst.load_messages(str(tiny_data.write_fixture(tmp_path / "c", seed=7)["trees"]))
    assert {m["message_id"] for m in other}.isdisjoint(m["message_id"] for m in msgs)
    assert Counter(m["text"] for m in other) == Counter(m["text"] for m in msgs)  # same content, new order
    assert [m["text"] for m in other] != [m["text"] for m in msgs]
    assert oasst_filter.filter_messages(other)[1] == EN_COUNTS


# ------------------------------------------------------------------------------------- datasets branch


def test_datasets_directories(msgs, tmp_path, monkeypatch):
    """The `datasets` branch, offline: a local copy of a hub dataset repo (parquet under data/, read with
    the same `datasets.load_dataset(source, revision=...)` call a hub id gets) and a save_to_disk
    directory. Loading a real hub id needs the network or a filled HF cache and is not tested here."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    # as on the hub: flat columns, rank stored as float64 with nulls
    rows = [{**{k: m[k] for k in oasst.FIELDS}, "rank": None if m["rank"] is None else float(m["rank"])}
            for m in msgs]
    want = [{k: m[k] for k in oasst.FIELDS} for m in msgs]
    train, val = datasets.Dataset.from_list(rows[:80]), datasets.Dataset.from_list(rows[80:])
    assert train.features["rank"].dtype == "float64"

    repo = tmp_path / "oasst2_repo"
    train.to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    val.to_parquet(str(repo / "data" / "validation-00000-of-00001.parquet"))
    got = oasst.load_messages(str(repo))
    assert got == want  # train then validation, in row order
    assert all(m["rank"] is None or type(m["rank"]) is int for m in got)
    assert oasst_filter.filter_messages(got)[1] == EN_COUNTS

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "validation": val}).save_to_disk(str(saved))
    assert oasst.load_messages(str(saved)) == want
    one = tmp_path / "saved_one"
    train.save_to_disk(str(one))
    assert oasst.load_messages(str(one)) == want[:80]
