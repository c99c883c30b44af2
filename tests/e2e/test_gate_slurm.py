"""A planted regression stops the chain on the LUMI-like Slurm cluster (issue #23 item 4): evaluate scores the tiny
base on the tiny Danish task and compares it with a stored reference result that answered every item right; the
gate fails the evaluate job, so the card job after it never starts, and `status` says why. Pass and warn-only:
tests/job/test_gate.py (in-process)."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import dfm, run_dirs, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]


def _reference(root):
    """A stored evaluate result whose model scored every one of the tiny task's 20 items (items/ beside it)."""
    sdir = root / "reference" / "stages" / "evaluate"
    (sdir / "items").mkdir(parents=True)
    bench = {"scores": {"acc": 1.0, "acc_stderr": 0.0}, "meta": {"harness": "lm-eval", "split": "test"}}
    (sdir / "results.json").write_text(json.dumps({"format": 2, "models": [
        {"name": "oracle", "path": "/oracle", "benchmarks": {"lm-eval/dfm_danish_mc": bench}, "notes": []}]}))
    items = {"unit": "item", "ids": list(range(20)), "metrics": {"acc": [1.0] * 20}}
    (sdir / "items" / "oracle.json").write_text(json.dumps({"format": 1, "model": "oracle",
                                                            "benchmarks": {"lm-eval/dfm_danish_mc": items}}))
    return root / "reference"


def test_planted_regression_stops_the_chain_with_the_reason(slurm_cluster, tmp_path):
    ref = _reference(tmp_path)
    p = dfm("+experiment=pipeline_tiny", "cluster=slurm", "stages=[evaluate,card]", "evaluate.models=[base]",
            "evaluate.generation_prompts=0", f"evaluate.gate.reference={ref}", "evaluate.gate.models=[base]",
            "evaluate.gate.max_drop=0.1", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    run = next(r for r in run_dirs(tmp_path) if r.parent.name == "pipeline_tiny")
    ev, card = run / "stages" / "evaluate", run / "stages" / "card"
    try:
        wait_for(lambda: (ev / "FAILED").exists() or (ev / "DONE").exists(), timeout=240, what="evaluate to end")
        failed = (ev / "FAILED").read_text() if (ev / "FAILED").exists() else ""
        assert "gate: regressed: base against oracle" in failed and "Traceback" not in failed  # a verdict, no crash
        v = json.loads((ev / "gate.json").read_text())  # written before the stop, with the scores
        task, group = v["models"]["base"]["rows"]  # the task, and pipeline_tiny's group of it
        assert task["regressed"] and task["n"] == 20 and task["unit"] == "item" and task["high"] < -0.1
        assert group["name"] == "danish" and group["regressed"]
        assert json.loads((ev / "results.json").read_text())["models"][0]["gate"]["verdict"] == "regressed"
        card_job = (card / "job_id").read_text().strip()

        def card_state():
            out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", card_job, "-o", "State"], capture_output=True,
                                 text=True).stdout.split()
            return out and out[0] not in ("PENDING",) and out[0]
        state = wait_for(card_state, timeout=60, what="Slurm to drop the card job")
        assert state.startswith("CANCELLED") and not (card / "logs").exists()  # it never ran
        out = dfm("status", str(run), cwd=tmp_path).stdout
        assert "outcome: failed at evaluate: gate: regressed: base against oracle" in out
        assert "base vs oracle (reference), lm-eval/dfm_danish_mc acc: delta" in out
    finally:
        for sdir in (ev, card):
            jid = sdir / "job_id"
            if jid.exists():
                subprocess.run(["scancel", jid.read_text().strip()], capture_output=True)
