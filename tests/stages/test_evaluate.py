"""The evaluate stage (perplexity, lm-eval in-process, generations), the result formats (lm-eval,
EuroEval old and >= 17), comparability, and `python -m dfm_hpc compare`. The served-model path:
tests/job/test_serve.py."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from dfm_hpc import results
from dfm_hpc.login import compare

from helpers import REPO, dfm, run_dirs

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
| weights sha256 | hash: unknown | hash: unknown | hash: unknown | hash: unknown |
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

Warning: not comparable as they stand:
- /m/sft: weights hash unknown for run_a:sft, sweep_b/0:sft, sweep_b/1:sft (results from before hashes, or a \
model not on disk): whether they are the same weights as each other cannot be told

Notes:
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
    assert r.stdout.splitlines()[:4] == ["| metric | run_a:base |", "|---|---:|", "| weights sha256 | hash: unknown |",
                                         "| eval_loss | 3.0000 |"]
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


def _bench(acc, dtype="float32", n=20, backend="hf (in-process)"):
    return {"lm-eval/dfm_danish_mc": {"scores": {"acc": acc, "acc_stderr": 0.09}, "meta": {
        "harness": "lm-eval", "harness_version": "0.4.13", "task_version": "1.0", "split": "test", "n_samples": n,
        "num_fewshot": 0, "seed": 0, "dtype": dtype, "backend": backend, "backend_version": "5.24.0",
        "chat_template": False}}}


def test_compare_new_results_and_comparability_warnings(tmp_path):
    """Format 2 (benchmarks + serving) next to format 1; numbers run differently are warned about."""
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    _results(a, [{**_model("base", 6.0), "benchmarks": _bench(0.2), "notes": [], "serving": None}])
    _results(b, [{**_model("sft", 2.0), "benchmarks": _bench(0.45, dtype="bfloat16", backend="vllm"), "notes": [],
                  "serving": {"backend": "vllm", "startup_s": 41.5, "tokens_per_s": 812.0}}])
    old = tmp_path / "run_c"
    _results(old, [_model("dpo", 1.5, euroeval=PARSED)])
    r = dfm("compare", str(a), str(b), str(old), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "| lm-eval dfm_danish_mc acc | 0.2000 | 0.4500 | – |" in lines
    assert "| euroeval sentiment-classification/angry-tweets mcc | – | – | 15.0000 |" in lines
    assert "| server startup_s | – | 41.5000 | – |" in lines and "| server tokens_per_s | – | 812.0000 | – |" in lines
    warn = [ln for ln in lines if ln.startswith("- lm-eval dfm_danish_mc:")]
    assert warn == ["- lm-eval dfm_danish_mc: dtype differs: float32 (run_a:base); bfloat16 (run_b:sft)",
                    "- lm-eval dfm_danish_mc: backend differs: hf (in-process) (run_a:base); vllm (run_b:sft)"]
    assert "warning: lm-eval dfm_danish_mc: dtype differs" in r.stderr
    same = results.comparability([("x", {"benchmarks": _bench(0.1)}), ("y", {"benchmarks": _bench(0.3)})])
    assert same == []
    fewer = results.comparability([("x", {"benchmarks": _bench(0.1)}), ("y", {"benchmarks": _bench(0.3, n=5)})])
    assert fewer == ["lm-eval dfm_danish_mc: n_samples differs: 20 (x); 5 (y)"]


# ---------------------------------------------------------------------------- result formats

def test_parse_lm_eval_results():
    from dfm_hpc.job import harness

    res = {"results": {"dfm_danish_mc": {"alias": "dfm_danish_mc", "acc,none": 0.25, "acc_stderr,none": 0.1,
                                         "acc_norm,none": "N/A"},
                       "dfm_danish_mc_gen": {"exact_match,letter": 0.5, "exact_match_stderr,letter": 0.2}},
           "versions": {"dfm_danish_mc": 1.0, "dfm_danish_mc_gen": 1.0},
           "n-shot": {"dfm_danish_mc": 0, "dfm_danish_mc_gen": 0},
           "n-samples": {"dfm_danish_mc": {"original": 20, "effective": 20},
                         "dfm_danish_mc_gen": {"original": 20, "effective": 4}},
           "configs": {"dfm_danish_mc": {"test_split": "test"}, "dfm_danish_mc_gen": {"validation_split": "val"}}}
    out = harness.parse_lm_eval(res, {"dtype": "float32", "seed": 3})
    assert out["lm-eval/dfm_danish_mc"]["scores"] == {"acc": 0.25, "acc_stderr": 0.1, "acc_norm": None}
    assert out["lm-eval/dfm_danish_mc_gen"]["scores"] == {"exact_match (letter)": 0.5,
                                                          "exact_match_stderr (letter)": 0.2}
    meta = out["lm-eval/dfm_danish_mc_gen"]["meta"]
    assert {k: meta[k] for k in ("harness", "task_version", "split", "n_samples", "num_fewshot", "dtype", "seed")} == {
        "harness": "lm-eval", "task_version": "1.0", "split": "val", "n_samples": 4, "num_fewshot": 0,
        "dtype": "float32", "seed": 3}


# One record as EuroEval >= 17 writes it: Every Eval Ever (BenchmarkResult.to_eee_dict), trimmed to
# the fields the parser reads and a few around them
EEE_RECORD = {
    "schema_version": "0.2.1", "evaluation_id": "angry-tweets/openai/base/1796160000",
    "model_info": {"name": "openai/base", "id": "openai/base",
                   "inference_engine": {"name": "litellm", "version": "1.80"}},
    "eval_library": {"name": "euroeval", "version": "17.5.0", "additional_details": {
        "dataset": "angry-tweets", "task": "sentiment-classification", "languages": '["da"]', "few_shot": "true",
        "validation_split": "false", "raw_results": "[]"}},
    "evaluation_results": [
        {"evaluation_name": "test_mcc", "source_data": {"dataset_name": "angry-tweets"},
         "score_details": {"score": 15.0, "uncertainty": {"confidence_interval": {
             "lower": 5.2, "upper": 24.8, "confidence_level": 0.95}, "num_samples": 10}}},
        {"evaluation_name": "test_macro_f1", "source_data": {"dataset_name": "angry-tweets"},
         "score_details": {"score": 35.0, "uncertainty": {"confidence_interval": {
             "lower": 25.2, "upper": 44.8, "confidence_level": 0.95}, "num_samples": 10}}}]}


def test_parse_euroeval_both_formats():
    from dfm_hpc.job import harness

    nan = {**EUROEVAL_RECORD, "dataset": "scala-da", "task": "linguistic-acceptability", "validation_split": True,
           "results": {"raw": [], "total": {"test_mcc": float("nan"), "test_mcc_se": 1.0}}}
    old = harness.parse_euroeval([EUROEVAL_RECORD, nan], {"backend": "vllm"})
    key = "sentiment-classification/angry-tweets"
    assert old[f"euroeval/{key}"]["scores"] == PARSED[key]
    assert old["euroeval/linguistic-acceptability/scala-da"]["scores"] == {"mcc": None, "mcc_se": 1.0}
    meta = old["euroeval/sentiment-classification/angry-tweets"]["meta"]
    assert (meta["harness_version"], meta["split"], meta["n_samples"]) == ("16.11.0", "test", 2)
    assert meta["backend"] == "vllm"
    assert old["euroeval/linguistic-acceptability/scala-da"]["meta"]["split"] == "validation"
    new = harness.parse_euroeval([EEE_RECORD])["euroeval/sentiment-classification/angry-tweets"]
    assert new["scores"] == pytest.approx({"mcc": 15.0, "mcc_se": 9.8, "macro_f1": 35.0, "macro_f1_se": 9.8})
    assert (new["meta"]["harness_version"], new["meta"]["split"], new["meta"]["n_samples"]) == ("17.5.0", "test", 10)
    assert new["meta"]["client_engine"] == "litellm 1.80"


def test_euroeval_that_cannot_run_is_a_note_not_a_crash(tmp_path):
    from dfm_hpc.job import harness

    argv = harness.euroeval_command(str(tmp_path / "no-python"), "base", "http://127.0.0.1:1/v1", [],
                                    test_split=True, cache_dir=str(tmp_path))
    assert argv[argv.index("--model") + 1] == "openai/base" and "--evaluate-test-split" in argv
    scores, note = harness.run_euroeval(argv, tmp_path / "ee", {})
    assert scores is None and "EuroEval did not run: FileNotFoundError" in note
    scores, note = harness.run_euroeval([sys.executable, "-c", "print('no datasets cached')"], tmp_path / "ee", {})
    assert scores is None and "wrote no results" in note and "no datasets cached" in note


def test_euroeval_real_package_accepts_the_call(tmp_path, monkeypatch):
    """With the real package (skipped when it is not installed): its record type round-trips through
    the parser, and the command the stage runs parses with the installed CLI."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("euroeval", reason="EuroEval's pins conflict with the dev venv's; "
                        "`make test` runs this test in its own venv (.venv-euroeval)")
    from euroeval.cli import benchmark
    from euroeval.data_models import BenchmarkResult

    from dfm_hpc.job import harness

    rec = BenchmarkResult.from_dict(json.loads(json.dumps(EUROEVAL_RECORD)))
    assert harness.parse_euroeval([rec])["euroeval/sentiment-classification/angry-tweets"]["scores"] == \
        PARSED["sentiment-classification/angry-tweets"]
    argv = harness.euroeval_command(sys.executable, "sft", "http://127.0.0.1:8000/v1", ["sentiment-classification"],
                                    test_split=True, cache_dir=str(tmp_path), datasets=["angry-tweets"],
                                    extra=["--num-iterations", "1"])
    ctx = benchmark.make_context("euroeval", argv[3:])  # click: unknown or malformed options raise
    assert ctx.params["model"] == ("openai/sft",) and ctx.params["api_base"] == "http://127.0.0.1:8000/v1"
    assert ctx.params["evaluate_test_split"] is True and ctx.params["num_iterations"] == 1


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


@pytest.mark.e2e
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
    corpus = cpt.tiny_corpus(tmp_path / "train.jsonl", 200)
    train_texts = [json.loads(ln)["text"] for ln in corpus.read_text().splitlines()]
    trained = _train_copy(base, tmp_path / "trained", train_texts)
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), {
        "stages": ["evaluate"], "data": {"eval_text": "tiny:eval"},
        "evaluate": {"models": ["base", str(trained)], "euroeval": True, "generation_prompts": 2, "max_new_tokens": 8,
                     "max_eval_texts": 30, "lm_eval_tasks": ["tiny:danish_mc"]}})
    ctx = StageContext(run, sdir, dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500))
    evaluate.run(cfg, ctx)

    res = json.loads((sdir / "results.json").read_text())
    assert res["eval_data"] == "tiny:eval"
    assert [m["name"] for m in res["models"]] == ["base", "trained"]
    for m in res["models"]:
        assert set(m) == {"name", "path", "eval_loss", "perplexity", "eval_texts", "eval_tokens", "benchmarks",
                          "notes", "serving", "seconds", "bound_to"}
        assert math.isfinite(m["perplexity"]) and m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
        assert m["eval_texts"] == 30 and m["eval_tokens"] > 30
        # lm-eval scored the Danish multiple-choice task dfm_hpc wrote, in-process (hf backend)
        (key, bench), = m["benchmarks"].items()
        assert key == "lm-eval/dfm_danish_mc" and 0 <= bench["scores"]["acc"] <= 1
        assert bench["scores"]["acc"] * 20 == pytest.approx(round(bench["scores"]["acc"] * 20))  # k of 20 items
        assert {f: bench["meta"][f] for f in ("harness", "task_version", "split", "n_samples", "num_fewshot", "dtype",
                                              "backend", "seed")} == {
            "harness": "lm-eval", "task_version": "1.0", "split": "test", "n_samples": 20, "num_fewshot": 0,
            "dtype": "float32", "backend": "hf (in-process)", "seed": 0}
        assert bench["meta"]["harness_version"] and bench["meta"]["backend_version"]
        # EuroEval is a client of a served model: without evaluate.server, a note, not a crash
        assert m["serving"] is None and any("set evaluate.server" in n for n in m["notes"])
    base_row, trained_row = res["models"]
    # what each score is bound to (job/scored.py): the weights' content, the parameters, the harness, the data
    for m, ref in ((base_row, "tiny:llama"), (trained_row, str(trained.resolve()))):
        b, meta = m["bound_to"], m["benchmarks"]["lm-eval/dfm_danish_mc"]["meta"]
        assert b["model"] == ref and len(b["weights"]["sha256"]) == 64 and b["weights"]["files"] == 1
        assert b["parameters"] > 1000 and b["harnesses"] == {"lm-eval": meta["harness_version"]}
        assert b["run"] is None and b["server"] is None and meta["dataset_revision"].startswith("sha256:")
    assert base_row["bound_to"]["weights"]["sha256"] != trained_row["bound_to"]["weights"]["sha256"]
    import jsonschema

    from dfm_hpc.login import export_evals  # the real results.json as every-eval-ever records, valid

    recs = export_evals.records("run", res, "2026-12-06T10:00:00+0000")
    schema = json.loads((REPO / "tests" / "data" / "every_eval_ever" / "eval.schema.json").read_text())
    assert len(recs) == 4 and all(not list(jsonschema.Draft7Validator(schema).iter_errors(
        {k: v for k, v in r.items() if k != "_path"})) for r in recs)
    assert trained_row["perplexity"] < base_row["perplexity"] / 5  # learnt the patterned text
    assert base_row["eval_tokens"] == trained_row["eval_tokens"]  # same tokenizer, same texts

    samples = [json.loads(ln) for ln in (sdir / "samples.jsonl").read_text().splitlines()]
    assert [(s["model"], s["prompt"]) for s in samples] == [(m, p) for m in ("base", "trained")
                                                            for p in evaluate.PROMPTS[:2]]
    assert all(isinstance(s["output"], str) for s in samples)
    md = (sdir / "results.md").read_text()
    assert "| metric | base | trained |" in md and "| perplexity |" in md and "| lm-eval dfm_danish_mc acc |" in md
    assert "| lm-eval dfm_danish_mc | lm-eval |" in md  # the comparability table
    assert "## trained: Hvad er hovedstaden i Danmark?" in (sdir / "samples.md").read_text()
    log = capsys.readouterr().out
    assert "[base] eval_loss " in log and "; generating 2 samples" in log
    assert "[trained] lm-eval/dfm_danish_mc acc 0." in log and " ± " in log  # a readable line, not the raw dict


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


@pytest.mark.e2e
def test_cli_end_to_end(tmp_path):
    """The real CLI with the local launcher: evaluate the tiny base of the sft_tiny experiment."""
    r = dfm("+experiment=sft_tiny", "stages=[evaluate]", "evaluate.models=[base]", "evaluate.euroeval=false",
            "evaluate.generation_prompts=2", "evaluate.max_new_tokens=8", "cluster=local",
            f"runs_root={tmp_path / 'runs'}", cwd=REPO, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    res = json.loads((run / "stages" / "evaluate" / "results.json").read_text())
    (m,) = res["models"]
    assert m["name"] == "base" and m["benchmarks"] == {} and m["notes"] == []
    assert math.isfinite(m["eval_loss"]) and m["eval_texts"] == 40
    assert (run / "stages" / "evaluate" / "DONE").exists()


def test_perplexity_matches_the_models_own_loss_and_ignores_padding(tmp_path):
    """One text: our NLL is the model's own labels= loss; many texts: batching (right padding) changes nothing."""
    from dfm_hpc import tiny
    from dfm_hpc.stages import evaluate
    from dfm_hpc.tiny import data as cpt

    model, tok = evaluate.load(tiny.resolve("tiny:llama", tmp_path / "cache"))
    corpus = cpt.tiny_corpus(tmp_path / "e.jsonl", 12, seed=1)
    texts = [json.loads(ln)["text"] for ln in corpus.read_text().splitlines()]
    ids = tok(texts[0], return_tensors="pt")["input_ids"]
    one = evaluate.perplexity(model, tok, texts[:1])
    assert one["eval_tokens"] == ids.shape[1] - 1
    assert one["eval_loss"] == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)
    batched, single = evaluate.perplexity(model, tok, texts), evaluate.perplexity(model, tok, texts, batch_tokens=1)
    assert batched["eval_tokens"] == single["eval_tokens"] and batched["eval_texts"] == 12
    assert batched["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)


@pytest.mark.e2e
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


@pytest.mark.e2e
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
