"""A promotion gate's verdict file, stages/evaluate/gate.json, and the lines that show it.

Written in a rank by job/gate.py (the evaluate stage, `evaluate.gate`), read on the login node by `status` and
by the card stage, so it lives here, importing neither world. Format 1:

    {"format": 1, "verdict": "passed" | "regressed" | "incomparable", "warn_only": bool, "stops": bool,
     "summary": one line, "reference": {"spec", "name", "source"}, "settings": {k, max_drop, floors, ...},
     "models": {name: {"verdict", "rows": [{"kind": task|group, "name", "metric", "unit", "n", "reference",
                                            "score", "delta", "se", "low", "high", "floor", "regressed",
                                            "why"}], "notes": [...]}}}

Scores are on a 0-1 scale (EuroEval's percentages divided by 100); delta = model - reference, higher is
better; [low, high] = delta -+ k * SE.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Optional

FILE = "gate.json"
PLOT = "gate.png"
FORMAT = 1


def path(run_dir: Path) -> Path:
    return Path(run_dir) / "stages" / "evaluate" / FILE


def read(run_dir: Path) -> Optional[dict]:
    """A run's gate verdict; None when it has none (no gate, not evaluated yet) or it is unreadable."""
    try:
        data = json.loads(path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _num(v, signed: bool = False) -> str:
    return "–" if v is None else (f"{v:+.3f}" if signed else f"{v:.3f}")


def row_line(model: str, ref: str, r: dict) -> str:
    """'sft vs base, lm-eval/arc_da acc: delta -0.120 [-0.180, -0.060] (floor 0.300)' and why it regressed."""
    text = f"{model} vs {ref}, {r['name']} {r.get('metric') or ''}".rstrip()
    if r.get("delta") is not None:
        text += f": delta {_num(r['delta'], True)} [{_num(r.get('low'), True)}, {_num(r.get('high'), True)}]"
    return text + (f" ({r['why']})" if r.get("why") else "")


def failing_rows(verdict: dict) -> List[str]:
    """One line per regressed task or group of every gated model."""
    ref = (verdict.get("reference") or {}).get("name", "reference")
    return [row_line(name, ref, r) for name, m in (verdict.get("models") or {}).items()
            for r in m.get("rows") or [] if r.get("regressed")]


def status_lines(points: List[Path]) -> List[str]:
    """The lines `status` prints under its table for each run whose gate did not pass (a pass is in the evaluate
    log, results.md and the card; a finished run's status ends with its table)."""
    lines = []
    for p in points:
        v = read(p)
        if v is None or v["verdict"] == "passed":
            continue
        head = f"gate of {p.name}: " if len(points) > 1 else "gate: "
        loud = "WARNING (warn_only, the chain went on): " if v.get("warn_only") else ""
        lines.append(head + loud + v.get("summary", v["verdict"]))
        lines += [f"  {line}" for line in failing_rows(v)[:8]]
    return lines


def markdown(verdict: dict) -> str:
    """The comparison as a Markdown table (gate.md, the card): each gated model's tasks and groups."""
    ref = verdict.get("reference") or {}
    s = verdict.get("settings") or {}
    lines = [f"Reference: **{ref.get('name')}** ({ref.get('source')}). Interval: delta ± {s.get('k')} SE "
             f"(paired bootstrap over the items, {s.get('resamples')} resamples, seed {s.get('seed')}); "
             f"regressed when the interval's top is below -{s.get('max_drop')} or a score is below its floor. "
             f"Scores on a 0-1 scale.", "",
             "| model | task or group | metric | n | unit | reference | score | delta | interval | verdict |",
             "|---|---|---|---:|---|---:|---:|---:|---|---|"]
    for name, m in (verdict.get("models") or {}).items():
        for r in m.get("rows") or []:
            cell = "**regressed**" if r.get("regressed") else ("not compared" if r.get("delta") is None and
                                                                 r.get("score") is None else "ok")
            if r.get("why") and not r.get("regressed"):
                cell += f" ({r['why']})"
            label = r["name"] if r.get("kind") == "task" else f"group {r['name']}"
            interval = "–" if r.get("low") is None else f"[{_num(r['low'], True)}, {_num(r['high'], True)}]"
            lines.append(f"| {name} | {label} | {r.get('metric') or '–'} | {r.get('n') or '–'} | {r.get('unit') or '–'}"
                         f" | {_num(r.get('reference'))} | {_num(r.get('score'))} | {_num(r.get('delta'), True)} | "
                         f"{interval} | {cell.replace('|', '/')} |")
        for note in m.get("notes") or []:
            lines.append(f"| {name} | note | {note.replace('|', '/')} | | | | | | | |")
    return "\n".join(lines) + "\n"


def card_section(run_dir: Path, out_dir: Optional[Path] = None) -> str:
    """The card's gate section: the verdict (a loud warning when it regressed under warn_only), the table and
    the plot (gate.png, copied into out_dir beside the card)."""
    v = read(run_dir)
    if v is None:
        return ""
    plot = path(run_dir).parent / PLOT
    if out_dir is not None and plot.exists():
        shutil.copy(plot, Path(out_dir) / PLOT)
    text = "\n### Promotion gate\n\n"
    if v["verdict"] != "passed":
        text += (f"> **WARNING: {v.get('summary')}** The gate was warn-only, so this card was written anyway.\n\n"
                 if v.get("warn_only") else f"> **{v.get('summary')}**\n\n")
    else:
        text += f"{v.get('summary')}\n\n"
    text += markdown(v)
    if plot.exists():
        text += f"\n![gate: scores and deltas per task and group]({PLOT})\n"
    return text
