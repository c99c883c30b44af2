"""The PII stage's audit trail, IP policy and optional NER pass (issue #16).

The NER plumbing runs a tiny BERT token classifier built here (no hub): no encoder layers, and
embeddings and a classifier set by hand so that known words are PER or LOC and every other word is
O, which makes the expected replacements exact.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from dfm_hpc.text import pii, pii_audit

from helpers import make_cfg, stage_ctx
from helpers.pii_text import planted_docs


def _run(tmp_path, rows, **pii_cfg):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dfm_hpc.stages import pii as stage

    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), src)
    run = tmp_path / "run"
    (run / "stages" / "pii").mkdir(parents=True)
    stage.run(_cfg(input=str(src), **pii_cfg), _ctx(run))
    out = run / "stages" / "pii"
    return json.loads((out / "report.json").read_text()), pq.read_table(out / "corpus.parquet").to_pylist()


ROWS = [
    {"text": "Ring til formanden på 22 33 44 55 eller skriv til mette.k@roklub.dk.", "source": "web"},
    {"text": "CPR-nr. 010190-1234, reg.nr/Kontonummer: 0828 / 0000270912.", "source": "forms"},
    {"text": "Serveren 77.66.12.34 og routeren 192.168.1.1 svarer.", "source": "web"},
    {"text": "Intet at se her.", "source": "wiki"},
]


def test_report_counts_per_file_and_source_and_masked_samples(tmp_path):
    report, out = _run(tmp_path, ROWS)
    assert report["counts"] == {"cpr": 1, "email": 1, "phone": 1, "ip": 2, "iban": 1}
    assert report["files"] == {"corpus.parquet": report["counts"]}
    assert report["by_source"] == {"forms": {"cpr": 1, "email": 0, "phone": 0, "ip": 0, "iban": 1},
                                   "web": {"cpr": 0, "email": 1, "phone": 1, "ip": 2, "iban": 0}}
    assert report["ip_policy"] == "all" and report["ner"] is None
    assert sorted(s["type"] for s in report["samples"]) == ["cpr", "email", "iban", "ip", "ip", "phone"]
    for s in report["samples"]:
        assert not re.search(r"\d", s["context"]), s  # every digit masked, the span's and its context's
        assert f"[[{s['type']}: " in s["context"] and s["view"] == "corpus"
    email = next(s for s in report["samples"] if s["type"] == "email")
    assert "[[email: *******@roklub.dk]]" in email["context"] and "<PHONE>" in email["context"]
    assert "mette" not in json.dumps(report)
    assert out[0]["text"] == "Ring til formanden på <PHONE> eller skriv til <EMAIL>." and out[0]["source"] == "web"


def test_audit_samples_are_capped_per_type(tmp_path):
    rows = [{"text": f"Tlf. 2{i:07d} og tlf. 3{i:07d}"} for i in range(40)]
    report, _ = _run(tmp_path, rows, audit_samples=3, chunk_size=5)
    assert report["counts"]["phone"] == 80
    assert [s["type"] for s in report["samples"]] == ["phone"] * 3
    assert report["samples"] == pii_audit.pick(report["samples"], 3)  # deterministic choice


def test_ip_policy_public_and_off(tmp_path):
    report, out = _run(tmp_path, ROWS, ip_policy="public")
    assert report["counts"]["ip"] == 1 and out[2]["text"] == "Serveren <IP> og routeren 192.168.1.1 svarer."
    report, _ = _run(tmp_path / "off", ROWS, ip_policy="off")
    assert report["counts"]["ip"] == 0


def test_bad_ip_policy_is_refused_by_the_schema():
    from omegaconf.errors import ValidationError

    with pytest.raises(ValidationError, match="expected one of \\[all, public, off\\]"):
        _cfg(ip_policy="private")


# --- the NER pass ---------------------------------------------------------------------------------
PER_WORDS, LOC_WORDS = {"jens", "hansen", "mette"}, {"nørrebrogade", "vestergade"}


def tiny_ner(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    words = sorted(PER_WORDS | LOC_WORDS | {"bor", "på", "og", "ringer", "til", "i", "aarhus", "kom", "med", "."})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + [str(d) for d in range(10)] + [",", ":"]
    path.mkdir(parents=True)
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=0, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    model = BertForTokenClassification(cfg).eval()
    u = torch.tensor([1.0, -1, 1, -1, 0, 0, 0, 0])  # the PER direction
    v = torch.tensor([0.0, 0, 0, 0, 1, -1, 1, -1])  # the LOC direction
    with torch.no_grad():
        emb = model.bert.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.LayerNorm.weight.fill_(1.0)
        emb.LayerNorm.bias.zero_()
        for i, w in enumerate(vocab):
            emb.word_embeddings.weight[i] = u if w in PER_WORDS else v if w in LOC_WORDS else -(u + v)
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1] = 5 * u
        model.classifier.weight[3] = 5 * v
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_ner_pass_replaces_names_and_addresses(tmp_path):
    model = tiny_ner(tmp_path / "ner")
    rows = [{"text": "Jens Hansen bor på Vestergade 12, 2. th. og ringer til 22 33 44 55."},
            {"text": "Mette kom med i Aarhus."}]
    report, out = _run(tmp_path, rows, ner=str(model))
    assert out[0]["text"] == "<NAME> bor på <ADDRESS> og ringer til <PHONE>."
    assert out[1]["text"] == "<NAME> kom med i Aarhus."  # a town alone is no address
    assert report["types"] == [*pii.TYPES, "name", "address"] and report["ner"] == str(model)
    assert report["counts"]["name"] == 2 and report["counts"]["address"] == 1
    names = sorted(re.search(r"\[\[name: ([^\]]*)\]\]", s["context"])[1]
                   for s in report["samples"] if s["type"] == "name")
    assert names == ["J*** H*****", "M****"]  # initials only


def test_ner_fakes_and_merge_views(tmp_path):
    from dfm_hpc.stages import pii as stage

    model = tiny_ner(tmp_path / "ner")
    run = _make_run(tmp_path / "run", n_sft=3, n_dpo=2)
    sft = run / "stages" / "merge" / "sft.jsonl"
    rows = [json.loads(line) for line in sft.read_text(encoding="utf-8").splitlines()]
    rows[0]["messages"][0]["content"] = "Jens Hansen bor på Nørrebrogade 7."
    sft.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stage.run(_cfg(ner=str(model), replacement="fake"), _ctx(run))
    got = json.loads((run / "stages" / "pii" / "sft.jsonl").read_text(encoding="utf-8").splitlines()[0])
    text = got["messages"][0]["content"]
    assert not text.startswith("Jens Hansen") and "Nørrebrogade" not in text
    assert re.fullmatch(r"[A-ZÆØÅ]\w+ [A-ZÆØÅ]\w+ bor på \w+ \d+\.", text), text
    assert text == pii.replace("Jens Hansen bor på Nørrebrogade 7.", [(0, 11, "name"), (19, 33, "address")], "fake")[0]


def test_prefetch_knows_the_ner_model():
    from dfm_hpc.login import prefetch

    cfg = _cfg(input="/data/corpus.jsonl", ner="saattrupdan/nbailab-base-ner-scandi", ner_revision="abc123")
    cfg.stages = ["pii"]
    needs = prefetch.needs(cfg)
    assert [(n.kind, n.repo_id, n.revision, n.key) for n in needs] == [
        ("model", "saattrupdan/nbailab-base-ner-scandi", "abc123", "pii.ner")]
    cfg.pii.ner = None
    assert prefetch.needs(cfg) == []


def test_datasheet_shows_counts_per_file_and_source_and_the_masked_samples(tmp_path):
    from dfm_hpc.stages import card

    rows = [*ROWS, {"text": "Tlf. 33 44 55 66 | mobil 44 55 66 77", "source": "forms"}]
    report, _ = _run(tmp_path, rows)
    sheets = card.datasheets(_cfg(input=str(tmp_path / "corpus.parquet")), tmp_path / "run", tmp_path / "card")
    assert sheets == ["corpus-pii-filtered"]
    text = (tmp_path / "card" / "datasheets" / "corpus-pii-filtered" / "README.md").read_text()
    assert "IP addresses: `all`" in text and "| phone | 3 |" in text
    assert "| file | cpr | email | phone | ip | iban |" in text and "| corpus.parquet | 1 | 1 | 3 | 2 | 1 |" in text
    assert "| forms | 1 | 0 | 2 | 0 | 1 |" in text and "| web | 0 | 1 | 1 | 2 | 0 |" in text
    for smp in report["samples"]:
        assert smp["context"].replace("|", "&#124;") in text  # every sample, a table cell each
    assert "[[email: *******@roklub.dk]]" in text and "mette" not in text
    samples = text.split("</summary>")[1].replace("&#124;", "|")
    assert not re.search(r"\d\d", samples)  # no number survives in the samples (row indices are < 10)


def test_masking_hides_digits_hex_and_local_parts():
    assert pii_audit.mask("2001:db8::ff00:42", "ip") == "####:###::####:##"
    assert pii_audit.mask("DK50 0040 0440 1162 43", "iban") == "DK## #### #### #### ##"
    assert pii_audit.mask("lone [at] skolen [dot] dk", "email") == "**** [at] skolen [dot] dk"
    assert pii_audit.mask("Vestergade 12, 2. th.", "address") == "V********* ##, #. t**"
    text = "Skriv til lone@skolen.dk eller ring 3502 6653, kode 1234 56."
    spans = pii.find(text)
    assert [t for *_, t in spans] == ["email", "phone"]
    # the other span as its tag; a number the filter does not take ("1234 56") masked, not shown
    assert pii_audit.context(text, spans, 0, pii.TAGS) == \
        "Skriv til [[email: ****@skolen.dk]] eller ring <PHONE>, kode #### ##."
    assert pii_audit.context(text, spans, 1, pii.TAGS) == \
        "Skriv til <EMAIL> eller ring [[phone: #### ####]], kode #### ##."


# --- sharded, resumable: the stage over a run's merge views ----------------------------------------
def _chat(rng, k):
    docs = planted_docs(2, seed=rng.randint(0, 10 ** 6), per_doc=3)
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": docs[i % len(docs)][0]} for i in range(k)]


def _make_run(root: Path, n_sft=23, n_dpo=11) -> Path:
    rng = random.Random(0)
    merge = root / "stages" / "merge"
    merge.mkdir(parents=True)
    with open(merge / "sft.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_sft):
            f.write(json.dumps({"messages": _chat(rng, 2 + i % 3), "message_tree_id": f"t{i}", "message_ids": [i]},
                               ensure_ascii=False) + "\n")
    with open(merge / "dpo.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_dpo):
            f.write(json.dumps({"prompt": _chat(rng, 1), "chosen": _chat(rng, 1)[:1], "rejected": _chat(rng, 1),
                                "message_tree_id": f"d{i}", "chosen_id": "c", "rejected_id": "r"},
                               ensure_ascii=False) + "\n")
    (root / "stages" / "pii").mkdir()
    return root


def _cfg(**pii_cfg):
    return make_cfg(pii={"shards": 3, "chunk_size": 2, **pii_cfg})


def _ctx(run: Path, worker=0, workers=1):
    return stage_ctx(run, "pii", worker=worker, workers=workers)


def _expected(run: Path, replacement: str):
    """What the outputs must be: every input row, in order, each content scrubbed, and the counts."""
    views = {}
    for view in ("sft", "dpo"):
        rows, total, changed = [], Counter(), 0
        for line in (run / "stages" / "merge" / f"{view}.jsonl").read_text(encoding="utf-8").splitlines():
            row, c = json.loads(line), Counter()
            for key in (["messages"] if view == "sft" else ["prompt", "chosen", "rejected"]):
                for m in row[key]:
                    m["content"], n = pii.scrub(m["content"], pii.TYPES, replacement)
                    c.update(n)
            rows.append(row)
            total.update(c)
            changed += bool(c)
        views[view] = (rows, total, changed)
    return views


def test_stage_two_workers_assemble_in_order(tmp_path):
    from dfm_hpc.stages import pii as stage

    run = _make_run(tmp_path)
    cfg = _cfg()
    stage.run(cfg, _ctx(run, 0, 2))  # shards 0, 2, 4: not all done, nothing assembled yet
    out = run / "stages" / "pii"
    assert sorted(p.name for p in (out / "shards").glob("*.done")) == [f"shard-{s:05d}.done" for s in (0, 2, 4)]
    assert not (out / "sft.jsonl").exists() and not (out / "report.json").exists()
    stage.run(cfg, _ctx(run, 1, 2))  # shards 1, 3, 5: the last one assembles
    report = json.loads((out / "report.json").read_text())
    import pyarrow.parquet as pq

    total = Counter()
    for view, (rows, counts, changed) in _expected(run, "tags").items():
        got = [json.loads(line) for line in (out / f"{view}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert got == rows  # every row, in input order, content scrubbed, other columns as they were
        assert pq.read_table(out / f"{view}.parquet").to_pylist() == rows
        assert report["views"][view] == {"rows": len(rows), "changed_rows": changed,
                                         "counts": {t: counts.get(t, 0) for t in pii.TYPES}}
        total.update(counts)
    assert report["counts"] == {t: total[t] for t in pii.TYPES} and all(report["counts"].values())
    assert report["replacement"] == "tags" and report["types"] == list(pii.TYPES)
    scanned = sum(len(m["content"].encode()) for v in ("sft", "dpo")
                  for line in (run / "stages" / "merge" / f"{v}.jsonl").read_text(encoding="utf-8").splitlines()
                  for k in ("messages", "prompt", "chosen", "rejected") for m in json.loads(line).get(k, []))
    assert report["bytes"] == scanned
    assert "<CPR>" in (out / "sft.jsonl").read_text(encoding="utf-8")


def _outputs(run: Path):
    out = run / "stages" / "pii"
    files = {n: (out / n).read_bytes() for n in ("sft.jsonl", "dpo.jsonl", "sft.parquet", "dpo.parquet")}
    report = json.loads((out / "report.json").read_text())
    report.pop("seconds")
    return files, report


def test_resume_after_preemption_and_torn_line_is_byte_identical(tmp_path):
    from dfm_hpc.job.rank import Preempted
    from dfm_hpc.stages import pii as stage

    cfg = _cfg(replacement="fake")
    ref = _make_run(tmp_path / "ref")
    stage.run(cfg, _ctx(ref))

    run = _make_run(tmp_path / "run")
    ctx = _ctx(run)
    calls = []

    def stop_after_first_chunk():  # what USR2 during chunk 0 would do
        calls.append(1)
        return len(calls) > 1

    ctx.should_stop = stop_after_first_chunk
    with pytest.raises(Preempted):
        stage.run(cfg, ctx)
    shard0 = run / "stages" / "pii" / "shards" / "shard-00000.jsonl"
    assert len(shard0.read_text(encoding="utf-8").splitlines()) == 2  # one chunk of 2 rows on disk
    assert not (run / "stages" / "pii" / "shards" / "shard-00000.done").exists()
    with open(shard0, "a", encoding="utf-8") as f:
        f.write('{"chunk": 1, "n": {}, "b": 3, "row": {"messages": [{"role": "us')  # a kill mid-write
    stage.run(cfg, _ctx(run))
    assert _outputs(run) == _outputs(ref)
    assert "<CPR>" not in (run / "stages" / "pii" / "sft.jsonl").read_text(encoding="utf-8")


def test_changed_settings_refuse_to_resume(tmp_path):
    from dfm_hpc.job.rank import Preempted
    from dfm_hpc.stages import pii as stage

    run = _make_run(tmp_path)
    ctx = _ctx(run)
    ctx.stop_requested = True
    with pytest.raises(Preempted):
        stage.run(_cfg(), ctx)
    with pytest.raises(RuntimeError, match="another plan"):
        stage.run(_cfg(replacement="fake"), _ctx(run))


def test_parquet_corpus_keeps_other_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dfm_hpc.stages import pii as stage

    docs = planted_docs(10, seed=5, per_doc=4)
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(docs)), pa.int32()), "text": [d[0] for d in docs]}), src,
                   row_group_size=7)
    run = tmp_path / "run"
    (run / "stages" / "pii").mkdir(parents=True)
    stage.run(_cfg(input=str(src), chunk_size=5), _ctx(run))
    out = pq.read_table(run / "stages" / "pii" / "corpus.parquet")
    assert out.schema.field("id").type == pa.int32()
    assert out.column("id").to_pylist() == list(range(len(docs)))
    assert out.column("text").to_pylist() == [pii.scrub(d[0])[0] for d in docs]
    report = json.loads((run / "stages" / "pii" / "report.json").read_text())
    assert report["counts"] == {t: 10 for t in pii.TYPES}  # exactly what was planted
    assert report["views"]["corpus"]["rows"] == len(docs)


def test_tiny_corpus_input(tmp_path):
    from dfm_hpc.stages import pii as stage

    run = tmp_path / "run"
    (run / "stages" / "pii").mkdir(parents=True)
    stage.run(_cfg(input="tiny:corpus"), _ctx(run))
    report = json.loads((run / "stages" / "pii" / "report.json").read_text())
    assert report["views"]["corpus"]["rows"] == 400 and report["counts"] == {t: 0 for t in pii.TYPES}
    src = (run / "cache" / "danish_tiny.jsonl").read_text(encoding="utf-8")
    assert (run / "stages" / "pii" / "corpus.jsonl").read_text(encoding="utf-8") == src
