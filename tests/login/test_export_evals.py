"""export-evals: a run's results as every-eval-ever records, validated against that format's JSON schema
(tests/data/every_eval_ever: its package needs Python >= 3.12, so the schema file is vendored)."""

from __future__ import annotations

import json

import jsonschema

from dfm_hpc.login import export_evals

from helpers import REPO, dfm
from helpers.scored_results import row, write

SCHEMA = json.loads((REPO / "tests" / "data" / "every_eval_ever" / "eval.schema.json").read_text())


def validate(files):
    v = jsonschema.Draft7Validator(SCHEMA)
    for f in files:
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(json.loads(f.read_text()))]
        assert not errors, (f, errors)


def test_export_writes_valid_records_bound_to_the_weights(tmp_path):
    run = tmp_path / "runs" / "sft_tiny" / "2026-12-06_10-00-00_abcdef"
    sft = row("sft", "e" * 64, str(run / "stages/sft/model"), run)
    sft["benchmarks"]["euroeval/sentiment-classification/angry-tweets"] = {
        "scores": {"mcc": 15.0, "mcc_se": 9.8}, "meta": {
            "harness": "euroeval", "harness_version": "16.11.0", "split": "test", "n_samples": 32,
            "dataset": "angry-tweets", "dataset_revision": None, "backend": "vllm", "backend_version": "0.10.1"}}
    sft["serving"] = {"backend": "vllm", "runtime": {"vllm": "0.10.1"}}
    base = row("base", "a" * 64, "org/base-7b")
    base["benchmarks"]["lm-eval/dfm_danish_mc"]["meta"].update(dataset="alexandrainst/m_arc", dataset_config="da")
    write(run, [base, sft, row("dpo", None, "/old/dpo")])  # dpo: before hashes
    r = dfm("export-evals", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = run / "stages" / "evaluate" / "every_eval_ever"
    files = sorted(out.rglob("*.json"))
    # per model: held-out text + lm-eval; sft also EuroEval
    assert len(files) == 7 and "wrote 7 every-eval-ever record(s)" in r.stdout
    validate(files)
    recs = {(json.loads(f.read_text())["model_info"]["name"], f.parent.parent.name): json.loads(f.read_text())
            for f in files}
    name = f"{run.name}:sft"
    mc = recs[(name, "lm-eval_dfm_danish_mc")]
    info = mc["model_info"]["additional_details"]
    assert info["weights_sha256"] == "e" * 64 and info["parameters"] == "12345"
    assert info["run_snapshot"] == run.name and info["config_sha256"] == "f" * 64
    assert mc["source_metadata"]["evaluator_relationship"] == "first_party"
    assert mc["eval_library"] == {"name": "lm_eval", "version": "0.4.13", "additional_details": {
        "task_version": "1.0", "dataset_revision": "sha256:abc", "split": "test", "n_samples": "20",
        "num_fewshot": "0", "seed": "0", "dtype": "float32", "backend": "hf (in-process)",
        "backend_version": "4.57.1", "chat_template": "false"}}
    (acc,) = mc["evaluation_results"]
    assert acc["score_details"] == {"score": 0.25, "uncertainty": {"standard_error": {"value": 0.09},
                                                                   "num_samples": 20}}
    ee = recs[(name, "euroeval_sentiment-classification_angry-tweets")]
    assert ee["evaluation_results"][0]["score_details"]["uncertainty"]["confidence_interval"] == {
        "lower": 15.0 - 9.8, "upper": 15.0 + 9.8, "confidence_level": 0.95}
    assert ee["model_info"]["inference_engine"] == {"name": "vllm", "version": "0.10.1"}
    held = recs[(name, "dfm_hpc_held_out_text")]
    assert {r["metric_config"]["metric_id"]: r["metric_config"]["lower_is_better"]
            for r in held["evaluation_results"]} == {"eval_loss": True, "perplexity": True}
    hub = recs[(f"{run.name}:base", "lm-eval_dfm_danish_mc")]
    assert hub["model_info"]["id"] == "org/base-7b"
    assert hub["evaluation_results"][0]["source_data"] == {
        "dataset_name": "alexandrainst/m_arc", "source_type": "hf_dataset", "hf_repo": "alexandrainst/m_arc",
        "hf_split": "test", "samples_number": 20, "additional_details": {
            "dataset": "alexandrainst/m_arc", "config": "da", "revision": "sha256:abc", "split": "test",
            "samples_total": "20", "samples": "20"}}
    assert mc["evaluation_results"][0]["source_data"]["source_type"] == "other"  # local files
    assert recs[(f"{run.name}:dpo", "lm-eval_dfm_danish_mc")]["model_info"]["additional_details"][
        "weights_sha256"] == "unknown"
    # again: the same files (the record ids come from run, model and benchmark), now under --out
    again = tmp_path / "out"
    assert export_evals.export([str(run)], str(again)) == 0
    assert sorted(p.relative_to(again) for p in again.rglob("*.json")) == [p.relative_to(out) for p in files]


def test_an_inspect_result_exports_as_inspect_ai_with_its_standard_error(tmp_path):
    """job/harness_inspect.py's result (accuracy, inspect's stderr as accuracy_stderr) is a valid record."""
    run = tmp_path / "runs" / "sft_tiny" / "2026-12-06_10-00-00_abcdef"
    sft = row("sft", "e" * 64, str(run / "stages/sft/model"), run)
    sft["benchmarks"] = {"inspect/dfm_danish_qa": {"scores": {"accuracy": 0.5, "accuracy_stderr": 0.11}, "meta": {
        "harness": "inspect", "harness_version": "0.3.285", "task_version": "1", "split": "all", "n_samples": 20,
        "n_samples_total": 20, "dataset": "dfm_danish_qa", "dataset_revision": "sha256:abc", "seed": 0,
        "backend": "vllm", "chat_template": True}}}
    write(run, [sft])
    assert export_evals.export([str(run)], str(tmp_path / "out")) == 0
    (f,) = (tmp_path / "out").glob("inspect_dfm_danish_qa/*/*.json")
    validate([f])
    rec = json.loads(f.read_text())
    assert rec["eval_library"]["name"] == "inspect_ai" and rec["eval_library"]["version"] == "0.3.285"
    (acc,) = rec["evaluation_results"]
    assert acc["score_details"] == {"score": 0.5, "uncertainty": {"standard_error": {"value": 0.11},
                                                                  "num_samples": 20}}


def test_nothing_to_export(tmp_path):
    empty = tmp_path / "runs" / "x" / "r1"
    empty.mkdir(parents=True)
    (empty / "config.yaml").write_text("name: x\n")
    r = dfm("export-evals", str(empty), cwd=tmp_path)
    assert r.returncode == 1 and "no evaluate results" in r.stderr
    r = dfm("export-evals", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr


def test_a_record_the_schema_refuses_is_caught():
    """The validation is real: a record without its model's id fails."""
    rec = export_evals.records("r", {"models": [row("base", "a" * 64, "org/m")]}, "2026-12-06T10:00:00+0000")[0]
    rec.pop("_path")
    del rec["model_info"]["id"]
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(rec))
