"""evaluate resumes per model (and per served benchmark): a start stopped at a safe point keeps what it
scored in progress.json, the next start skips it, and a model whose weight files changed is scored again."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from dfm_hpc.job import eval_progress
from dfm_hpc.job.rank import Preempted

from helpers import REPO, make_cfg, stage_ctx


class _StopAfter:
    """Slurm's pre-timeout signal arriving once `n` safe points have passed (what USR2 sets in a rank)."""

    def __init__(self, ctx, n: int):
        self.ctx, self.n, self.calls = ctx, n, 0
        ctx.should_stop = self

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny model dirs (copies of tiny:llama, the second with other weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    from dfm_hpc import tiny

    root = tmp_path_factory.mktemp("models")
    base = Path(tiny.resolve("tiny:llama", root / "cache"))
    a, b = root / "a", root / "b"
    shutil.copytree(base, a)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    shutil.copytree(base, b)
    model.save_pretrained(b)
    return a, b


def _cfg(a: Path, b: Path):
    return make_cfg(stages=["evaluate"], data={"eval_text": "tiny:eval"},
                    evaluate={"models": [str(a), str(b)], "euroeval": False, "generation_prompts": 1,
                              "max_new_tokens": 4, "max_eval_texts": 8})


def _run(cfg, run: Path, stop_after: int = 0):
    from dfm_hpc.stages import evaluate

    ctx = stage_ctx(run, "evaluate")
    if stop_after:
        _StopAfter(ctx, stop_after)
    evaluate.run(cfg, ctx)
    return ctx.stage_dir


def _scores(sdir: Path):
    res = json.loads((sdir / "results.json").read_text())
    rows = [{k: v for k, v in m.items() if k != "seconds"} for m in res["models"]]
    return res["eval_data"], rows, (sdir / "samples.jsonl").read_text()


def test_a_stop_after_the_first_model_resumes_where_it_stopped(models, tmp_path, capsys):
    a, b = models
    cfg = _cfg(a, b)
    straight = _run(cfg, tmp_path / "straight")
    capsys.readouterr()

    run = tmp_path / "run"
    with pytest.raises(Preempted, match="after a's perplexity and samples; 1 piece"):
        _run(cfg, run, stop_after=1)
    sdir = run / "stages" / "evaluate"
    assert [m["name"] for m in json.loads((sdir / "results.json").read_text())["models"]] == ["a"]  # partial output
    kept = json.loads((sdir / eval_progress.FILE).read_text())["models"]
    assert [k.split("|")[0] for k in kept] == ["a"]
    first = capsys.readouterr().out

    _run(cfg, run)  # the requeued start
    log = capsys.readouterr().out
    assert "[a] skipped: perplexity and samples scored by an earlier start" in log
    assert "[a] loading" not in log and "[b] loading" in log and "[a] loading" in first
    assert _scores(sdir) == _scores(straight)
    assert not (sdir / eval_progress.FILE).exists()  # done: results.json is the one output


def test_a_changed_weight_file_is_scored_again(models, tmp_path, capsys):
    a, b = models
    mine = tmp_path / "a"
    shutil.copytree(a, mine)
    cfg = _cfg(mine, b)
    run = tmp_path / "run"
    with pytest.raises(Preempted):
        _run(cfg, run, stop_after=1)
    sdir = run / "stages" / "evaluate"
    before = json.loads((sdir / "results.json").read_text())["models"][0]["eval_loss"]
    shutil.copy(b / "model.safetensors", mine / "model.safetensors")  # other weights at the same path
    capsys.readouterr()
    _run(cfg, run)
    log = capsys.readouterr().out
    assert "[a] an earlier start scored other weights under this name" in log and "[a] loading" in log
    assert "skipped" not in log
    rows = json.loads((sdir / "results.json").read_text())["models"]
    assert rows[0]["eval_loss"] != pytest.approx(before) and rows[0]["eval_loss"] == pytest.approx(rows[1]["eval_loss"])


def test_the_signal_during_a_benchmark_is_a_stop_not_a_failed_benchmark(tmp_path):
    """serve.Server raises Preempted on USR2 wherever the benchmark is: it must reach the rank (requeue), not
    become a note that a later start would keep as the benchmark's result."""
    from dfm_hpc.stages import evaluate

    def interrupted(*_a, **_k):
        raise Preempted("signal SIGUSR2 while the model server was up")

    row = {"benchmarks": {}, "notes": []}
    with pytest.raises(Preempted):
        evaluate._bench(row, stage_ctx(tmp_path, "evaluate"), "base", "lm-eval", interrupted)
    assert row == {"benchmarks": {}, "notes": []}
    evaluate._bench(row, stage_ctx(tmp_path, "evaluate"), "base", "lm-eval", lambda: 1 / 0)
    assert row["notes"] == ["lm-eval failed: ZeroDivisionError: division by zero"]


def test_weights_id_and_settings():
    """The identity follows the files (name, size, mtime), not just the path; changed settings drop it all."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        w = Path(d) / "model.safetensors"
        w.write_bytes(b"x" * 10)
        first = eval_progress.weights_id(d)
        assert eval_progress.weights_id(d) == first
        link = Path(d) / "linked"  # `rerun` links the earlier run's stage dirs into the new run
        link.symlink_to(d, target_is_directory=True)
        assert eval_progress.model_key("sft", str(link)) == eval_progress.model_key("sft", d)
        os.utime(w, ns=(1, 1))
        assert eval_progress.weights_id(d) != first
        prog = eval_progress.Progress(Path(d) / eval_progress.FILE, "s1")
        prog.record("k", eval_progress.INPROC, {"row": {}, "samples": [], "merged": None})
        said = []
        assert eval_progress.Progress.load(Path(d), "s1", ["k"], said.append).done("k", eval_progress.INPROC)
        assert not eval_progress.Progress.load(Path(d), "s2", ["k"], said.append).models
        assert said == [f"the evaluate settings changed since the earlier start ({prog.path}): every model is "
                        "scored again"]


EUROEVAL_PY = REPO / ".venv-euroeval" / "bin" / "python"


@pytest.mark.skipif(not EUROEVAL_PY.exists() and os.environ.get("CI") != "true",
                    reason="needs .venv-euroeval (make test builds it)")
@pytest.mark.e2e
def test_a_stop_after_lm_eval_stops_the_server_and_the_next_start_runs_only_euroeval(tmp_path, monkeypatch, capsys):
    """Served (`transformers serve`, tiny Llama): the stop comes after the model's lm-eval; the server is gone,
    the next start keeps perplexity, serving and lm-eval and runs only EuroEval (~40 s)."""
    import socket
    import subprocess

    from dfm_hpc import tiny

    cache, modules = tmp_path / "euroeval_cache", tmp_path / "modules"
    r = subprocess.run([str(EUROEVAL_PY), str(REPO / "tests" / "helpers" / "euroeval_fixture.py"), str(cache),
                        str(modules)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    monkeypatch.setenv("HF_MODULES_CACHE", str(modules))
    run = tmp_path / "run"
    tiny.resolve("tiny:llama", run / "cache")
    cfg = make_cfg(stages=["evaluate"], data={"eval_text": "tiny:eval"}, evaluate={
        "models": ["base"], "generation_prompts": 1, "max_new_tokens": 4, "max_eval_texts": 5,
        "server": "transformers", "server_timeout_s": 300, "lm_eval_tasks": ["tiny:danish_mc_gen"],
        "lm_eval_limit": 4, "euroeval": True, "euroeval_python": str(EUROEVAL_PY), "euroeval_cache": str(cache),
        "euroeval_datasets": ["angry-tweets"], "euroeval_args": ["--num-iterations", "1"]})
    with pytest.raises(Preempted, match="after base's lm-eval; 1 piece"):  # in-process, serving, lm-eval done
        _run(cfg, run, stop_after=3)
    log = capsys.readouterr().out
    (port,) = re.findall(r"healthy on port (\d+)", log)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0  # the server was stopped on the way out
    sdir = run / "stages" / "evaluate"
    (m,) = json.loads((sdir / "results.json").read_text())["models"]
    lm = m["benchmarks"]["lm-eval/dfm_danish_mc_gen"]
    assert list(m["benchmarks"]) == ["lm-eval/dfm_danish_mc_gen"] and m["serving"]["tokens_per_s"] > 0

    _run(cfg, run)
    log = capsys.readouterr().out
    assert "[base] skipped: perplexity and samples" in log and "[base] skipped serving, lm-eval" in log
    assert "[base] loading" not in log and "lm-eval/dfm_danish_mc_gen" not in log.split("skipped serving")[1]
    (m,) = json.loads((sdir / "results.json").read_text())["models"]
    assert m["benchmarks"]["lm-eval/dfm_danish_mc_gen"] == lm
    assert "euroeval/sentiment-classification/angry-tweets" in m["benchmarks"], m["notes"]


@pytest.mark.slurm
def test_on_slurm_the_pretimeout_signal_requeues_evaluate_and_the_requeued_job_skips_what_was_scored(
        slurm_cluster, models, tmp_path):
    """The whole path on the 2-node Slurm: USR2 while the first of three models is scored; the rank stops at
    the next safe point, the batch script requeues the job, the requeued job skips the scored models and
    finishes (~1 min)."""
    import subprocess

    from helpers import dfm, run_dirs, wait_for

    a, b = models
    c = tmp_path / "c"
    shutil.copytree(a, c)
    r = dfm("+experiment=sft_tiny", "cluster=slurm", "stages=[evaluate]", f"evaluate.models=[{a},{b},{c}]",
            "evaluate.euroeval=false", "evaluate.generation_prompts=10", "evaluate.max_new_tokens=96",
            "evaluate.max_eval_texts=40", "data.eval_text=tiny:eval", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "evaluate"
    log = s / "logs" / "rank-0.log"
    wait_for(lambda: log.exists() and "[a] eval_loss" in log.read_text(), every=0.05, timeout=300,
             what="the first model's perplexity")
    subprocess.run(["scancel", "--signal=USR2", (s / "job_id").read_text().strip()], check=True)
    wait_for(lambda: (s / "DONE").exists() or (s / "FAILED").exists(), timeout=400, what="the requeued evaluate")
    text = log.read_text()
    assert (s / "DONE").exists(), text[-3000:]
    # the generations of a take ~2 s here: the stop comes after a (or, on a slow machine, after b)
    assert re.search(r"stopping for the time limit: evaluate stopped after [ab]'s perplexity and samples", text), \
        text[-3000:]
    assert "requeue of job" in text and "[a] skipped: perplexity and samples scored by an earlier start" in text
    assert [m["name"] for m in json.loads((s / "results.json").read_text())["models"]] == ["a", "b", "c"]
    assert not (s / eval_progress.FILE).exists()
