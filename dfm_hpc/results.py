"""The evaluate stage's results format: `stages/evaluate/results.json` and its Markdown tables.

Written in a rank by the evaluate stage, read on the login node by `compare` and by the card stage,
so it lives here, importing neither world. Format 2 (this code) gives each model `benchmarks`
({"<harness>/<task>": {"scores": {metric: value}, "meta": {comparability fields}}}), `notes` and
`serving`; format 1 (older runs: `euroeval` scores and one `euroeval_note`) is still read. Rows written
since issue #23 also carry `bound_to` (job/scored.py): what was scored, its weights' content hash first.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

RESULTS = Path("stages") / "evaluate" / "results.json"
FORMAT = 2

# the fixed metrics of every model, in this order; the benchmarks follow, then serving and timing
BASE_METRICS = ("eval_loss", "perplexity", "eval_texts", "eval_tokens")
# what must agree for two benchmark numbers to be comparable (EuroEval issue #1703: up to +-12 points
# between A100 TP=1 and MI250X TP=4); num_fewshot and chat_template change the prompt itself
COMPARABLE = ("harness", "harness_version", "task_version", "dataset_revision", "split", "n_samples", "num_fewshot",
              "seed", "dtype", "backend", "backend_version", "chat_template")
SERVING = ("startup_s", "tokens_per_s")


def benchmarks(model: dict) -> Dict[str, dict]:
    """The model's benchmark results in format 2, also for a format-1 entry (its `euroeval` scores)."""
    if "benchmarks" in model:
        return model.get("benchmarks") or {}
    return {f"euroeval/{task}": {"scores": scores, "meta": {"harness": "euroeval"}}
            for task, scores in (model.get("euroeval") or {}).items()}


def label(key: str) -> str:
    """"lm-eval/arc_da" -> "lm-eval arc_da"; "euroeval/<task>/<dataset>" -> "euroeval <task>/<dataset>"."""
    harness, _, task = key.partition("/")
    return f"{harness} {task}"


def flatten(model: dict) -> Dict[str, object]:
    """One model entry of results.json -> {metric row label: value}, in table order."""
    row: Dict[str, object] = {k: model.get(k) for k in BASE_METRICS}
    for key, res in sorted(benchmarks(model).items()):
        for metric, value in res["scores"].items():
            row[f"{label(key)} {metric}"] = value
    serving = model.get("serving") or {}
    for k in SERVING:
        if k in serving:
            row[f"server {k}"] = serving[k]
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
    """`label: note` for every note of every model (format 1: its `euroeval_note`)."""
    out = []
    for label_, m in columns:
        for n in m.get("notes") or ([m["euroeval_note"]] if m.get("euroeval_note") else []):
            out.append(f"{label_}: {n}")
    return out


def comparability(columns: Sequence[Tuple[str, dict]]) -> List[str]:
    """One warning per benchmark and field where two columns' results differ: their numbers are not
    comparable as they stand. A field one side does not record (format 1) counts as unknown."""
    warnings = []
    keys = sorted({k for _, m in columns for k in benchmarks(m)})
    for key in keys:
        have = [(lab, benchmarks(m)[key].get("meta") or {}) for lab, m in columns if key in benchmarks(m)]
        for f in COMPARABLE:
            seen: Dict[str, List[str]] = {}
            for lab, meta in have:
                seen.setdefault(fmt(meta.get(f)) if f in meta else "unknown", []).append(lab)
            if len(seen) > 1:
                warnings.append(f"{label(key)}: {f} differs: " +
                                "; ".join(f"{v} ({', '.join(labs)})" for v, labs in seen.items()))
    return warnings


UNKNOWN = "hash: unknown"


def weights_hash(model: dict) -> Optional[str]:
    """The sha256 of what a row scored (job/scored.content_hash); None: not recorded (older results) or not
    computable (a hub model not cached)."""
    return ((model.get("bound_to") or {}).get("weights") or {}).get("sha256")


def model_ref(model: dict) -> str:
    """The name a row's weights go by across runs: bound_to.model (a hub id, or an absolute path), else the
    row's path (older results)."""
    return (model.get("bound_to") or {}).get("model") or str(model.get("path") or model.get("name"))


def weights_cell(model: dict) -> str:
    h = weights_hash(model)
    return h[:12] if h else UNKNOWN


def mismatches(columns: Sequence[Tuple[str, dict]]) -> List[Tuple[str, Dict[str, List[str]]]]:
    """(model name, {hash: [labels]}) for each name that carries two or more different weight hashes."""
    out = []
    for ref, have in _by_ref(columns).items():
        known = {h: labs for h, labs in have.items() if h != UNKNOWN}
        if len(known) > 1:
            out.append((ref, known))
    return out


def unknowns(columns: Sequence[Tuple[str, dict]]) -> List[str]:
    """One line per name shared by several rows where some have no hash: never taken to be the same weights."""
    out = []
    for ref, have in _by_ref(columns).items():
        if UNKNOWN in have and sum(len(v) for v in have.values()) > 1:
            out.append(f"{ref}: weights hash unknown for {', '.join(have[UNKNOWN])} (results from before hashes, "
                       "or a model not on disk): whether they are the same weights as "
                       f"{', '.join(lab for h, labs in have.items() if h != UNKNOWN for lab in labs) or 'each other'}"
                       " cannot be told")
    return out


def _by_ref(columns: Sequence[Tuple[str, dict]]) -> Dict[str, Dict[str, List[str]]]:
    groups: Dict[str, Dict[str, List[str]]] = {}
    for lab, m in columns:
        groups.setdefault(model_ref(m), {}).setdefault(weights_hash(m) or UNKNOWN, []).append(lab)
    return groups


def meta_table(rows: Sequence[dict]) -> str:
    """Each benchmark's comparability fields (as the first model that has it recorded them)."""
    first: Dict[str, dict] = {}
    for m in rows:
        for key, res in benchmarks(m).items():
            first.setdefault(key, res.get("meta") or {})
    if not first:
        return ""
    lines = ["| benchmark | " + " | ".join(COMPARABLE) + " |", "|---|" + "---|" * len(COMPARABLE)]
    for key, meta in sorted(first.items()):
        lines.append(f"| {label(key)} | " + " | ".join(fmt(meta.get(f)) for f in COMPARABLE) + " |")
    return "\n".join(lines) + "\n"


def markdown(source: str, rows: Sequence[dict]) -> str:
    """results.md: the metric x model table, the benchmarks' comparability fields, warnings, notes."""
    cols = [(r["name"], r) for r in rows]
    md = ["# Evaluation\n", f"Held-out text: `{source}`\n",
          markdown_table([(n, {"weights sha256": weights_cell(r), **flatten(r)}) for n, r in cols])]
    table = meta_table(rows)
    if table:
        md.append("\nBenchmarks (what a comparison must hold equal):\n\n" + table)
    warn = comparability(cols)
    if warn:
        md.append("\nNot comparable as they stand:\n\n" + "\n".join(f"- {w}" for w in warn) + "\n")
    extra = notes(cols)
    if extra:
        md.append("\nNotes:\n\n" + "\n".join(f"- {n}" for n in extra) + "\n")
    return "\n".join(md)
