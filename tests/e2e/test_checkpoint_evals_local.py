"""Checkpoint evaluations with cluster=local (no sbatch): the kept checkpoints are scored in one process after the
stage's ranks exit (login/checkpoint_evals.score_local -> job/checkpoint_eval.py), with the real tiny model."""

from __future__ import annotations

import io
import json
import shutil

from dfm_hpc import config_io, tiny
from dfm_hpc.job import scored
from dfm_hpc.login import checkpoint_evals
from dfm_hpc.plan import plan

from helpers import dfm, run_dirs


def test_a_local_run_scores_its_kept_checkpoints_after_the_stage(tmp_path):
    p = dfm("+experiment=sft_tiny", "stages=[sft]", "sft.eval_checkpoints=1", "evaluate.max_eval_texts=8",
            "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    cfg = config_io.load_config(run)
    (job,) = plan(cfg)
    model = tiny.resolve(cfg.model.name_or_path, run / "cache")
    d = run / "stages" / "sft" / "checkpoint_evals"
    shutil.copytree(model, d / "step-5")  # a kept full-model checkpoint (what rank 0 links at a save)
    out = io.StringIO()
    assert checkpoint_evals.score_local(run, job, out) == 0, out.getvalue()
    assert "scoring sft's kept checkpoints (cluster=local: after the stage" in out.getvalue()
    row = json.loads((d / "step-5.json").read_text())
    assert row["step"] == 5 and row["eval_texts"] == 8 and row["eval_loss"] > 0
    assert row["bound_to"]["weights"]["sha256"] == scored.content_hash(model)["sha256"]
    assert row["bound_to"]["run"]["run_dir"] == str(run.resolve())
    assert not (d / "step-5").exists() and (d / "curve.png").exists() and "| 5 | " in (d / "curve.md").read_text()
    assert "eval_loss" in (d / "logs" / "step-5.log").read_text()
    assert checkpoint_evals.score_local(run, job, out) == 0  # nothing left: no process started
    assert out.getvalue().count("scoring sft's") == 1
