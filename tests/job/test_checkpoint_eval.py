"""job/checkpoint_eval.py's curve: curve.md and curve.png redrawn from every scored checkpoint (real matplotlib);
the scoring itself runs in tests/e2e/test_checkpoint_evals_slurm.py."""

from __future__ import annotations

from dfm_hpc.job import checkpoint_eval
from dfm_hpc.rundir import CHECKPOINT_EVALS

from helpers.checkpoint_steps import write_step


def test_the_curve_is_redrawn_from_every_scored_checkpoint(tmp_path):
    sdir = tmp_path / "stages" / "sft"
    write_step(tmp_path, "sft", 10, 4.0, 0.2)
    checkpoint_eval.write_curve(sdir, "sft")
    d = sdir / CHECKPOINT_EVALS
    first = (d / "curve.png").read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    write_step(tmp_path, "sft", 20, 3.0, 0.3)
    (d / "step-30").mkdir()
    checkpoint_eval.write_curve(sdir, "sft")
    md = (d / "curve.md").read_text()
    assert md.startswith("# sft: scores of its saved checkpoints\n") and "| 10 | 4.0000" in md and "| 20 | 3.0000" in md
    assert "not scored yet: step 30" in md
    assert (d / "curve.png").read_bytes() != first  # a second point drawn
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_no_arguments_is_a_usage_error(capsys):
    assert checkpoint_eval.main([]) == 2
    assert "RUN_DIR STAGE STEP" in capsys.readouterr().err
