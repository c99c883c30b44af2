"""eval_every_steps: held-out loss during training, on 2 ranks (ZeRO-3), into the step metrics, the
loss curve, the summary and the model card."""

from __future__ import annotations

import json

from helpers import REPO, dfm, run_dirs


def test_eval_every_steps_on_two_ranks_reaches_metrics_plot_and_card(tmp_path):
    r = dfm("+experiment=sft_tiny", "stages=[sft,card]", "cluster=local", "sft.max_steps=4", "sft.eval_every_steps=2",
            "sft.save_every_steps=100", f"runs_root={tmp_path / 'runs'}", cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    sft = run / "stages" / "sft"
    assert sorted(p.name for p in (sft / "logs").glob("rank-*.log")) == ["rank-0.log", "rank-1.log"]
    rows = [json.loads(ln) for ln in (sft / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval_loss" in row]
    assert [row["step"] for row in evals] == [2, 4] and all(row["eval_loss"] > 0 for row in evals)
    assert {row["step"] for row in rows if "loss" in row} == {1, 2, 3, 4}  # training rows are still there
    summary = json.loads((sft / "summary.json").read_text())
    assert [e["step"] for e in summary["eval_during_training"]] == [2, 4]
    assert summary["final_loss"] is not None and summary["first_loss"] is not None
    assert "eval_loss" in (sft / "logs" / "rank-0.log").read_text()
    assert (sft / "loss.png").stat().st_size > 0
    card = (run / "stages" / "card" / "README.md").read_text()
    e2, e4 = summary["eval_during_training"]
    assert f"step 2: {e2['eval_loss']:.4f}, step 4: {e4['eval_loss']:.4f}" in card
