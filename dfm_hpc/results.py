"""The evaluate stage's results format: `stages/evaluate/results.json` and its Markdown tables.

Written in a rank by the evaluate stage, read on the login node by `compare` and by the card stage,
so it lives here, importing neither world.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple


RESULTS = Path("stages") / "evaluate" / "results.json"


# the fixed metrics of every model, in this order; EuroEval's follow, then the timing
BASE_METRICS = ("eval_loss", "perplexity", "eval_texts", "eval_tokens")


def flatten(model: dict) -> Dict[str, object]:
    """One model entry of results.json -> {metric row label: value}, in table order."""
    row: Dict[str, object] = {k: model.get(k) for k in BASE_METRICS}
    for task, scores in sorted((model.get("euroeval") or {}).items()):
        for metric, value in scores.items():
            row[f"euroeval {task} {metric}"] = value
    row["seconds"] = model.get("seconds")
    return row


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def markdown_table(columns: Sequence[Tuple[str, Dict[str, object]]]) -> str:
    """Rows = the union of the columns' metrics (first-seen order), columns = (label, {metric: value})."""
    metrics: List[str] = []
    for _, row in columns:
        metrics += [m for m in row if m not in metrics]
    if "seconds" in metrics:  # timing last, whatever order the columns came in
        metrics.remove("seconds")
        metrics.append("seconds")
    lines = ["| metric | " + " | ".join(label for label, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for m in metrics:
        lines.append(f"| {m} | " + " | ".join(fmt(row.get(m)) for _, row in columns) + " |")
    return "\n".join(lines) + "\n"


def notes(columns: Sequence[Tuple[str, dict]]) -> List[str]:
    """`label: euroeval_note` for every model that has one."""
    return [f"{label}: {m['euroeval_note']}" for label, m in columns if m.get("euroeval_note")]
