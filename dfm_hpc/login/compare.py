"""Side-by-side tables of evaluate results (login node: no torch, no transformers).

`python -m dfm_hpc compare RUN_OR_RESULTS [RUN ...]` reads each run's
`stages/evaluate/results.json` (a sweep dir: each point's), or a results.json given directly, and
prints one Markdown table: one row per metric, one column per run:model. The evaluate stage writes
its own results.md with the same table code (`markdown_table`). Benchmarks whose comparability
fields differ between columns (harness or task version, split, samples, seed, dtype, serving
backend, ...: results.COMPARABLE) are warned about, below the table and on stderr. Each run's (sweep
point's) outcome is in the legend where it is news (status.outcome: failed at STAGE: why, running, ...).

The first row is each column's weights (results.weights_cell: the content hash job/scored.py recorded).
Columns whose model goes by the same name (a hub id, a model path) but carries different weight hashes
are refused (exit 2, naming them); --allow-mismatch shows them, marked MISMATCH in that row and warned
about. Results without a hash show "hash: unknown" and are never taken to be the same weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dfm_hpc import checkpoint_scores, results


def sources(ref: str, runs_root: str) -> List[Tuple[str, Path, List[str], Optional[Path]]]:
    """(label, results.json, overrides, run dir or None) for a results.json, a run dir or a sweep dir (its
    points)."""
    from dfm_hpc import rundir

    p = Path(ref)
    if p.is_file():
        # .../<run>/stages/evaluate/results.json -> the run's name; else the file as given
        run = p.parent.parent.parent if p.parent.name == "evaluate" and p.parent.parent.name == rundir.STAGES_DIR \
            else None
        return [(run.name if run is not None else str(p), p, [], None)]
    p = rundir.resolve(ref, runs_root)
    if rundir.is_sweep_dir(p):
        points = rundir.read_yaml(p / rundir.SWEEP).get("points", [])
        return [(f"{p.name}/{pt['run_dir']}", p / str(pt["run_dir"]) / results.RESULTS, list(pt.get("overrides", [])),
                 p / str(pt["run_dir"])) for pt in points]
    return [(p.name, p / results.RESULTS, [], p)]


def collect(refs: Sequence[str], runs_root: str = "runs") -> Tuple[List[Tuple[str, dict]], List[str]]:
    """The (run:model label, model entry) columns of every ref, and the legend/problem lines."""
    from dfm_hpc.login import status

    columns: List[Tuple[str, dict]] = []
    legend: List[str] = []
    found = [s for ref in refs for s in sources(ref, runs_root)]
    runs = [run for *_, run in found if run is not None]
    # each run's (sweep point's) outcome beside its results: a missing column says why it is missing
    outs = dict(zip(runs, status.outcomes(runs))) if runs else {}
    for label, path, overrides, run in found:
        how = outs.get(run)
        if not path.is_file():
            legend.append(f"{label}: no evaluate results ({path} is missing)" + (f"; {how}" if how else ""))
            continue
        data = json.loads(path.read_text())
        # with its results: the outcome only where it is news (a later stage failed, or it still runs)
        news = how is not None and how.state in ("failed", "cancelled", "running", "queued")
        legend.append(f"{label}: {path}" + (f" ({' '.join(overrides)})" if overrides else "")
                      + (f", eval data {data['eval_data']}" if data.get("eval_data") else "")
                      + (f"; {how}" if news else ""))
        for model in data.get("models", []):
            columns.append((f"{label}:{model['name']}", model))
    return columns, legend


def render(refs: Sequence[str], runs_root: str = "runs") -> str:
    return _render(*collect(refs, runs_root))


def _weights(columns: List[Tuple[str, dict]]) -> Dict[str, str]:
    """Each column's weights cell; MISMATCH where its name carries another column's different hash."""
    bad = {lab for _, have in results.mismatches(columns) for labs in have.values() for lab in labs}
    return {lab: ("**MISMATCH** " if lab in bad else "") + results.weights_cell(m) for lab, m in columns}


def _mismatch_lines(columns: List[Tuple[str, dict]]) -> List[str]:
    return [f"{ref} names different weights: " + "; ".join(f"{h[:12]} ({', '.join(labs)})" for h, labs in have.items())
            for ref, have in results.mismatches(columns)]


def _render(columns: List[Tuple[str, dict]], legend: List[str]) -> str:
    cells = _weights(columns)
    out = (results.markdown_table([(label, {"weights sha256": cells[label], **results.flatten(m)})
                                   for label, m in columns]) if columns else "No evaluate results found.\n")
    extra = results.notes(columns)
    warnings = _mismatch_lines(columns) + results.unknowns(columns) + results.comparability(columns)
    if legend:
        out += "\n" + "\n".join(f"- {line}" for line in legend) + "\n"
    if warnings:  # on stderr too: a table of numbers that should not be compared must not go unnoticed
        out += "\nWarning: not comparable as they stand:\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    if extra:
        out += "\nNotes:\n" + "\n".join(f"- {line}" for line in extra) + "\n"
    return out


def compare(refs: Sequence[str], runs_root: str = "runs", out: Optional[str] = None,
            allow_mismatch: bool = False) -> int:
    try:
        columns, legend = collect(refs, runs_root)  # once: it asks Slurm for the points' outcomes
    except LookupError as e:
        print(f"error: {e}")
        return 2
    bad = _mismatch_lines(columns)
    if bad and not allow_mismatch:  # the same name, other weights: a side-by-side table would mislead
        print("error: the same model name carries different weights, so these columns are not the same model:\n"
              + "\n".join(f"  {line}" for line in bad)
              + "\nCompare them anyway with --allow-mismatch (the table marks them MISMATCH).", file=sys.stderr)
        return 2
    # the checkpoint evaluations' curves (<stage>.eval_checkpoints), a table per metric across the runs (sweep points)
    curves = checkpoint_scores.across([(label, run) for ref in refs for label, _, _, run in sources(ref, runs_root)
                                       if run is not None])
    text = _render(columns, legend) + (f"\n## Checkpoint evaluations\n\n{curves}" if curves else "")
    if out:
        Path(out).write_text(text)
    print(text, end="")
    for w in bad + results.unknowns(columns) + results.comparability(columns):
        print(f"warning: {w}", file=sys.stderr)
    return 0 if "| metric |" in text or curves else 1
