"""Side-by-side tables of evaluate results (login node: no torch, no transformers).

`python -m dfm_hpc compare RUN_OR_RESULTS [RUN ...]` reads each run's
`stages/evaluate/results.json` (a sweep dir: each point's), or a results.json given directly, and
prints one Markdown table: one row per metric, one column per run:model. The evaluate stage writes
its own results.md with the same table code (`markdown_table`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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


def _sources(ref: str, runs_root: str) -> List[Tuple[str, Path, List[str]]]:
    """(label, results.json, overrides) for a results.json, a run dir or a sweep dir (its points)."""
    from dfm_hpc import rundir

    p = Path(ref)
    if p.is_file():
        # .../<run>/stages/evaluate/results.json -> the run's name; else the file as given
        run = p.parent.parent.parent if p.parent.name == "evaluate" and p.parent.parent.name == "stages" else None
        return [(run.name if run is not None else str(p), p, [])]
    p = rundir.resolve(ref, runs_root)
    if rundir.is_sweep_dir(p):
        points = rundir.read_yaml(p / "sweep.yaml").get("points", [])
        return [(f"{p.name}/{pt['run_dir']}", p / str(pt["run_dir"]) / RESULTS, list(pt.get("overrides", [])))
                for pt in points]
    return [(p.name, p / RESULTS, [])]


def collect(refs: Sequence[str], runs_root: str = "runs") -> Tuple[List[Tuple[str, dict]], List[str]]:
    """The (run:model label, model entry) columns of every ref, and the legend/problem lines."""
    columns: List[Tuple[str, dict]] = []
    legend: List[str] = []
    for ref in refs:
        for label, path, overrides in _sources(ref, runs_root):
            if not path.is_file():
                legend.append(f"{label}: no evaluate results ({path} is missing)")
                continue
            data = json.loads(path.read_text())
            legend.append(f"{label}: {path}" + (f" ({' '.join(overrides)})" if overrides else "")
                          + (f", eval data {data['eval_data']}" if data.get("eval_data") else ""))
            for model in data.get("models", []):
                columns.append((f"{label}:{model['name']}", model))
    return columns, legend


def render(refs: Sequence[str], runs_root: str = "runs") -> str:
    columns, legend = collect(refs, runs_root)
    out = markdown_table([(label, flatten(m)) for label, m in columns]) if columns else "No evaluate results found.\n"
    extra = notes(columns)
    if legend:
        out += "\n" + "\n".join(f"- {line}" for line in legend) + "\n"
    if extra:
        out += "\nEuroEval notes:\n" + "\n".join(f"- {line}" for line in extra) + "\n"
    return out


def compare(refs: Sequence[str], runs_root: str = "runs", out: Optional[str] = None) -> int:
    try:
        text = render(refs, runs_root)
    except LookupError as e:
        print(f"error: {e}")
        return 2
    if out:
        Path(out).write_text(text)
    print(text, end="")
    return 0 if "| metric |" in text else 1
