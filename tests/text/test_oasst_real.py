"""The loader on real OpenAssistant data (tests/data/en_100_tree.jsonl.gz, a copy of shared/data/oasst's
file: 100 English trees from LAION-AI/Open-Assistant): every layout OASST's tools write is read completely
(the same 1,167 messages), anything else is refused naming the file and line, duplicates are found at load
time, and the filters count what they drop."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dfm_hpc.text import oasst, oasst_filter

from helpers import DATA, dfm

REAL = DATA / "en_100_tree.jsonl.gz"
N_TREES, N_MESSAGES, N_SYNTHETIC, N_UNRANKED = 100, 1167, 22, 526


def _trees() -> list:
    return [json.loads(x) for x in gzip.decompress(REAL.read_bytes()).decode().splitlines()]


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real() -> list:
    return oasst.load_messages(str(REAL))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, real) -> dict:
    """The fixture in every layout, derived from it: message-rooted nested trees (one root per line, no
    wrapper), flat messages, Parquet and Arrow (the hub's flat rows)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("layouts")
    flat = [{k: v for k, v in m.items()} for m in real]
    out = {"trees": REAL,
           "nested": _write(d / "en_100.nested.jsonl", [t["prompt"] for t in _trees()]),
           "messages": _write(d / "en_100.messages.jsonl", flat)}
    table = pa.Table.from_pylist(flat)
    pq.write_table(table, d / "en_100.parquet")
    with pa.OSFile(str(d / "en_100.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    out.update(parquet=d / "en_100.parquet", arrow=d / "en_100.arrow")
    return out


# ---------------------------------------------------------------------------------------------- loading


def test_the_real_fixture_loads_completely(real):
    assert REAL.read_bytes() == Path("/work/shared/data/oasst/en_100_tree.jsonl.gz").read_bytes() \
        if Path("/work/shared/data/oasst/en_100_tree.jsonl.gz").exists() else True
    ids = [m["message_id"] for m in real]
    assert len(real) == N_MESSAGES and len(set(ids)) == N_MESSAGES  # every id once
    by_id = {m["message_id"]: m for m in real}
    trees = _trees()
    assert len({m["message_tree_id"] for m in real}) == N_TREES == len(trees)

    def walk(node, parent, tree):  # the nesting as written, against the flat list
        m = by_id[node["message_id"]]
        assert m["parent_id"] == parent and m["message_tree_id"] == tree["message_tree_id"]
        assert m["text"] == node["text"] and m["role"] == node["role"] and m.get("rank") == node.get("rank")
        assert m["tree_state"] == tree["tree_state"]
        for r in node.get("replies", []):
            assert r["role"] != node["role"]  # prompter and assistant alternate
            walk(r, node["message_id"], tree)

    for t in trees:
        walk(t["prompt"], None, t)
    assert sum(m["rank"] is None for m in real) == N_UNRANKED
    assert sum(bool(m["synthetic"]) for m in real) == N_SYNTHETIC
    assert max(len(m["text"]) for m in real) > 9000
    assert sum(m["text"].count("```") for m in real) // 2 >= 40


@pytest.mark.parametrize("layout", ["trees", "nested", "messages", "parquet", "arrow"])
def test_every_layout_loads_the_same_messages(layouts, real, layout):
    got = oasst.load(str(layouts[layout]))
    assert got.layout == layout and got.duplicates == 0
    assert len(got.messages) == N_MESSAGES
    for a, b in zip(got.messages, real):
        assert {k: a[k] for k in oasst.FIELDS} == {k: b[k] for k in oasst.FIELDS}
    assert oasst.load(str(layouts[layout]), layout=layout).messages == got.messages  # forced: the same


def test_the_layout_comes_from_the_content_not_the_name(layouts, real, tmp_path):
    """The reported bug: a message-rooted file read as flat messages (100 of 1,167), or, named
    *.trees.jsonl, as nothing at all."""
    nested = layouts["nested"].read_bytes()
    for name in ("x.trees.jsonl", "x.messages.jsonl", "x.jsonl", "x.json"):
        (tmp_path / name).write_bytes(nested)
        assert len(oasst.load_messages(str(tmp_path / name))) == N_MESSAGES, name
    (tmp_path / "plain.trees.jsonl").write_bytes(gzip.decompress(REAL.read_bytes()))  # gzip by magic, not name
    (tmp_path / "zipped.jsonl").write_bytes(REAL.read_bytes())
    for name in ("plain.trees.jsonl", "zipped.jsonl"):
        assert oasst.load_messages(str(tmp_path / name)) == real


def test_a_forced_layout_that_does_not_fit_is_refused(layouts):
    for path, layout, what in ((layouts["nested"], "trees", "an export tree"),
                               (layouts["nested"], "messages", "a flat message"),
                               (layouts["trees"], "nested", "a root message"),
                               (layouts["messages"], "parquet", "forced to parquet"),
                               (layouts["parquet"], "messages", "a parquet file")):
        with pytest.raises(oasst.OasstFormatError, match=re.escape(what)) as e:
            oasst.load(str(path), layout=layout)
        assert str(path) in str(e.value)


# ------------------------------------------------------------------------------------- hostile variants


def _refused(path: Path, *parts: str):
    with pytest.raises(oasst.OasstFormatError) as e:
        oasst.load(str(path))
    for p in parts:
        assert p in str(e.value), (p, str(e.value))
    return str(e.value)


def test_identical_duplicates_are_dropped_and_counted(tmp_path, real):
    trees = _trees()
    twice = trees + trees[:31]  # as in a real multilingual export: 31 trees twice
    got = oasst.load(str(_write(tmp_path / "dup.trees.jsonl", twice)))
    assert [m["message_id"] for m in got.messages] == [m["message_id"] for m in real]
    assert got.duplicates == sum(1 for m in real if m["message_tree_id"] in {t["message_tree_id"] for t in trees[:31]})
    flat = [dict(m) for m in real]
    got = oasst.load(str(_write(tmp_path / "dup.messages.jsonl", flat + flat[5:8])))
    assert len(got.messages) == N_MESSAGES and got.duplicates == 3


def test_conflicting_duplicates_are_refused_naming_file_lines_and_ids(tmp_path, real):
    flat = [dict(m) for m in real]
    other = dict(flat[10], text=flat[10]["text"] + " (edited)")
    p = _write(tmp_path / "conflict.messages.jsonl", flat + [other])
    _refused(p, f"{p}:11", f"{p}:{N_MESSAGES + 1}", flat[10]["message_id"], "differ in text")
    trees = _trees()
    trees.append(json.loads(json.dumps(trees[3])))
    trees[-1]["prompt"]["replies"][0]["rank"] = 7
    p = _write(tmp_path / "conflict.trees.jsonl", trees)
    _refused(p, f"{p}:4", f"{p}:{N_TREES + 1}", trees[3]["prompt"]["replies"][0]["message_id"], "rank")


def test_a_reply_whose_parent_is_missing_is_refused(tmp_path, real):
    flat = [dict(m) for m in real]
    parents = {m["parent_id"] for m in flat}
    gone = flat.pop(next(i for i, m in enumerate(flat) if m["parent_id"] and m["message_id"] in parents))
    p = _write(tmp_path / "orphan.messages.jsonl", flat)
    orphan = next(i for i, m in enumerate(flat, 1) if m["parent_id"] == gone["message_id"])
    _refused(p, f"{p}:{orphan}", gone["message_id"], "not in the source")


def test_unreadable_lines_are_refused_naming_file_and_line(tmp_path):
    raw = gzip.decompress(REAL.read_bytes()).decode().splitlines()
    t8 = json.loads(raw[8])
    cases = {
        "notjson": raw[:5] + ['{"message_tree_id": "x", "prompt": {'] + raw[5:],
        "array": raw[:2] + ["[1, 2, 3]"] + raw[2:],
        "mixed": raw[:7] + [json.dumps(_trees()[0]["prompt"]["replies"][0] | {"replies": []})] + raw[7:],
        "norole": raw[:3] + [raw[3].replace('"role": "prompter"', '"role": "user"', 1)]
        + raw[4:],
        "notext": raw[:8] + [json.dumps({**t8, "prompt": {**t8["prompt"], "text": None}})] + raw[9:],
    }
    line = {"notjson": 6, "array": 3, "mixed": 8, "norole": 4, "notext": 9}
    what = {"notjson": "not JSON", "array": "expected", "mixed": "expected an export tree",
            "norole": "prompter or assistant", "notext": "expected a string"}
    for name, lines in cases.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        _refused(p, f"{p}:{line[name]}", what[name])
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(REAL.read_bytes()[:50_000])  # a truncated download
    _refused(cut, str(cut))


def test_empty_text_deleted_synthetic_and_tree_state_are_filtered_and_counted(tmp_path, real):
    trees = _trees()

    def synthetic(node):
        return node.get("synthetic") or any(synthetic(r) for r in node.get("replies", []))

    a, b, c, d, e, f = [t for t in trees if not synthetic(t["prompt"])][:6]  # none of their messages synthetic
    t0 = a["prompt"]
    t0["replies"][0]["text"] = "   "  # empty: dropped with everything below it
    below = 0
    stack = list(t0["replies"][0].get("replies", []))
    while stack:
        below += 1
        stack += stack.pop().get("replies", [])
    b["prompt"]["replies"][0]["deleted"] = True
    c["tree_state"] = "prompt_lottery_waiting"
    d["tree_state"] = "halted_by_moderator"
    e["prompt"]["replies"][0]["review_result"] = False
    f["prompt"]["replies"][-1]["lang"] = "de"
    p = _write(tmp_path / "hostile.trees.jsonl", trees)
    ms = oasst.load_messages(str(p))
    size = Counter(m["message_tree_id"] for m in ms)
    c_id, d_id = c["message_tree_id"], d["message_tree_id"]
    kept, c = oasst_filter.filter_messages(ms)
    assert c["empty_text"] == 1 and c["deleted"] == 1
    assert c["tree_state"] == size[c_id] + size[d_id]
    assert c["review_failed"] == 1 and c["other_language"] == 1 and c["synthetic"] == N_SYNTHETIC
    assert c["input"] == N_MESSAGES and c["kept"] == N_MESSAGES - sum(c[r] for r in oasst_filter.REASONS)
    assert c["orphaned"] >= below
    assert not any(m["synthetic"] or m["deleted"] or not m["text"].strip() for m in kept)
    assert {m["tree_state"] for m in kept} == {"ready_for_export"}
    # every filter can be turned off
    everything = oasst_filter.Filters(tree_states=(), drop_deleted=False, review="any", drop_synthetic=False,
                               langs=("en", "de"))
    assert oasst_filter.filter_messages(ms, filters=everything)[1]["kept"] == N_MESSAGES - 1 - below  # the empty one
    assert oasst_filter.filter_messages(ms, filters=oasst_filter.Filters(review="passed"))[1]["unreviewed"] == 0
    with pytest.raises(ValueError, match="review"):
        oasst_filter.Filters(review="sometimes")


def test_defaults_on_the_real_fixture(real):
    kept, summary = oasst_filter.prepare(str(REAL))
    c = summary["filter_counts"]
    assert c["synthetic"] == N_SYNTHETIC and c["kept"] == N_MESSAGES - N_SYNTHETIC - c["orphaned"]
    assert summary["trees"] == N_TREES and summary["messages"] == N_MESSAGES
    assert summary["languages"] == {"en": N_MESSAGES} and summary["layout"] == "trees"
    text = oasst_filter.format_summary(summary)
    assert f"{N_TREES} trees, {N_MESSAGES} messages" in text and f"synthetic {N_SYNTHETIC}" in text
    assert oasst_filter.summarize("OpenAssistant/oasst2") is None  # hub ids are not loaded at plan time


# ------------------------------------------------------------------------------------- the command line


def _shell_in(d: Path) -> dict:
    return {"PWD": str(d)}  # as a shell that cd'ed there sets it


@pytest.mark.parametrize("layout", ["trees", "nested", "messages", "parquet"])
def test_the_plan_summarises_each_layout(layouts, layout, tmp_path):
    p = dfm("+experiment=oasst2_translate_tiny", f"data.oasst2={layouts[layout]}", "dry_run=true", cwd=tmp_path,
            env=_shell_in(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert f"({layout}): {N_TREES} trees, {N_MESSAGES} messages; languages: en {N_MESSAGES}; " \
           f"filters drop: synthetic {N_SYNTHETIC}" in p.stdout


def test_a_file_the_loader_cannot_read_exits_2_naming_file_and_line(tmp_path):
    raw = gzip.decompress(REAL.read_bytes()).decode().splitlines()
    bad = tmp_path / "data" / "bad.trees.jsonl"
    bad.parent.mkdir()
    bad.write_text("\n".join(raw[:41] + ['{"prompt": "not a message"}'] + raw[41:]) + "\n")
    tmp_path = tmp_path / "cwd"  # the data lives outside the directory the command runs in
    tmp_path.mkdir()
    p = dfm("+experiment=oasst2_translate_tiny", f"data.oasst2={bad}", cwd=tmp_path, env=_shell_in(tmp_path))
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert f"{bad}:42" in p.stderr and "expected an export tree" in p.stderr
    assert not (tmp_path / "runs").exists()  # nothing written, nothing run
    p = dfm("+experiment=oasst2_translate_tiny", f"data.oasst2={REAL}", "data.oasst2_layout=nested",
            "dry_run=true", cwd=tmp_path, env=_shell_in(tmp_path))
    assert p.returncode == 2 and f"{REAL}:1" in p.stderr
    for bad in ("data.oasst2_layout=xml", "translate.review=maybe", "merge.sft_path=longest"):
        p = dfm("+experiment=oasst2_translate_tiny", bad, "dry_run=true", cwd=tmp_path)
        key, value = bad.split("=")
        assert p.returncode == 2 and f"{key}={value!r}: use one of" in p.stderr, p.stderr
