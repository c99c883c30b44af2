"""The evaluate stage (perplexity, EuroEval adapter, generations) and `python -m dfm_hpc compare`."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, dfm, run_dirs
from dfm_hpc import results
from dfm_hpc.login import compare

# One record as EuroEval 16.11 writes it (BenchmarkResult.model_dump(), one line of its results JSONL)
EUROEVAL_RECORD = {
    "dataset": "angry-tweets", "task": "sentiment-classification", "languages": ["da"], "model": "/x/model",
    "results": {"raw": [{"test_mcc": 0.1, "test_macro_f1": 0.3}, {"test_mcc": 0.2, "test_macro_f1": 0.4}],
                "total": {"test_mcc": 15.0, "test_mcc_se": 9.8, "test_macro_f1": 35.0, "test_macro_f1_se": 9.8}},
    "num_model_parameters": 1, "max_sequence_length": 2048, "vocabulary_size": 512, "merge": False,
    "generative": True, "generative_type": "base", "few_shot": True, "validation_split": False,
    "euroeval_version": "16.11.0", "transformers_version": "5.23.0", "torch_version": "2.13.0+cpu",
    "vllm_version": None, "xgrammar_version": None,
}
PARSED = {"sentiment-classification/angry-tweets": {"mcc": 15.0, "mcc_se": 9.8, "macro_f1": 35.0, "macro_f1_se": 9.8}}


# ---------------------------------------------------------------------------- compare (login node)

def _results(run: Path, models: list, eval_data: str = "tiny:eval") -> None:
    (run / "stages" / "evaluate").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    (run / "stages" / "evaluate" / "results.json").write_text(json.dumps({"eval_data": eval_data, "models": models}))


def _model(name, loss, texts=40, tokens=1000, euroeval=None, note=None, seconds=1.5):
    return {"name": name, "path": f"/m/{name}", "eval_loss": loss, "perplexity": math.exp(loss), "eval_texts": texts,
            "eval_tokens": tokens, "euroeval": euroeval, "euroeval_note": note, "seconds": seconds}


def test_compare_runs_and_sweep_points(tmp_path):
    a = tmp_path / "runs" / "sft_tiny" / "run_a"
    _results(a, [_model("base", 6.0), _model("sft", 2.0, euroeval=PARSED)])
    sweep = tmp_path / "runs" / "sft_tiny" / "sweep_b"
    for i, loss in ((0, 1.5), (1, 1.25)):
        _results(sweep / str(i), [_model("sft", loss, note="vLLM missing" if i else None)])
    (sweep / "sweep.yaml").write_text("name: sft_tiny\npoints:\n- run_dir: '0'\n  overrides: [sft.lr=1e-4]\n"
                                      "- run_dir: '1'\n  overrides: [sft.lr=2e-4]\n")
    text = compare.render([str(a), str(sweep)])
    assert text == """\
| metric | run_a:base | run_a:sft | sweep_b/0:sft | sweep_b/1:sft |
|---|---:|---:|---:|---:|
| eval_loss | 6.0000 | 2.0000 | 1.5000 | 1.2500 |
| perplexity | 403.4288 | 7.3891 | 4.4817 | 3.4903 |
| eval_texts | 40 | 40 | 40 | 40 |
| eval_tokens | 1000 | 1000 | 1000 | 1000 |
| euroeval sentiment-classification/angry-tweets mcc | – | 15.0000 | – | – |
| euroeval sentiment-classification/angry-tweets mcc_se | – | 9.8000 | – | – |
| euroeval sentiment-classification/angry-tweets macro_f1 | – | 35.0000 | – | – |
| euroeval sentiment-classification/angry-tweets macro_f1_se | – | 9.8000 | – | – |
| seconds | 1.5000 | 1.5000 | 1.5000 | 1.5000 |

- run_a: %s, eval data tiny:eval
- sweep_b/0: %s (sft.lr=1e-4), eval data tiny:eval
- sweep_b/1: %s (sft.lr=2e-4), eval data tiny:eval

EuroEval notes:
- sweep_b/1:sft: vLLM missing
""" % (a / results.RESULTS, sweep / "0" / results.RESULTS, sweep / "1" / results.RESULTS)


def test_compare_cli_results_file_and_missing(tmp_path):
    a = tmp_path / "run_a"
    _results(a, [_model("base", 3.0)])
    empty = tmp_path / "run_b"
    empty.mkdir()
    (empty / "config.yaml").write_text("name: x\n")
    r = dfm("compare", str(a / results.RESULTS), str(empty), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["| metric | run_a:base |", "|---|---:|", "| eval_loss | 3.0000 |"]
    assert f"- run_b: no evaluate results ({empty / results.RESULTS} is missing)" in r.stdout
    r = dfm("compare", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert r.returncode == 2 and "no run" in r.stdout


def test_compare_imports_no_torch():
    code = ("import sys; from dfm_hpc.__main__ import main; main(['compare', '/nonexistent']); "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "assert not bad, bad")
    import subprocess

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- EuroEval adapter

def test_parse_euroeval_records():
    from dfm_hpc.stages import evaluate

    nan = {**EUROEVAL_RECORD, "dataset": "scala-da", "task": "linguistic-acceptability",
           "results": {"raw": [], "total": {"test_mcc": float("nan"), "test_mcc_se": 1.0}}}
    assert evaluate.parse_euroeval([EUROEVAL_RECORD, nan]) == {
        **PARSED, "linguistic-acceptability/scala-da": {"mcc": None, "mcc_se": 1.0}}


def test_euroeval_unavailable_is_a_note_not_a_crash(tmp_path, monkeypatch):
    from dfm_hpc.stages import evaluate

    monkeypatch.setattr(evaluate.importlib.util, "find_spec", lambda name: None)
    scores, note = evaluate.run_euroeval("/m", [], tmp_path, tmp_path / "r.jsonl")
    assert scores is None and "EuroEval is not installed" in note


def test_euroeval_real_package_accepts_the_call(tmp_path, monkeypatch):
    """With the real package (skipped when it is not installed): its record type round-trips through
    the parser, and the adapter's arguments bind to the installed Benchmarker's signatures."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    euroeval = pytest.importorskip("euroeval", reason="EuroEval's pins conflict with the dev venv's; "
                                   "`make test` runs this test in its own venv (.venv-euroeval)")
    from euroeval.data_models import BenchmarkResult

    from dfm_hpc.stages import evaluate

    rec = BenchmarkResult.from_dict(json.loads(json.dumps(EUROEVAL_RECORD)))
    assert evaluate.parse_euroeval([rec]) == PARSED
    init, bench = evaluate.euroeval_kwargs("/m", ["sentiment-classification"], tmp_path)
    inspect.signature(euroeval.Benchmarker).bind(**init)
    inspect.signature(euroeval.Benchmarker.benchmark).bind(None, **bench)
    euroeval.Benchmarker(**init)  # the installed version takes these settings
    # the whole call on a local decoder model, offline: without vLLM EuroEval benchmarks nothing
    # (it logs "requires the `generative` extra") and returns []; the adapter says so, no crash
    from dfm_hpc import tiny

    monkeypatch.setattr(evaluate, "euroeval_blocker", lambda: None)
    model = tiny.resolve("tiny:llama", tmp_path / "cache")
    before = os.environ.get("HF_HUB_OFFLINE")
    scores, note = evaluate.run_euroeval(model, ["sentiment-classification"], tmp_path / "ee", tmp_path / "r.jsonl")
    assert scores is None and "produced no results" in note
    assert os.environ.get("HF_HUB_OFFLINE") == before  # offline only during the call


# ---------------------------------------------------------------------------- the stage itself

def _train_copy(base: str, out: Path, texts: list, steps: int = 60) -> Path:
    """A copy of the tiny base trained a few steps on the (learnable) tiny corpus, with plain torch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = tok(" ".join(texts), return_tensors="pt")["input_ids"][0]
    blocks = ids[: len(ids) // 64 * 64].view(-1, 64)
    model.train()
    for step in range(steps):
        batch = blocks[(step * 8) % len(blocks):][:8]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_stage_on_tiny_models(tmp_path, capsys):
    from omegaconf import OmegaConf

    from dfm_hpc import dist, schema, tiny
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate
    from dfm_hpc.tiny import data as cpt

    run = tmp_path / "run"
    sdir = run / "stages" / "evaluate"
    sdir.mkdir(parents=True)
    base = tiny.resolve("tiny:llama", run / "cache")
    train_texts = [json.loads(ln)["text"] for ln in cpt.tiny_corpus(tmp_path / "train.jsonl", 200).read_text().splitlines()]
    trained = _train_copy(base, tmp_path / "trained", train_texts)
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), {
        "stages": ["evaluate"], "data": {"eval_text": "tiny:eval"},
        "evaluate": {"models": ["base", str(trained)], "euroeval": True, "generation_prompts": 2, "max_new_tokens": 8,
                     "max_eval_texts": 30}})
    ctx = StageContext(run, sdir, dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500))
    evaluate.run(cfg, ctx)

    res = json.loads((sdir / "results.json").read_text())
    assert res["eval_data"] == "tiny:eval"
    assert [m["name"] for m in res["models"]] == ["base", "trained"]
    for m in res["models"]:
        assert set(m) == {"name", "path", "eval_loss", "perplexity", "eval_texts", "eval_tokens", "euroeval",
                          "euroeval_note", "seconds"}
        assert math.isfinite(m["perplexity"]) and m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
        assert m["eval_texts"] == 30 and m["eval_tokens"] > 30
        # EuroEval needs vLLM for decoder models (and is not in the test env): a note, not a crash
        assert m["euroeval"] is None and ("vLLM" in m["euroeval_note"] or "not installed" in m["euroeval_note"])
    base_row, trained_row = res["models"]
    assert trained_row["perplexity"] < base_row["perplexity"] / 5  # learnt the patterned text
    assert base_row["eval_tokens"] == trained_row["eval_tokens"]  # same tokenizer, same texts

    samples = [json.loads(ln) for ln in (sdir / "samples.jsonl").read_text().splitlines()]
    assert [(s["model"], s["prompt"]) for s in samples] == [(m, p) for m in ("base", "trained") for p in evaluate.PROMPTS[:2]]
    assert all(isinstance(s["output"], str) for s in samples)
    md = (sdir / "results.md").read_text()
    assert "| metric | base | trained |" in md and "| perplexity |" in md
    assert "## trained: Hvad er hovedstaden i Danmark?" in (sdir / "samples.md").read_text()
    log = capsys.readouterr().out
    assert "[base] perplexity on 30 texts" in log and "[trained] EuroEval" in log


def test_model_specs_default_and_refs(tmp_path):
    from omegaconf import OmegaConf

    from dfm_hpc import dist, schema
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate

    run = tmp_path / "run"
    for st in ("sft", "dpo"):
        (run / "stages" / st / "model").mkdir(parents=True)
    other = tmp_path / "other"
    (other / "stages" / "sft" / "model").mkdir(parents=True)
    (other / "config.yaml").write_text("stages: [sft, evaluate]\n")
    ctx = StageContext(run, run / "stages" / "evaluate", dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500))
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config),
                          {"stages": ["sft", "dpo", "evaluate"], "model": {"name_or_path": "org/base"}})
    assert evaluate.model_specs(cfg, ctx) == [("base", "org/base"), ("sft", str(run / "stages/sft/model")),
                                              ("dpo", str(run / "stages/dpo/model"))]
    cfg.evaluate.models = [str(other), "dpo"]
    assert evaluate.model_specs(cfg, ctx) == [("other/sft", str(other / "stages/sft/model")),
                                              ("dpo", str(run / "stages/dpo/model"))]
    cfg.evaluate.models = ["cpt"]
    with pytest.raises(FileNotFoundError, match="no cpt model"):
        evaluate.model_specs(cfg, ctx)


def test_cli_end_to_end(tmp_path):
    """The real CLI with the local launcher: evaluate the tiny base of the sft_tiny experiment."""
    r = dfm("+experiment=sft_tiny", "stages=[evaluate]", "evaluate.models=[base]", "evaluate.euroeval=false",
            "evaluate.generation_prompts=2", "evaluate.max_new_tokens=8", "cluster=local",
            f"runs_root={tmp_path / 'runs'}", cwd=REPO, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    res = json.loads((run / "stages" / "evaluate" / "results.json").read_text())
    (m,) = res["models"]
    assert m["name"] == "base" and m["euroeval"] is None and m["euroeval_note"] is None
    assert math.isfinite(m["eval_loss"]) and m["eval_texts"] == 40
    assert (run / "stages" / "evaluate" / "DONE").exists()


def test_perplexity_matches_the_models_own_loss_and_ignores_padding(tmp_path):
    """One text: our NLL is the model's own labels= loss; many texts: batching (right padding) changes nothing."""
    from dfm_hpc import tiny
    from dfm_hpc.stages import evaluate
    from dfm_hpc.tiny import data as cpt

    model, tok = evaluate.load(tiny.resolve("tiny:llama", tmp_path / "cache"))
    texts = [json.loads(ln)["text"] for ln in cpt.tiny_corpus(tmp_path / "e.jsonl", 12, seed=1).read_text().splitlines()]
    ids = tok(texts[0], return_tensors="pt")["input_ids"]
    one = evaluate.perplexity(model, tok, texts[:1])
    assert one["eval_tokens"] == ids.shape[1] - 1
    assert one["eval_loss"] == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)
    batched, single = evaluate.perplexity(model, tok, texts), evaluate.perplexity(model, tok, texts, batch_tokens=1)
    assert batched["eval_tokens"] == single["eval_tokens"] and batched["eval_texts"] == 12
    assert batched["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_without_eval_text_the_held_out_chats_are_scored(stage, tmp_path):
    """data.eval_text unset (munin_sft/munin_dpo on LUMI): the chats the stage held out (never trained
    on) are the text."""
    r = dfm("+experiment=sft_tiny", f"stages=[{stage},evaluate]", "data.eval_text=null", f"{stage}.max_steps=2",
            "evaluate.euroeval=false", "evaluate.generation_prompts=1", "evaluate.max_new_tokens=4",
            f"runs_root={tmp_path / 'runs'}", cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    res = json.loads((run / "stages" / "evaluate" / "results.json").read_text())
    assert res["eval_data"] == f"held-out {stage.upper()} chats (10 conversations)"  # 5 % of the 200 toy chats
    assert [m["name"] for m in res["models"]] == ["base", stage]
    assert all(m["eval_texts"] == 10 and math.isfinite(m["perplexity"]) for m in res["models"])


def test_without_eval_text_the_cpt_held_out_documents_are_scored(tmp_path):
    r = dfm("+experiment=cpt_tiny", "stages=[cpt,evaluate]", "data.eval_text=null", "cpt.max_steps=2",
            "evaluate.euroeval=false", "evaluate.generation_prompts=0", f"runs_root={tmp_path / 'runs'}",
            cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    res = json.loads((run / "stages" / "evaluate" / "results.json").read_text())
    assert res["eval_data"] == "held-out CPT documents (20)"  # the last 5 % of the 400 toy documents
    assert [m["name"] for m in res["models"]] == ["base", "cpt"]
    assert all(m["eval_texts"] == 20 for m in res["models"])
    assert res["models"][1]["perplexity"] < res["models"][0]["perplexity"]  # 2 steps already help
