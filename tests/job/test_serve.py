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
from helpers.foreign_server import Foreign

# a model server: "loads" for DELAY s, then answers /health and /v1/models with NAMES, bound as vLLM
# binds (SO_REUSEADDR + SO_REUSEPORT)
HEALTH = textwrap.dedent("""
    import http.server, json, socket, sys, time
    port, names = int(sys.argv[1]), [n for n in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if n]
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/health": b"ok", "/v1/models": json.dumps({"data": [{"id": n} for n in names]}).encode()}
            self.send_response(200 if self.path in body else 404); self.end_headers()
            self.wfile.write(body.get(self.path, b""))
        def log_message(self, *a): pass
    class S(http.server.HTTPServer):
        def server_bind(self):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); super().server_bind()
    S(("127.0.0.1", port), H).serve_forever()
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


def _stub(tmp_path, port=0, names=("base-n0nce",), delay=0.0, expect=None, name="server"):
    """A Server around the HEALTH stub: port 0 = the job's own port; expects its `names` unless told."""
    return serve.Server(lambda p: [sys.executable, "-c", HEALTH, str(p), ",".join(names), str(delay)], port,
                        tmp_path / f"{name}.log", timeout_s=30, say=lambda m: None,
                        expect={n: "/m" for n in names} if expect is None else expect)


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


# ---------------------------------------------------------------------------- the job's own address (issue #22)

def test_the_port_is_derived_from_the_job_and_checked_free(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242123")
    port = serve.pick_port()
    assert serve.PORT_LO <= port < serve.PORT_LO + serve.PORT_SPAN and port != 8000
    assert port == serve.pick_port(seed=4242123) and port != serve.pick_port(seed=4242124)
    first = serve.PORT_LO + 4242123 % serve.PORT_SPAN
    with Foreign(first):  # another job's server on the port this job would take: the next one
        assert not serve.port_free(first) and serve.pick_port() == first + 1
    with Foreign(first, host="0.0.0.0"):  # any address holds the port
        assert not serve.port_free(first)


def test_a_foreign_server_on_the_job_port_is_never_asked_and_the_job_moves_on(tmp_path, monkeypatch):
    """A stdlib server squats on the port this job would pick, answering /health and /v1/models with the
    generic names: the job's server goes elsewhere, and not one request reaches the squatter."""
    monkeypatch.setenv("SLURM_JOB_ID", "977")
    squat = serve.pick_port()
    with Foreign(squat) as foreign:
        with _stub(tmp_path) as s:
            assert s.port != squat and s.base_url == f"http://127.0.0.1:{s.port}/v1"
            s.check()
        assert foreign.hits == []


def test_a_squatter_that_takes_the_port_while_the_server_loads_is_detected_not_scored(tmp_path, monkeypatch):
    """The old bug: vLLM loads for minutes before it binds, and a health check that accepts any answer
    passes on whatever server holds 127.0.0.1:8000. Here the squatter arrives after the free-port check;
    with the port fixed the stage fails with the reason, and the squatter is asked nothing."""
    port = _free_port()
    srv = _stub(tmp_path, port=port, delay=1.0)
    with Foreign(port, reuseport=True) as foreign:  # shares the port the way a second vLLM would
        monkeypatch.setattr(serve, "port_free", lambda p: True)  # the squatter came just after the check
        with pytest.raises(serve.AddressTaken, match=f"another process listens on 127.0.0.1:{port}"):
            with srv:
                pass
        assert foreign.hits == [] and srv.proc.poll() is not None


def test_a_server_is_ours_only_when_it_lists_exactly_our_names(tmp_path, monkeypatch):
    """Names checked too: a server of ours listing generic names (or another job's) is refused, and where
    /proc cannot tell who listens, the names alone keep a foreign server from being scored."""
    with pytest.raises(serve.AddressTaken, match=r"serves \['base', 'sft'\], not this job's \['sft-n0nce'\]"):
        with _stub(tmp_path, names=("base", "sft"), expect={"sft-n0nce": "/m"}):
            pass
    monkeypatch.setattr(serve, "_proc_net", lambda: False)  # no /proc/net (not Linux) ...
    monkeypatch.setattr(serve, "port_free", lambda p: True)  # ... and the squatter came after the check
    port = _free_port()
    with Foreign(port) as foreign:
        srv = _stub(tmp_path, port=port, names=("sft-n0nce",), delay=2.0, name="other")
        with pytest.raises(serve.AddressTaken, match=r"serves \['base', 'dpo', 'sft'\]"):
            with srv:
                pass
        assert set(foreign.hits) <= {"/health", "/v1/models"}  # asked who it is, never a benchmark item


def test_a_second_server_joining_the_port_ends_the_scoring(tmp_path):
    """vLLM binds with SO_REUSEPORT: a second vLLM of the same user on the same port takes a share of the
    connections. A listener that is not ours appearing beside our server is caught by check()."""
    with _stub(tmp_path) as s:
        with Foreign(s.port, reuseport=True):
            with pytest.raises(serve.AddressTaken, match="now listens"):
                s.check()


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
    argv = serve.command("vllm", one, 21234, "bfloat16", ["--tensor-parallel-size", "1"])
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
    one, _ = serve.servers("vllm", specs, merged, tag="n0nce")  # the job's nonce on every served name
    assert one.names == {"base": base, "sft": sft} and one.ids() == {"base-n0nce": base, "sft-n0nce": sft}
    argv = serve.command("vllm", one, 21234, "bfloat16", [])
    assert argv[argv.index("--served-model-name") + 1] == "base-n0nce" and f"sft-n0nce={sft}" in argv


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
    assert lm["meta"] | {"harness_version": None, "backend_version": None, "dataset_revision": None} == {
        "dtype": "float32", "backend": "transformers", "backend_version": None, "seed": 7, "chat_template": False,
        "harness": "lm-eval", "harness_version": None, "task_version": "1.0", "split": "test", "n_samples": 4,
        "n_samples_total": 20, "num_fewshot": 0, "dataset": "json", "dataset_config": None, "dataset_revision": None}
    # the versions the server's own interpreter reported, bound to the scores (job/scored.py)
    assert m["bound_to"]["server"] == m["serving"]["runtime"] and m["serving"]["runtime"]["transformers"]
    assert lm["meta"]["backend_version"] == m["serving"]["runtime"]["transformers"]
    ee = m["benchmarks"].get("euroeval/sentiment-classification/angry-tweets")
    assert ee is not None, m["notes"]
    assert set(ee["scores"]) >= {"mcc", "macro_f1"}
    assert -100 <= ee["scores"]["mcc"] <= 100 and 0 <= ee["scores"]["macro_f1"] <= 100  # EuroEval's percentages
    assert ee["meta"]["harness"] == "euroeval" and ee["meta"]["split"] == "validation"
    assert ee["meta"]["backend"] == "transformers" and ee["meta"]["harness_version"]
    assert (sdir / "euroeval" / "base" / "euroeval_benchmark_results.jsonl").exists()
    # the per-item (lm-eval, log_samples) and per-iteration (EuroEval) scores a gate pairs (job/gate.py)
    items = json.loads((sdir / "items" / "base.json").read_text())["benchmarks"]
    gen = items["lm-eval/dfm_danish_mc_gen"]
    assert gen["unit"] == "item" and gen["ids"] == [0, 1, 2, 3] and len(gen["metrics"]["exact_match (letter)"]) == 4
    it = items["euroeval/sentiment-classification/angry-tweets"]
    assert it["unit"] == "iteration" and len(it["metrics"]["mcc"]) == 1
    assert it["metrics"]["mcc"][0] * 100 == pytest.approx(ee["scores"]["mcc"])  # 0-1: EuroEval scales the mean
    md = (sdir / "results.md").read_text()
    assert "| euroeval sentiment-classification/angry-tweets mcc |" in md and "| server tokens_per_s |" in md
    # the runtime that served the scores heads the server's log, and its caches stayed in the stage dir
    first = (sdir / "server" / "server-0.log").read_text().splitlines()[0]
    assert first.startswith("dfm_hpc: model server runtime: transformers ") and "TORCH_COMPILE_DISABLE=1" in first
    assert f"VLLM_CACHE_ROOT={sdir / 'server' / 'cache' / 'vllm'}" in first


# ---------------------------------------------------------------------------- LUMI

def test_lumi_dry_run_renders_an_evaluate_job_with_vllm_and_euroeval_from_its_own_env(tmp_path):
    """munin_pipeline on cluster=lumi: the evaluate job mounts the harness overlay (only that job) and its
    script says where EuroEval's environment is, and what the stage runs in it from that config: vLLM
    serving the base with the SFT adapter under its name (DPO's adapter sits on SFT's, so it is served
    merged by a second server), lm-eval against it, EuroEval and inspect from that environment."""
    from dfm_hpc import dist
    from dfm_hpc.job import harness, harness_inspect
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate

    from helpers import dfm

    over = ["+experiment=munin_pipeline", *LUMI]
    p = dfm(*over, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = p.stdout
    job = out[out.index("─ evaluate:"):out.index("─ card:")]
    sft_job = out[out.index("─ sft:"):out.index("─ dpo:")]
    py = "/harness-software/bin/python"  # the harness overlay's venv (containers/build_harness.sh)
    assert f'export DFM_HPC_EUROEVAL_PYTHON="{py}"' in job
    mount = "/project/project_465000670/dfm_hpc/dfm_hpc-harness.sqsh:/harness-software:image-src=/"
    srun = [ln for ln in job.splitlines() if ln.startswith("srun ")]
    assert srun and all(mount in ln for ln in srun) and mount not in sft_job
    assert "# evaluate: vLLM server in this job" in job and "# evaluate:" not in sft_job  # evaluate_setup
    assert "#SBATCH --partition=small-g" in job and "singularity run" in job

    cfg = make_cfg(*over)
    ev = cfg.evaluate
    assert ev.server == "vllm" and ev.euroeval and "belebele_dan_Latn" in ev.lm_eval_tasks
    assert list(ev.inspect_tasks) == ["dfm:danish_qa"]
    run = tmp_path / "run"
    sft = _adapter(run / "stages" / "sft" / "model", cfg.model.name_or_path)
    dpo = _adapter(run / "stages" / "dpo" / "model", sft)
    ctx = StageContext(run, run / "stages" / "evaluate", dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500))
    specs = evaluate.model_specs(cfg, ctx)
    assert specs == [("base", cfg.model.name_or_path), ("sft", sft), ("dpo", dpo)]
    first, second = serve.servers(ev.server, specs, {"dpo": str(run / "stages/evaluate/merged/dpo")})
    assert ev.server_port == 0  # the job's own port (serve.pick_port), never vLLM's 8000 on a shared node
    argv = serve.command(ev.server, first, 21234, "bfloat16", list(ev.server_args))
    assert argv[:3] == ["vllm", "serve", cfg.model.name_or_path] and f"sft={sft}" in argv
    assert argv[argv.index("--port") + 1] == "21234" and "--max-model-len" in argv
    assert second.names == {"dpo": str(run / "stages/evaluate/merged/dpo")}
    kind, args = harness.server_model_args("http://127.0.0.1:8000/v1", "sft", sft, chat=False)
    assert kind == "local-completions" and args["model"] == "sft"
    ee = harness.euroeval_command(py, "sft", "http://127.0.0.1:8000/v1", list(ev.euroeval_tasks),
                                  test_split=ev.euroeval_test_split, cache_dir="/scratch/x")
    assert ee[:3] == [py, "-m", "euroeval.cli"] and ee[ee.index("--model") + 1] == "openai/sft"
    assert ee[ee.index("--language") + 1] == "da" and "--evaluate-test-split" not in ee
    ins = harness_inspect.inspect_command(py, "sft", list(ev.inspect_tasks), log_dir="/scratch/x", seed=cfg.seed)
    assert ins[:4] == [py, "-m", "inspect_ai", "eval"] and ins[ins.index("--model") + 1] == "openai-api/dfm/sft"


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
