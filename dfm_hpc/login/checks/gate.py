"""evaluate.gate at plan time: the reference and the gated models are ones the evaluate stage will score (or a
stored result that exists and names the model), and there is a benchmark to gate on. job/gate.py applies it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from dfm_hpc.login.checks.paths import should_check_paths
from dfm_hpc.registry import TRAINED_STAGES


def _scored(cfg) -> Optional[List[str]]:
    """The names the evaluate stage gives its base and stage models (None: evaluate.models also names dirs)."""
    if cfg.evaluate.models:
        return [str(m) for m in cfg.evaluate.models]
    before = list(cfg.stages)[: list(cfg.stages).index("evaluate")]
    return ["base"] + [s for s in before if s in TRAINED_STAGES]


def _results(ref: str) -> Optional[Path]:
    p = Path(ref)
    return next((c for c in (p, p / "results.json", p / "stages" / "evaluate" / "results.json") if c.is_file()), None)


def _names(name: str, scored: List[str]) -> bool:
    """Whether the stage will score a model called `name` (a model or run dir entry is named after its dir)."""
    return name in scored or any(name == Path(m).name or name.startswith(Path(m).name + "/") for m in scored)


def check_gate(cfg, jobs) -> List[str]:
    g = cfg.evaluate.gate
    if not g.enabled:
        return []
    if "evaluate" not in cfg.stages:  # an experiment's gate on a run of some of its stages: nothing to gate
        return []
    out, scored = [], _scored(cfg)
    order = list(cfg.stages)
    for m in [str(x) for x in g.models]:
        if m in TRAINED_STAGES and m not in order[: order.index("evaluate")]:
            out.append(f"evaluate.gate.models: {m!r} is not a stage before evaluate in this run "
                       f"(stages={order}); gate a model the evaluate stage scores")
        elif not _names(m, scored):
            out.append(f"evaluate.gate.models: {m!r} is not among the models evaluate scores ({', '.join(scored)})")
    ref = str(g.reference)
    if ref in [str(x) for x in g.models]:
        out.append(f"evaluate.gate: the reference {ref!r} is also a gated model")
    if ref == "base" or ref in TRAINED_STAGES or _names(ref, scored):
        if not _names(ref, scored):
            out.append(f"evaluate.gate.reference={ref}: evaluate does not score it (it scores {', '.join(scored)}); "
                       "add it to evaluate.models, or give a run dir or results.json")
    elif should_check_paths(cfg):
        found = _results(ref)
        if found is None:
            out.append(f"evaluate.gate.reference={ref}: neither a model evaluate scores ({', '.join(scored)}) nor "
                       "a run dir, evaluate stage dir or results.json with evaluation results")
        else:
            try:
                rows = [r["name"] for r in json.loads(found.read_text())["models"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                rows = None
                out.append(f"evaluate.gate.reference={ref}: {found} is unreadable ({type(e).__name__}: {e})")
            if rows is not None and not rows:
                out.append(f"evaluate.gate.reference={ref}: {found} holds no model's results")
            elif rows and g.reference_model and g.reference_model not in rows:
                out.append(f"evaluate.gate.reference_model={g.reference_model}: not in {found} "
                           f"(it has {', '.join(rows)})")
    ev = cfg.evaluate
    served = ev.server != "none"
    if not ev.lm_eval_tasks and not (served and ev.euroeval) and not (served and getattr(ev, "inspect_tasks", None)):
        out.append("evaluate.gate: no benchmark to gate on: set evaluate.lm_eval_tasks (or EuroEval with "
                   "evaluate.server)")
    return out
