"""inspect_ai as a client of the served model (job/harness_inspect.py): the command it runs, what happens when it
cannot run, and the evaluate stage scoring the tiny model through `transformers serve` with the real inspect_ai
from the harness environment (.venv-euroeval) on the project's own Danish task, offline."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from dfm_hpc.job import harness_inspect

from helpers import REPO

HARNESS_PY = REPO / ".venv-euroeval" / "bin" / "python"


def test_the_command_points_inspect_at_the_server_and_our_task_by_file():
    argv = harness_inspect.inspect_command("/h/bin/python", "sft-n0nce", ["dfm:danish_qa", "inspect_evals/x"],
                                           log_dir="/w/logs", seed=7, limit=5, extra=["--epochs", "2"])
    assert argv[:4] == ["/h/bin/python", "-m", "inspect_ai", "eval"]
    spec = argv[4]
    file, task = spec.split("@")
    assert task == "dfm_danish_qa" and os.path.isfile(file) and argv[5] == "inspect_evals/x"
    assert argv[argv.index("--model") + 1] == "openai-api/dfm/sft-n0nce"  # the served name, as the server knows it
    assert argv[argv.index("--limit") + 1] == "5" and argv[argv.index("--seed") + 1] == "7"
    assert argv[-2:] == ["--epochs", "2"] and argv[argv.index("--log-format") + 1] == "json"
    env = harness_inspect.client_env("http://127.0.0.1:21234/v1")
    assert env["DFM_BASE_URL"] == "http://127.0.0.1:21234/v1" and env["DFM_API_KEY"]


def test_the_task_data_is_ours_and_well_formed():
    _, _, data = harness_inspect.DFM_TASKS["dfm:danish_qa"]
    d = json.loads(data.read_text())
    assert "MIT" in d["licence"] and len(d["items"]) == 20
    assert len({it["id"] for it in d["items"]}) == 20 and all(it["answers"] and it["question"] for it in d["items"])


def test_inspect_that_cannot_run_is_a_note_not_a_crash(tmp_path):
    argv = harness_inspect.inspect_command(str(tmp_path / "no-python"), "base", ["dfm:danish_qa"],
                                           log_dir=str(tmp_path / "w" / "logs"), seed=0)
    out, note = harness_inspect.run_inspect(argv, tmp_path / "w", {})
    assert out is None and "inspect did not run: FileNotFoundError" in note
    argv[0] = sys.executable
    argv[1:4] = ["-c", "print('no such task')", "--"]  # runs, writes no log
    out, note = harness_inspect.run_inspect(argv, tmp_path / "w", {})
    assert out is None and "scored nothing" in note and "no such task" in note


def test_inspect_is_a_served_piece_that_a_restart_keeps_and_its_settings_rescore():
    """eval_progress: inspect is the last served piece of a model; changing its tasks, limit or arguments scores
    everything again (the settings' hash)."""
    from dfm_hpc.job import eval_progress

    from helpers import make_cfg

    assert eval_progress.served_pieces(True, True, True) == ["serving", "lm-eval", "euroeval", "inspect"]
    assert eval_progress.served_pieces(False, False, True) == ["serving", "inspect"]
    ids = {eval_progress.settings_id(make_cfg(evaluate=ev), "tiny:eval", ["x"]) for ev in (
        {}, {"inspect_tasks": ["dfm:danish_qa"]}, {"inspect_tasks": ["dfm:danish_qa"], "inspect_limit": 5},
        {"inspect_tasks": ["dfm:danish_qa"], "inspect_args": ["--epochs", "2"]})}
    assert len(ids) == 4
    same = {"inspect_tasks": ["dfm:danish_qa"], "inspect_python": "/elsewhere/bin/python"}  # where, not what
    assert eval_progress.settings_id(make_cfg(evaluate=same), "tiny:eval", ["x"]) in ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not HARNESS_PY.exists() and os.environ.get("CI") != "true",
                    reason="needs .venv-euroeval, the harness environment (make test builds it)")
@pytest.mark.e2e
def test_served_tiny_model_is_scored_by_inspect_on_our_danish_task(tmp_path):
    """`transformers serve` holds the tiny Llama; inspect (from the harness environment, its openai-api provider
    -> the server) scores dfm:danish_qa; results carry the binding fields and one score per item."""
    from omegaconf import OmegaConf

    from dfm_hpc import dist, schema, tiny
    from dfm_hpc.job.rank import StageContext
    from dfm_hpc.stages import evaluate

    run = tmp_path / "run"
    sdir = run / "stages" / "evaluate"
    sdir.mkdir(parents=True)
    tiny.resolve("tiny:llama", run / "cache")
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), {
        "stages": ["evaluate"], "data": {"eval_text": "tiny:eval"}, "seed": 7,
        "evaluate": {"models": ["base"], "generation_prompts": 0, "max_eval_texts": 3, "euroeval": False,
                     "server": "transformers", "server_port": _free_port(), "server_timeout_s": 300,
                     "inspect_tasks": ["dfm:danish_qa"], "inspect_limit": 6, "inspect_python": str(HARNESS_PY)}})
    evaluate.run(cfg, StageContext(run, sdir, dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500)))

    (m,) = json.loads((sdir / "results.json").read_text())["models"]
    r = m["benchmarks"].get("inspect/dfm_danish_qa")
    assert r is not None, m["notes"]
    assert 0 <= r["scores"]["accuracy"] <= 1 and r["scores"]["accuracy_stderr"] >= 0
    # one score per item, in the gate's file (job/gate.py), paired by id and checked by the input's hash
    items = json.loads((sdir / "items" / "base.json").read_text())["benchmarks"]["inspect/dfm_danish_qa"]
    values = items["metrics"]["accuracy"]
    assert items["unit"] == "item" and len(values) == len(items["hashes"]) == 6 and set(values) <= {0.0, 1.0}
    assert set(items["ids"]) == {it["id"] for it in json.loads(  # the first 6 (--limit), by their ids
        harness_inspect.DFM_TASKS["dfm:danish_qa"][2].read_text())["items"][:6]}
    assert r["scores"]["accuracy"] == pytest.approx(sum(values) / 6)
    meta = r["meta"]
    assert meta["harness"] == "inspect" and meta["harness_version"] and meta["task_version"] == "1"
    assert meta["n_samples"] == 6 and meta["n_samples_total"] == 20 and meta["seed"] == 7
    assert meta["dataset_revision"].startswith("sha256:") and meta["backend"] == "transformers"
    assert m["bound_to"]["harnesses"]["inspect"] == meta["harness_version"]  # job/scored.py's record
    assert m["bound_to"]["weights"]["sha256"]
    assert "| inspect dfm_danish_qa accuracy |" in (sdir / "results.md").read_text()
    assert list((sdir / "inspect" / "base" / "logs").glob("*.json"))  # inspect's own log, kept
    assert (sdir / "inspect" / "base" / "data" / "inspect_ai").is_dir()  # its traces: in the stage dir, not $HOME
