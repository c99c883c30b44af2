"""A scored checkpoint as job/checkpoint_eval.py writes it: stages/<stage>/checkpoint_evals/step-N.json."""

from __future__ import annotations

import json
from pathlib import Path

from dfm_hpc.rundir import CHECKPOINT_EVALS


def write_step(run: Path, stage: str, step: int, loss: float, acc=None, sha="ab" * 32, notes=()) -> None:
    d = run / "stages" / stage / CHECKPOINT_EVALS
    d.mkdir(parents=True, exist_ok=True)
    bench = {"lm-eval/tiny_mc": {"scores": {"acc": acc}, "meta": {"harness": "lm-eval"}}} if acc is not None else {}
    row = {"name": f"{stage} step {step}", "stage": stage, "step": step, "eval_loss": loss, "perplexity": 2.0 * loss,
           "eval_texts": 40, "eval_tokens": 1000, "benchmarks": bench, "notes": list(notes), "seconds": 1.5,
           "bound_to": {"weights": {"sha256": sha}}}
    (d / f"step-{step}.json").write_text(json.dumps(row))
