"""Card stage: the model card's metadata loads with huggingface_hub; PII never reaches training."""

from __future__ import annotations

import json

import pytest

from helpers import dfm, run_dirs

pytest.importorskip("deepspeed")

CPR, EMAIL = "010203-1234", "mette.hansen@example.dk"


def test_pii_filtered_corpus_trains_and_is_carded(tmp_path):
    """pii -> cpt -> card: CPT trains on the filtered corpus (no planted CPR/e-mail in its blocks),
    and the card and datasheet report the counts."""
    from huggingface_hub import DatasetCard, ModelCard
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(60):
            extra = f" Skriv til {EMAIL} eller oplys CPR {CPR}." if i % 3 == 0 else ""
            f.write(json.dumps({"text": f"Efter en kommer to, og efter to kommer tre.{extra}"}) + "\n")
    p = dfm("+experiment=cpt_tiny", "stages=[pii,cpt,card]", f"pii.input={corpus}", f"data.corpus={corpus}",
            "pii.shards=2", "cpt.max_steps=3", "card.repo_id=danish-foundation-models/test-tiny", cwd=tmp_path,
            timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    report = json.loads((run / "stages" / "pii" / "report.json").read_text())
    assert report["counts"]["cpr"] == 20 and report["counts"]["email"] == 20
    cpt_log = (run / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
    assert f"corpus: {run / 'stages' / 'pii' / 'corpus.parquet'}" in cpt_log

    from dfm_hpc.job import store  # the token store cpt trained from

    tok = AutoTokenizer.from_pretrained(str(run / "cache" / "tiny-llama"))
    (stored,) = (run.parent.parent).glob("tokens-*/manifest.json")
    s = store.Store(stored.parent)
    seen = tok.decode(s.tokens(0, s.n_tokens))
    assert "<EMAIL>" in seen and "<CPR>" in seen and EMAIL not in seen and CPR not in seen

    card = ModelCard.load(run / "stages" / "card" / "README.md")
    assert card.data.language == "da" and card.data.license == "apache-2.0"
    assert card.data.model_name == "danish-foundation-models/test-tiny"
    assert {"danish", "cpt"} <= set(card.data.tags)
    assert "cpr 20" in card.text and "email 20" in card.text  # PII counts in the data section
    assert "python -m dfm_hpc rerun" in card.text and "| steps | 3 |" in card.text
    assert (run / "stages" / "card" / "loss_cpt.png").stat().st_size > 1000
    assert (run / "stages" / "cpt" / "model" / "README.md").read_text() == str(card)
    sheet = DatasetCard.load(run / "stages" / "card" / "datasheets" / "corpus-pii-filtered" / "README.md")
    assert sheet.data.language == "da" and "| cpr | 20 |" in sheet.text
    used = json.loads((run / "stages" / "card" / "card.json").read_text())["compute"]
    assert [r["stage"] for r in used["stages"]] == ["pii", "cpt"]  # the card itself is still running
    assert all(r["hours"] > 0 for r in used["stages"])
