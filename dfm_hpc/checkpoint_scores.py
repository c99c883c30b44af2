"""A training stage's checkpoint evaluations as a curve (docs/evaluation.md#checkpoint-evaluation).

stages/<stage>/checkpoint_evals/step-<N>.json holds one checkpoint's scores in results.json's model-row format
(eval_loss, perplexity, benchmarks, notes, bound_to with the weights' sha256; job/checkpoint_eval.py writes it).
The curve's table (curve.md), the card and `compare` read them here: no torch, so both worlds can.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from dfm_hpc import results
from dfm_hpc.rundir import CHECKPOINT_EVALS, STAGES_DIR

RESULT_RE = re.compile(r"^step-(\d+)\.json$")
SNAPSHOT_RE = re.compile(r"^step-(\d+)$")
NOT_PLOTTED = ("eval_texts", "eval_tokens", "seconds")  # sizes and timing, not scores


def result_path(stage_dir: Path, step: int) -> Path:
    return Path(stage_dir) / CHECKPOINT_EVALS / f"step-{step}.json"


def rows(stage_dir: Path) -> List[dict]:
    """The scored checkpoints, by step (an unreadable file is skipped: a job may be writing it)."""
    d = Path(stage_dir) / CHECKPOINT_EVALS
    out = []
    for f in d.iterdir() if d.is_dir() else []:
        if RESULT_RE.match(f.name):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
    return sorted(out, key=lambda r: r["step"])


def waiting(stage_dir: Path) -> List[int]:
    """The steps whose checkpoint was kept for evaluation but has no scores yet (queued, running or failed): the
    evaluation removes a checkpoint's kept weights once its scores are written."""
    d = Path(stage_dir) / CHECKPOINT_EVALS
    return sorted(int(m.group(1)) for f in (d.iterdir() if d.is_dir() else []) for m in [SNAPSHOT_RE.match(f.name)]
                  if m and f.is_dir() and not result_path(stage_dir, int(m.group(1))).exists())


def series(scored: Sequence[dict]) -> Dict[str, List[Tuple[int, float]]]:
    """metric -> [(step, value)], the metrics in table order (results.flatten), numbers only."""
    out: Dict[str, List[Tuple[int, float]]] = {}
    for r in scored:
        for metric, value in results.flatten(r).items():
            if metric not in NOT_PLOTTED and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(metric, []).append((r["step"], float(value)))
    return out


def markdown(stage: str, scored: Sequence[dict], waiting: Sequence[int] = ()) -> str:
    """The curve as a table: one row per scored checkpoint (its step, scores and weights' hash)."""
    metrics = list(series(scored))
    lines = [f"| {stage} step | " + " | ".join(metrics) + " | weights |",
             "|---:|" + "---:|" * len(metrics) + "---|"]
    for r in scored:
        flat = results.flatten(r)
        lines.append(f"| {r['step']} | " + " | ".join(results.fmt(flat.get(m)) for m in metrics)
                     + f" | {results.weights_cell(r)} |")
    notes = [f"step {r['step']}: {n}" for r in scored for n in r.get("notes") or []]
    if waiting:
        notes.append("not scored yet: step " + ", ".join(str(s) for s in waiting))
    return "\n".join(lines) + "\n" + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")


def run_curves(run_dir: Path) -> Dict[str, List[dict]]:
    """{stage: scored checkpoints} for each stage of a run that has checkpoint evaluations."""
    stages = Path(run_dir) / STAGES_DIR
    out = {}
    for sdir in sorted(stages.iterdir()) if stages.is_dir() else []:
        if (sdir / CHECKPOINT_EVALS).is_dir():
            out[sdir.name] = rows(sdir)
    return out


def across(points: Sequence[Tuple[str, Path]]) -> str:
    """`compare`'s view: per stage and metric, one table with a row per step and a column per run (sweep point)."""
    curves = [(label, run_curves(run)) for label, run in points]
    stages = sorted({s for _, c in curves for s in c})
    parts = []
    for stage in stages:
        per = [(label, series(c.get(stage, []))) for label, c in curves]
        metrics = list(dict.fromkeys(m for _, s in per for m in s))
        for metric in metrics:
            steps = sorted({st for _, s in per for st, _ in s.get(metric, [])})
            lines = [f"### {stage} checkpoints: {metric}", "", "| step | " + " | ".join(lab for lab, _ in per) + " |",
                     "|---:|" + "---:|" * len(per)]
            for step in steps:
                cells = [dict(s.get(metric, [])).get(step) for _, s in per]
                lines.append(f"| {step} | " + " | ".join(results.fmt(v) for v in cells) + " |")
            parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def card_section(run_dir: Path, out_dir: Path = None) -> str:
    """The card's section: per stage, the table and the plot (curve.png, copied beside the card as
    checkpoints_<stage>.png). Evaluate jobs still queued or running when the card is written are named."""
    import shutil

    text = ""
    for stage, scored in run_curves(run_dir).items():
        sdir = Path(run_dir) / STAGES_DIR / stage
        waiting_ = waiting(sdir)
        if not scored and not waiting_:
            continue
        text += f"\n### {stage}: its saved checkpoints, scored\n\n" + markdown(stage, scored, waiting_)
        png = sdir / CHECKPOINT_EVALS / "curve.png"
        if out_dir is not None and png.exists():
            shutil.copy(png, Path(out_dir) / f"checkpoints_{stage}.png")
            text += f"\n![{stage}: scores of its saved checkpoints](checkpoints_{stage}.png)\n"
    return text


def status_lines(points: Sequence[Path]) -> List[str]:
    """`status`'s line per training stage with checkpoint evaluations: how many are scored, how many wait (queued,
    running or failed), and where the curve is."""
    lines = []
    for p in points:
        for stage, scored in run_curves(p).items():
            sdir = Path(p) / STAGES_DIR / stage
            left = waiting(sdir)
            if not scored and not left:
                continue
            head = f"{p.name}: " if len(points) > 1 else ""
            lines.append(f"{head}{stage} checkpoint evaluations: {len(scored)} scored"
                         + (f", {len(left)} not yet (step {', '.join(map(str, left))})" if left else "")
                         + f"; {sdir / CHECKPOINT_EVALS / 'curve.md'}")
    return lines
