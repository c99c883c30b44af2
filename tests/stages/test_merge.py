"""Merge on the real OASST fixture (tests/data/en_100_tree.jsonl.gz): the outputs do not depend on the shard
layout, SFT conversations are real root-to-assistant paths chosen by a documented stable key, DPO pairs are
ranked siblings, and empty views still write their files. The shards are written as the translate stage
writes them, with the source text as "translation" (the model has no part in what is tested here; the
tiny-T5 run over 1, 3 and 4 shards is in test_translate.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from dfm_hpc import config_io
from dfm_hpc.job.shards import balance
from dfm_hpc.stages import merge, translate
from dfm_hpc.text import oasst, oasst_filter

from helpers import DATA

REAL = DATA / "en_100_tree.jsonl.gz"


@pytest.fixture(scope="module")
def kept() -> list:
    return oasst_filter.prepare(str(REAL))[0]  # the default filters, as the translate stage applies them


def _rows(messages: list, text_da=lambda m: m["text"]) -> list:
    return [{"chunk": 0, "order": i, **{f: m.get(f) for f in translate.KEEP}, "text": m["text"],
             "text_da": text_da(m), "segments": 1} for i, m in enumerate(messages)]


def _write_shards(run: Path, messages: list, n: int, shuffle: bool = False, **kw) -> Path:
    rows = _rows(messages, **kw)
    shards = balance([len(m["text"]) + 1 for m in messages], n)
    tdir = run / "stages" / "translate"
    (tdir / "shards").mkdir(parents=True)
    for s, idx in enumerate(shards):
        part = [rows[i] for i in idx]
        if shuffle:
            random.Random(s).shuffle(part)
        (tdir / "shards" / f"shard-{s:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        (tdir / "shards" / f"shard-{s:05d}.done").write_text("{}\n")
    (tdir / "plan.json").write_text(json.dumps({
        "source": str(REAL), "translator": "identity", "translator_revision": None, "backend": "none",
        "target_lang": "da", "messages": len(messages), "shards": [len(s) for s in shards],
        "filter_counts": {"input": 1167, "kept": len(messages), "tree_state": 0, "synthetic": 22},
        "filters": {"drop_synthetic": True},
        "summary": {"messages": 1167, "trees": 100, "layout": "trees", "duplicates": 0}}))
    return tdir


def _merge(run: Path, **merge_cfg) -> Path:
    cfg = config_io.typed({"stages": ["translate", "merge"], "data": {"oasst2": str(REAL)},
                        "merge": {"drop": ["empty"], **merge_cfg}})
    sdir = run / "stages" / "merge"
    sdir.mkdir(parents=True)
    merge.run(cfg, SimpleNamespace(is_main=True, run_dir=run, stage_dir=sdir, log=lambda msg: None))
    return sdir


def _ok(rows: list) -> list:
    for r in rows:
        r["ok"] = True
    return rows


@pytest.fixture(scope="module")
def merged(tmp_path_factory, kept) -> dict:
    """shard count -> merge dir; "1r": one shard written in shuffled row order."""
    out = {}
    for n, shuffle in ((1, False), (3, False), (4, False), ("1r", True)):
        run = tmp_path_factory.mktemp(f"shards{n}")
        _write_shards(run, kept, 1 if n == "1r" else n, shuffle=shuffle)
        out[n] = _merge(run)
    return out


def test_outputs_do_not_depend_on_the_shard_count(merged):
    for name in ("messages.jsonl", "sft.jsonl", "dpo.jsonl"):
        want = (merged[1] / name).read_bytes()
        assert want.count(b"\n") >= 95
        for n in (3, 4, "1r"):
            assert (merged[n] / name).read_bytes() == want, (name, n)
    reports = [json.loads((merged[n] / "report.json").read_text()) for n in (1, 3, 4)]
    assert reports[0] == reports[1] == reports[2]
    assert reports[0]["sft_conversations"] == 95 and reports[0]["dpo_pairs"] > 150


def test_sft_conversations_are_real_paths_that_cannot_be_extended(merged, kept):
    by_id = {m["message_id"]: m for m in kept}
    kids = oasst.children(kept)
    sft = [json.loads(x) for x in (merged[1] / "sft.jsonl").read_text().splitlines()]
    assert len({c["message_tree_id"] for c in sft}) == len(sft)  # one per tree
    for conv in sft:
        ids, turns = conv["message_ids"], conv["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2) and len(turns) % 2 == 0
        assert by_id[ids[0]]["parent_id"] is None
        assert all(by_id[b]["parent_id"] == a for a, b in zip(ids, ids[1:]))  # along a real path
        assert [t["content"] for t in turns] == [by_id[i]["text"] for i in ids]
        for a, b in zip(ids, ids[1:]):  # each assistant turn is its prompt's best-ranked reply
            if by_id[b]["role"] == "assistant":
                ranks = [c["rank"] for c in kids[a] if c["rank"] is not None]
                assert by_id[b]["rank"] == (min(ranks) if ranks else None)
        # not cut short: no follow-up prompt of the last answer has an answer itself
        assert not any(kids.get(p["message_id"]) for p in kids.get(ids[-1], []))


def test_unranked_ties_break_on_created_date_then_id_whatever_the_row_order(kept):
    rows = _ok(_rows(kept))

    def views(rows):  # as sets: the input order may reorder the output rows, never change them
        return [sorted(json.dumps(x, sort_keys=True) for x in v) for v in merge.build_views(rows, "all")]

    base = views(rows)
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert views(shuffled) == base
    # a tree with several answered follow-up prompts: the earliest created, then the smallest id
    kids = oasst.children(rows)
    a = next(r for r in rows if r["role"] == "assistant"
             and sum(bool(kids.get(p["message_id"])) for p in kids.get(r["message_id"], [])) >= 2)
    answered = [p for p in kids[a["message_id"]] if kids.get(p["message_id"])]
    for p, when in zip(answered, ("2023-02-02", "2023-02-01")):
        p["created_date"] = when
    paths = merge.sft_paths(next(r for r in rows if r["message_id"] == a["message_tree_id"]), kids, None)
    through = [p for p in paths if a["message_id"] in [m["message_id"] for m in p]]
    assert through[0][through[0].index(a) + 1] is answered[1]  # 2023-02-01 first


def test_all_paths_and_top_k(kept):
    rows = _ok(_rows(kept))
    best, _ = merge.build_views(rows)
    every, _ = merge.build_views(rows, "all")
    top2, _ = merge.build_views(rows, "all", 2)
    kids = oasst.children(rows)
    by_id = {r["message_id"]: r for r in rows}
    # an assistant reply ends a path when none of its follow-up prompts is answered
    leaves = [r for r in rows if r["role"] == "assistant"
              and not any(kids.get(p["message_id"]) for p in kids.get(r["message_id"], []))]
    assert sorted(c["message_ids"][-1] for c in every) == sorted(r["message_id"] for r in leaves)
    for conv in every:
        ids = conv["message_ids"]
        assert by_id[ids[0]]["parent_id"] is None and all(by_id[b]["parent_id"] == a for a, b in zip(ids, ids[1:]))
    trees = [c["message_tree_id"] for c in best]
    assert [next(c for c in every if c["message_tree_id"] == t) for t in trees] == best  # the first is the best
    for t in trees:
        mine = [c for c in every if c["message_tree_id"] == t]
        assert [c for c in top2 if c["message_tree_id"] == t] == mine[:2]
    assert len(every) > 2 * len(best)
    with pytest.raises(ValueError, match="sft_path"):
        merge.build_views(rows, "longest")


def test_dpo_pairs_are_ranked_siblings(merged, kept):
    by_id = {m["message_id"]: m for m in kept}
    dpo = [json.loads(x) for x in (merged[1] / "dpo.jsonl").read_text().splitlines()]
    assert dpo
    for d in dpo:
        c, r = by_id[d["chosen_id"]], by_id[d["rejected_id"]]
        assert c["parent_id"] == r["parent_id"] and c["rank"] < r["rank"] and c["role"] == r["role"] == "assistant"
        assert d["prompt"][-1] == {"role": "user", "content": by_id[c["parent_id"]]["text"]}
        assert d["chosen"][0]["content"] == c["text"] and d["rejected"][0]["content"] == r["text"]


def test_merged_messages_keep_the_fields_filters_need(merged, kept):
    rows = [json.loads(x) for x in (merged[1] / "messages.jsonl").read_text().splitlines()]
    assert [r["message_id"] for r in rows] == [m["message_id"] for m in kept]
    for r, m in zip(rows, kept):
        for k in ("tree_state", "deleted", "review_result", "synthetic", "model_name", "created_date", "rank",
                  "parent_id", "role", "text"):
            assert r[k] == m.get(k), k
    card = (merged[1] / "README.md").read_text()
    report = json.loads((merged[1] / "report.json").read_text())
    assert report["source_messages"] == 1167 and report["filters"] == {"drop_synthetic": True}
    assert "1167 messages" in card and "drop_synthetic=True" in card


def test_empty_views_still_write_their_files(tmp_path, kept):
    pq = pytest.importorskip("pyarrow.parquet")
    one_tree = [m for m in kept if m["message_tree_id"] == kept[0]["message_tree_id"]]
    _write_shards(tmp_path, one_tree, 2, text_da=lambda m: "")
    out = _merge(tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["usable"] == 0 and report["sft_conversations"] == report["dpo_pairs"] == 0
    for name, cols in (("sft", {"messages", "message_ids"}), ("dpo", {"prompt", "chosen", "rejected"}),
                       ("messages", {"message_id", "text_da", "quality_flags"})):
        table = pq.read_table(out / f"{name}.parquet")
        assert cols <= set(table.column_names)
        assert table.num_rows == (len(one_tree) if name == "messages" else 0)
        assert (out / f"{name}.jsonl").read_text() == "" or name == "messages"


def test_duplicated_rows_in_shards_are_refused_naming_the_files(tmp_path, kept):
    tdir = _write_shards(tmp_path, kept[:30], 2)
    first = (tdir / "shards" / "shard-00000.jsonl").read_text().splitlines()[0]
    with open(tdir / "shards" / "shard-00001.jsonl", "a") as f:
        f.write(first + "\n")
    with pytest.raises(RuntimeError) as e:
        merge.load_shards(tdir)
    msg = str(e.value)
    assert "shard-00000.jsonl:1" in msg and "shard-00001.jsonl:" in msg and str(REAL) in msg
    assert json.loads(first)["message_id"] in msg


def test_the_model_card_and_datasheet_carry_the_filter_counts(merged, tmp_path):
    from dfm_hpc.stages import card

    run = merged[1].parent.parent
    cfg = config_io.typed({"stages": ["translate", "merge", "sft", "card"], "data": {"oasst2": str(REAL)}})
    text = card.data_section(cfg, run)
    assert "Left out before translation: synthetic 22 (of 1167 messages)" in text
    assert "oasst2-da" in card.datasheets(cfg, run, tmp_path)
    sheet = (tmp_path / "datasheets" / "oasst2-da" / "README.md").read_text()
    assert "| synthetic | 22 |" in sheet and "| tree_state | 0 |" in sheet
