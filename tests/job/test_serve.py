"""The served-model path: the server's lifecycle (job/serve.py), which server holds which model, and
the evaluate stage scoring the tiny model through a real OpenAI-compatible server (`transformers
serve`) with lm-eval and with the real EuroEval package from its own environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dfm_hpc.job import serve
from dfm_hpc.job.rank import Preempted

from helpers import LUMI, REPO, make_cfg

HEALTH = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _fake(tmp_path, port):
    return serve.Server([sys.executable, "-c", HEALTH, str(port)], port, tmp_path / "server.log", timeout_s=30,
                        say=lambda m: None)


def test_server_is_stopped_on_success_on_failure_and_on_the_pre_timeout_signal(tmp_path):
    port = _free_port()
    with _fake(tmp_path, port) as s:
        assert _listening(port) and s.startup_s is not None and s.base_url == f"http://127.0.0.1:{port}/v1"
        pid = s.proc.pid
    assert not _listening(port) and s.proc.poll() is not None
    with pytest.raises(ValueError):
        with _fake(tmp_path, port) as s:
            raise ValueError("a benchmark failed")
    assert s.proc.poll() is not None and not _listening(port)
    marked = []
    old = signal.signal(signal.SIGUSR2, lambda *_: marked.append(1))  # the rank's handler (stop_requested)
    try:
        with pytest.raises(Preempted, match="SIGUSR2"):
            with _fake(tmp_path, port) as s:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(5)  # the signal interrupts this
        assert marked == [1], "the rank's own handler still runs (the stage is marked for requeue)"
        assert signal.getsignal(signal.SIGUSR2) is not serve.Server._on_signal  # handlers restored
        assert s.proc.poll() is not None and not _listening(port)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert pid != s.proc.pid


def test_a_server_that_dies_or_never_gets_healthy_says_why(tmp_path):
    dead = serve.Server([sys.executable, "-c", "print('no GPU found'); raise SystemExit(3)"], _free_port(),
                        tmp_path / "dead.log", timeout_s=30, say=lambda m: None)
    with pytest.raises(RuntimeError, match=r"exited with 3 before it was healthy(.|\n)*no GPU found"):
        with dead:
            pass
    slow = serve.Server([sys.executable, "-c", "import time; time.sleep(60)"], _free_port(), tmp_path / "slow.log",
                        timeout_s=1, say=lambda m: None)
    with pytest.raises(TimeoutError, match="not healthy after 1 s"):
        with slow:
            pass
    assert slow.proc.poll() is not None  # killed, not left behind


def _adapter(path: Path, base: str, r: int = 8) -> str:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": r}))
    return str(path)


def test_which_server_holds_which_model(tmp_path):
    base = str(tmp_path / "base")
    sft = _adapter(tmp_path / "sft", base, r=16)
    dpo = _adapter(tmp_path / "dpo", sft)  # DPO trained on base + SFT: vLLM cannot stack two LoRAs
    merged = {"dpo": str(tmp_path / "merged" / "dpo")}
    specs = [("base", base), ("sft", sft), ("dpo", dpo)]
    one, two = serve.servers("vllm", specs, merged)
    assert one.base == base and one.names == {"base": base, "sft": sft}
    assert two.base == merged["dpo"] and two.names == {"dpo": merged["dpo"]}
    argv = serve.command("vllm", one, 8000, "bfloat16", ["--tensor-parallel-size", "1"])
    assert argv[:3] == ["vllm", "serve", base] and argv[argv.index("--served-model-name") + 1] == "base"
    assert argv[argv.index("--lora-modules") + 1] == f"sft={sft}" and argv[argv.index("--max-lora-rank") + 1] == "16"
    assert argv[-2:] == ["--tensor-parallel-size", "1"] and "--enable-lora" in argv
    only_sft = serve.servers("vllm", [("sft", sft)], {})  # the base itself is not evaluated: still served
    assert only_sft[0].names == {"_base": base, "sft": sft}
    per_model = serve.servers("transformers", specs, {**merged, "sft": str(tmp_path / "merged" / "sft")})
    assert [s.names for s in per_model] == [{"base": base}, {"sft": str(tmp_path / "merged" / "sft")},
                                            {"dpo": merged["dpo"]}]
    argv = serve.command("transformers", per_model[0], 8123, "float32", [])
    assert argv[1:3] == ["serve", "base"] and "--continuous-batching" in argv
    linked = serve.link_names(per_model[1], tmp_path / "served")
    assert (linked / "sft").resolve() == (tmp_path / "merged" / "sft").resolve()


# ---------------------------------------------------------------------------- the served path, for real

EUROEVAL_PY = REPO / ".venv-euroeval" / "bin" / "python"


@pytest.mark.skipif(not EUROEVAL_PY.exists() and os.environ.get("CI") != "true",
                    reason="needs .venv-euroeval (make test builds it)")
@pytest.mark.e2e
def test_served_tiny_model_is_scored_by_lm_eval_and_euroeval(tmp_path, monkeypatch):
    """`transformers serve` holds the tiny Llama; lm-eval (local-completions) and the real EuroEval
    (from .venv-euroeval, LiteLLM -> the server) score it on Danish tasks, offline; the server is gone after."""
    from omegaconf import OmegaConf

    from dfm_hpc import dist, schema, tiny
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate

    cache, modules = tmp_path / "euroeval_cache", tmp_path / "modules"
    fixture = REPO / "tests" / "helpers" / "euroeval_fixture.py"
    r = subprocess.run([str(EUROEVAL_PY), str(fixture), str(cache), str(modules)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    monkeypatch.setenv("HF_MODULES_CACHE", str(modules))  # EuroEval's process finds the metrics there
    run = tmp_path / "run"
    sdir = run / "stages" / "evaluate"
    sdir.mkdir(parents=True)
    tiny.resolve("tiny:llama", run / "cache")
    port = _free_port()
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), {
        "stages": ["evaluate"], "data": {"eval_text": "tiny:eval"}, "seed": 7,
        "evaluate": {"models": ["base"], "generation_prompts": 1, "max_new_tokens": 4, "max_eval_texts": 5,
                     "server": "transformers", "server_port": port, "server_timeout_s": 300,
                     "lm_eval_tasks": ["tiny:danish_mc_gen"], "lm_eval_limit": 4,
                     "euroeval": True, "euroeval_python": str(EUROEVAL_PY), "euroeval_cache": str(cache),
                     "euroeval_datasets": ["angry-tweets"], "euroeval_args": ["--num-iterations", "1"]}})
    evaluate.run(cfg, StageContext(run, sdir, dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500)))
    assert not _listening(port)  # stopped

    (m,) = json.loads((sdir / "results.json").read_text())["models"]
    assert m["serving"]["backend"] == "transformers" and m["serving"]["startup_s"] > 0
    assert m["serving"]["tokens_per_s"] > 0 and m["serving"]["completion_tokens"] > 0
    lm = m["benchmarks"]["lm-eval/dfm_danish_mc_gen"]
    assert 0 <= lm["scores"]["exact_match (letter)"] <= 1
    assert lm["meta"] | {"harness_version": None, "backend_version": None} == {
        "dtype": "float32", "backend": "transformers", "backend_version": None, "seed": 7, "chat_template": False,
        "harness": "lm-eval", "harness_version": None, "task_version": "1.0", "split": "test", "n_samples": 4,
        "num_fewshot": 0}
    ee = m["benchmarks"].get("euroeval/sentiment-classification/angry-tweets")
    assert ee is not None, m["notes"]
    assert set(ee["scores"]) >= {"mcc", "macro_f1"}
    assert -100 <= ee["scores"]["mcc"] <= 100 and 0 <= ee["scores"]["macro_f1"] <= 100  # EuroEval's percentages
    assert ee["meta"]["harness"] == "euroeval" and ee["meta"]["split"] == "validation"
    assert ee["meta"]["backend"] == "transformers" and ee["meta"]["harness_version"]
    assert (sdir / "euroeval" / "base" / "euroeval_benchmark_results.jsonl").exists()
    md = (sdir / "results.md").read_text()
    assert "| euroeval sentiment-classification/angry-tweets mcc |" in md and "| server tokens_per_s |" in md


# ---------------------------------------------------------------------------- LUMI

def test_lumi_dry_run_renders_an_evaluate_job_with_vllm_and_euroeval_from_its_own_env(tmp_path):
    """munin_pipeline on cluster=lumi: the evaluate job's script says where EuroEval's environment is
    (only that job's), and what the stage runs in it from that config: vLLM serving the base with the
    SFT adapter under its name (DPO's adapter sits on SFT's, so it is served merged by a second
    server), lm-eval against it, EuroEval from that environment."""
    from dfm_hpc import dist
    from dfm_hpc.job import harness
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate

    from helpers import dfm

    over = ["+experiment=munin_pipeline", *LUMI]
    p = dfm(*over, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = p.stdout
    job = out[out.index("─ evaluate:"):out.index("─ card:")]
    sft_job = out[out.index("─ sft:"):out.index("─ dpo:")]
    py = "/project/project_465000670/dfm_hpc/euroeval-venv/bin/python"
    assert f'export DFM_HPC_EUROEVAL_PYTHON="{py}"' in job
    assert "# evaluate: vLLM server in this job" in job and "# evaluate:" not in sft_job  # evaluate_setup
    assert "#SBATCH --partition=small-g" in job and "singularity run" in job

    cfg = make_cfg(*over)
    ev = cfg.evaluate
    assert ev.server == "vllm" and ev.euroeval and "belebele_dan_Latn" in ev.lm_eval_tasks
    run = tmp_path / "run"
    sft = _adapter(run / "stages" / "sft" / "model", cfg.model.name_or_path)
    dpo = _adapter(run / "stages" / "dpo" / "model", sft)
    ctx = StageContext(run, run / "stages" / "evaluate", dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500))
    specs = evaluate.model_specs(cfg, ctx)
    assert specs == [("base", cfg.model.name_or_path), ("sft", sft), ("dpo", dpo)]
    first, second = serve.servers(ev.server, specs, {"dpo": str(run / "stages/evaluate/merged/dpo")})
    argv = serve.command(ev.server, first, ev.server_port, "bfloat16", list(ev.server_args))
    assert argv[:3] == ["vllm", "serve", cfg.model.name_or_path] and f"sft={sft}" in argv
    assert argv[argv.index("--port") + 1] == "8000" and "--max-model-len" in argv
    assert second.names == {"dpo": str(run / "stages/evaluate/merged/dpo")}
    kind, args = harness.server_model_args("http://127.0.0.1:8000/v1", "sft", sft, chat=False)
    assert kind == "local-completions" and args["model"] == "sft"
    ee = harness.euroeval_command(py, "sft", "http://127.0.0.1:8000/v1", list(ev.euroeval_tasks),
                                  test_split=ev.euroeval_test_split, cache_dir="/scratch/x")
    assert ee[:3] == [py, "-m", "euroeval.cli"] and ee[ee.index("--model") + 1] == "openai/sft"
    assert ee[ee.index("--language") + 1] == "da" and "--evaluate-test-split" not in ee


def test_prefetch_lists_lm_eval_and_euroeval_datasets(tmp_path):
    from helpers import dfm

    p = dfm("prefetch", "+experiment=munin_sft", *LUMI,
            f"cluster.env.HF_HOME={tmp_path / 'hf'}", f"cluster.env.DFM_HPC_EUROEVAL_CACHE={tmp_path / 'ee'}",
            cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr  # nothing cached here
    for repo, key in (("facebook/belebele (dan_Latn)", "lm-eval belebele_dan_Latn"),
                      ("alexandrainst/m_mmlu (da)", "lm-eval m_mmlu_da"), ("EuroEval Danish", "evaluate.euroeval")):
        assert any(repo in ln and key in ln for ln in p.stdout.splitlines()), (repo, p.stdout)
    assert p.stdout.count("alexandrainst/m_truthfulqa") == 1  # mc1 and mc2 read the same dataset
    (tmp_path / "ee" / "EuroEval___angry-tweets-mini" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    p = dfm("prefetch", "+experiment=munin_sft", *LUMI,
            f"cluster.env.HF_HOME={tmp_path / 'hf'}", f"cluster.env.DFM_HPC_EUROEVAL_CACHE={tmp_path / 'ee'}",
            cwd=tmp_path)
    (row,) = [ln for ln in p.stdout.splitlines() if "evaluate.euroeval" in ln]
    assert "yes" in row
