"""checkpoint_scores.py: a stage's scored checkpoints as a curve's table, the card's section and `compare`'s tables
across runs (sweep points), from step-<N>.json files like job/checkpoint_eval.py writes."""

from __future__ import annotations

from dfm_hpc import checkpoint_scores
from dfm_hpc.rundir import CHECKPOINT_EVALS

from helpers.checkpoint_steps import write_step


def test_the_table_has_a_row_per_scored_checkpoint_in_step_order(tmp_path):
    sdir = tmp_path / "stages" / "sft"
    write_step(tmp_path, "sft", 100, 3.0, 0.25, sha="1" * 64)
    write_step(tmp_path, "sft", 20, 4.0, 0.20, sha="2" * 64, notes=["lm-eval failed: X"])
    (sdir / CHECKPOINT_EVALS / "step-300").mkdir()  # kept, not scored yet
    (sdir / CHECKPOINT_EVALS / "step-100").mkdir()  # scored: its weights not yet removed; not waiting
    (sdir / CHECKPOINT_EVALS / "step-400.json").write_text("{half")  # being written: skipped
    rows = checkpoint_scores.rows(sdir)
    assert [r["step"] for r in rows] == [20, 100]
    assert checkpoint_scores.waiting(sdir) == [300]
    s = checkpoint_scores.series(rows)
    assert s == {"eval_loss": [(20, 4.0), (100, 3.0)], "perplexity": [(20, 8.0), (100, 6.0)],
                 "lm-eval tiny_mc acc": [(20, 0.2), (100, 0.25)]}  # sizes and timing are not plotted
    md = checkpoint_scores.markdown("sft", rows, [300])
    assert md.splitlines()[:4] == [
        "| sft step | eval_loss | perplexity | lm-eval tiny_mc acc | weights |", "|---:|---:|---:|---:|---|",
        f"| 20 | 4.0000 | 8.0000 | 0.2000 | {'2' * 12} |", f"| 100 | 3.0000 | 6.0000 | 0.2500 | {'1' * 12} |"]
    assert "- step 20: lm-eval failed: X" in md and "- not scored yet: step 300" in md


def test_compare_shows_each_metric_across_sweep_points(tmp_path):
    a, b = tmp_path / "0", tmp_path / "1"
    write_step(a, "sft", 10, 5.0)
    write_step(a, "sft", 20, 4.0)
    write_step(b, "sft", 20, 3.5)
    (tmp_path / "2" / "stages" / "sft").mkdir(parents=True)  # a point without checkpoint evaluations
    text = checkpoint_scores.across([("s/0", a), ("s/1", b), ("s/2", tmp_path / "2")])
    assert "### sft checkpoints: eval_loss\n\n| step | s/0 | s/1 | s/2 |\n|---:|---:|---:|---:|\n" \
           "| 10 | 5.0000 | – | – |\n| 20 | 4.0000 | 3.5000 | – |\n" in text
    assert "### sft checkpoints: perplexity" in text
    assert checkpoint_scores.across([("s/2", tmp_path / "2")]) == ""


def test_the_card_section_copies_the_plot_and_names_what_is_not_scored_yet(tmp_path):
    run, card = tmp_path / "run", tmp_path / "card"
    card.mkdir()
    write_step(run, "cpt", 50, 2.5)
    d = run / "stages" / "cpt" / CHECKPOINT_EVALS
    (d / "curve.png").write_bytes(b"\x89PNG fake")
    (d / "step-100").mkdir()
    text = checkpoint_scores.card_section(run, card)
    assert "### cpt: its saved checkpoints, scored" in text and "| 50 | 2.5000 |" in text
    assert "not scored yet: step 100" in text and "](checkpoints_cpt.png)" in text
    assert (card / "checkpoints_cpt.png").read_bytes() == b"\x89PNG fake"
    assert checkpoint_scores.card_section(tmp_path / "none", card) == ""


def test_status_says_how_many_are_scored_and_which_wait(tmp_path):
    a, b = tmp_path / "0", tmp_path / "1"
    write_step(a, "sft", 10, 4.0)
    (a / "stages" / "sft" / CHECKPOINT_EVALS / "step-20").mkdir()
    (b / "stages" / "sft").mkdir(parents=True)
    curve = a / "stages" / "sft" / CHECKPOINT_EVALS / "curve.md"
    line = f"sft checkpoint evaluations: 1 scored, 1 not yet (step 20); {curve}"
    assert checkpoint_scores.status_lines([a]) == [line]
    assert checkpoint_scores.status_lines([a, b]) == [f"0: {line}"]
