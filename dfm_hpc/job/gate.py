"""Promotion gates (`evaluate.gate`): each gated model against a reference, per task and task group.

The per-item scores the harnesses give are kept in stages/evaluate/items/<model>.json (split_items, called
when results.json is written), so a later run can use this one as its reference. Per task, on one metric
(evaluate.gate.metrics, else the first one with per-item scores), delta = model - reference:
- lm-eval (log_samples): items matched by doc_id (and the document's hash); the SE of the mean paired
  difference from `resamples` bootstrap resamples of the items (seeded);
- EuroEval: no items in its records; its per-iteration scores are themselves bootstrap resamples of the test
  set, drawn with EuroEval's fixed seed, so iteration i of two models saw the same items: the SE is the
  spread of the paired per-iteration differences;
- neither (an older results.json, EuroEval's Every-Eval-Ever format): the reported standard errors, unpaired.
A group's delta is the mean of its tasks' (each task weighs the same), its SE sqrt(sum SE^2) / tasks (the
tasks' items are independent). Regressed: delta + k * SE < -max_drop, or a score below its floor. The
verdict goes into gate.json (dfm_hpc/gate_verdict.py), gate.md, results.json/results.md and gate.png; a
regression then fails the stage (Regressed) so that no later stage starts, unless warn_only.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc import gate_verdict
from dfm_hpc.files import write_atomic
from dfm_hpc.job.rank import Refused
from dfm_hpc.registry import TRAINED_STAGES

ITEMS = "items"  # stages/evaluate/items/<model>.json
# what must agree for two models' scores on a task to be compared (the items check the rest)
SAME = ("task_version", "dataset_revision", "split", "num_fewshot", "chat_template")


class Regressed(Refused):
    """The gate found a regression (or could compare nothing): the evaluate stage fails, the chain stops."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# ---------------------------------------------------------------- per-item scores on disk

def split_items(sdir: Path, rows: List[dict]) -> List[dict]:
    """Each row's per-item scores into items/<model>.json; the rows without them (for results.json)."""
    out = []
    for r in rows:
        benches = r.get("benchmarks") or {}
        items = {k: b["items"] for k, b in benches.items() if isinstance(b, dict) and b.get("items")}
        if not items:
            out.append(r)
            continue
        write_atomic(sdir / ITEMS / f"{_safe(r['name'])}.json",
                     json.dumps({"format": 1, "model": r["name"], "benchmarks": items}) + "\n")
        out.append({**r, "benchmarks": {k: {f: v for f, v in b.items() if f != "items"} for k, b in benches.items()}})
    return out


def load_items(items_dir: Path, name: str) -> Dict[str, dict]:
    try:
        return json.loads((items_dir / f"{_safe(name)}.json").read_text())["benchmarks"]
    except (OSError, ValueError, KeyError):
        return {}


def results_file(ref: str) -> Path:
    """A reference given as a run dir, an evaluate stage dir or a results.json file -> its results.json."""
    p = Path(ref)
    for cand in (p, p / "results.json", p / "stages" / "evaluate" / "results.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"evaluate.gate.reference: {ref} has no evaluate results (results.json)")


def reference(gate, sdir: Path, rows: List[dict]) -> Tuple[dict, dict, Dict[str, dict]]:
    """(where it came from, its results row, its per-item scores)."""
    names = {r["name"]: r for r in rows}
    spec = str(gate.reference)
    if spec in names:
        src = {"spec": spec, "name": spec, "source": "this evaluate stage"}
        return src, names[spec], load_items(sdir / ITEMS, spec)
    if spec == "base" or spec in TRAINED_STAGES:
        raise FileNotFoundError(f"evaluate.gate.reference={spec}: this evaluate stage did not score {spec!r} "
                                f"(it scored {', '.join(names)})")
    f = results_file(spec)
    ref_rows = json.loads(f.read_text())["models"]
    want = gate.reference_model
    row = next((r for r in ref_rows if r["name"] == want), None) if want else ref_rows[-1]
    if row is None:
        raise FileNotFoundError(f"evaluate.gate.reference_model={want}: not in {f} "
                                f"(it has {', '.join(r['name'] for r in ref_rows)})")
    return {"spec": spec, "name": f"{row['name']} ({Path(spec).name})", "source": str(f)}, row, \
        load_items(f.parent / ITEMS, row["name"])


# ---------------------------------------------------------------- one task

def _matches(pattern: str, key: str) -> bool:
    short = key.partition("/")[2]
    return fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(short, pattern)


def _lookup(mapping, key: str):
    for pattern, value in (mapping or {}).items():
        if _matches(str(pattern), key):
            return value
    return None


def _scale(key: str) -> float:
    return 0.01 if key.startswith("euroeval/") else 1.0  # EuroEval reports percentages


def _metric(key: str, gate, m_items: dict, r_items: dict, m_bench: dict, r_bench: dict) -> Optional[str]:
    want = _lookup(gate.metrics, key)
    if want:
        return str(want)
    for label in (m_items.get("metrics") or {}):
        if label in (r_items.get("metrics") or {}):
            return label
    return next((k for k in m_bench.get("scores") or {} if not k.endswith(("_stderr", "_se"))
                 and k in (r_bench.get("scores") or {})), None)


def bootstrap_se(diffs: List[float], resamples: int, seed: int) -> float:
    """The standard error of the mean paired difference: its spread over bootstrap resamples of the items."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // max(len(d), 1))  # resamples per chunk: bounded memory on large tasks
    for i in range(0, resamples, step):
        j = min(resamples, i + step)
        means[i:j] = d[rng.integers(0, len(d), size=(j - i, len(d)))].mean(axis=1)
    return float(means.std(ddof=1))


def _paired(mi: dict, ri: dict, metric: str) -> Tuple[List[float], List[float], Optional[str]]:
    """The two sides' values on the items (or iterations) both scored; why not, when they cannot be paired."""
    mv, rv = (mi.get("metrics") or {}).get(metric), (ri.get("metrics") or {}).get(metric)
    if mv is None or rv is None or mi.get("unit") != ri.get("unit"):
        return [], [], "no per-item scores on both sides"
    m = dict(zip(mi["ids"], zip(mv, mi.get("hashes") or [None] * len(mv))))
    r = dict(zip(ri["ids"], zip(rv, ri.get("hashes") or [None] * len(rv))))
    common = [i for i in m if i in r and m[i][0] is not None and r[i][0] is not None]
    if any(m[i][1] and r[i][1] and m[i][1] != r[i][1] for i in common):
        return [], [], "the items differ (document hashes)"
    return [float(m[i][0]) for i in common], [float(r[i][0]) for i in common], None


def compare_task(key: str, gate, m_bench: dict, r_bench: dict, m_items: dict, r_items: dict, seed: int) -> dict:
    """One task's row: scores, delta, SE and interval (k SE) on one metric, the verdict."""
    row = {"kind": "task", "name": key, "metric": None, "unit": None, "n": None, "reference": None, "score": None,
           "delta": None, "se": None, "low": None, "high": None, "floor": _lookup(gate.floors, key),
           "regressed": False, "why": None}
    mm, rm = m_bench.get("meta") or {}, r_bench.get("meta") or {}
    differ = [f for f in SAME if f in mm and f in rm and mm[f] != rm[f]]
    if differ:
        return {**row, "why": "not comparable: " + ", ".join(f"{f} {rm[f]} vs {mm[f]}" for f in differ)}
    metric = _metric(key, gate, m_items, r_items, m_bench, r_bench)
    if metric is None:
        return {**row, "why": "no metric both sides report"}
    row["metric"] = metric
    sign = 1.0 if (m_items.get("higher_is_better") or {}).get(metric, True) is not False else -1.0
    m_vals, r_vals, why = _paired(m_items, r_items, metric)
    if m_vals:
        diffs = [sign * (a - b) for a, b in zip(m_vals, r_vals)]
        n, unit = len(diffs), m_items["unit"]
        if unit == "iteration":  # each already a bootstrap resample of the whole set (EuroEval)
            mean = sum(diffs) / n
            se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1)) if n > 1 else None
        else:
            se = bootstrap_se(diffs, gate.resamples, seed) if n > 1 else None
        row.update(unit=unit, n=n, reference=sum(r_vals) / n, score=sum(m_vals) / n, delta=sum(diffs) / n, se=se)
    else:
        ms, rs = (m_bench.get("scores") or {}), (r_bench.get("scores") or {})
        if ms.get(metric) is None or rs.get(metric) is None:
            return {**row, "why": why or "no score"}
        c = _scale(key)
        err = [s.get(metric + "_stderr") if s.get(metric + "_stderr") is not None else
               (None if s.get(metric + "_se") is None else s[metric + "_se"] / 1.96) for s in (ms, rs)]
        se = math.sqrt(sum(e * e for e in err)) * c if all(e is not None for e in err) else None
        row.update(unit="reported (unpaired)", n=mm.get("n_samples"), reference=rs[metric] * c, score=ms[metric] * c,
                   delta=sign * (ms[metric] - rs[metric]) * c, se=se)
    return _judge(row, gate)


def _judge(row: dict, gate) -> dict:
    if row["delta"] is not None:
        half = gate.k * row["se"] if row["se"] is not None else 0.0
        row["low"], row["high"] = row["delta"] - half, row["delta"] + half
        if row["high"] < -gate.max_drop:
            row["regressed"] = True
            row["why"] = f"below -{gate.max_drop:g}" + ("" if row["se"] is not None else " (no SE: delta alone)")
    if row["floor"] is not None and row["score"] is not None and row["score"] < float(row["floor"]):
        row["regressed"] = True
        row["why"] = ((row["why"] + "; ") if row["why"] else "") + f"score below the floor {float(row['floor']):g}"
    return row


def compare_group(name: str, rows: List[dict], gate) -> dict:
    """A group of compared tasks: the mean of their deltas (and scores), SE sqrt(sum SE^2) / tasks."""
    have = [r for r in rows if r["delta"] is not None]
    row = {"kind": "group", "name": name, "metric": None, "unit": f"{len(have)} task(s)", "n": None,
           "reference": None, "score": None, "delta": None, "se": None, "low": None, "high": None,
           "floor": (gate.floors or {}).get(name), "regressed": False, "why": None}
    if not have:
        return {**row, "why": "no task of it compared"}
    t = len(have)
    ses = [r["se"] for r in have]
    row.update(n=sum(r["n"] or 0 for r in have) or None, reference=sum(r["reference"] for r in have) / t,
               score=sum(r["score"] for r in have) / t, delta=sum(r["delta"] for r in have) / t,
               se=math.sqrt(sum(s * s for s in ses)) / t if all(s is not None for s in ses) else None)
    return _judge(row, gate)


# ---------------------------------------------------------------- a model, the verdict

def groups_of(gate, keys: List[str], items: Dict[str, dict]) -> Dict[str, List[str]]:
    """Group name -> its tasks among `keys`: evaluate.gate.groups (patterns), then lm-eval's own groups."""
    out: Dict[str, List[str]] = {}
    for name, members in (gate.groups or {}).items():
        out[str(name)] = [k for k in keys if any(_matches(str(p), k) for p in members)]
    for k in keys:
        for g in (items.get(k) or {}).get("groups") or []:
            if g not in out:
                out.setdefault(f"lm-eval/{g}", [])
                if k not in out[f"lm-eval/{g}"]:
                    out[f"lm-eval/{g}"].append(k)
    return {g: ks for g, ks in out.items() if ks}


def compare_model(gate, model: dict, ref: dict, m_items: dict, r_items: dict) -> dict:
    m_b, r_b = model.get("benchmarks") or {}, ref.get("benchmarks") or {}
    keys = sorted(k for k in m_b if k in r_b)
    notes = [f"{k}: not scored for the reference" for k in sorted(set(m_b) - set(r_b))]
    rows = [compare_task(k, gate, m_b[k], r_b[k], m_items.get(k) or {}, r_items.get(k) or {}, gate.seed + i)
            for i, k in enumerate(keys)]
    by_key = {r["name"]: r for r in rows}
    rows += [compare_group(g, [by_key[k] for k in ks], gate) for g, ks in groups_of(gate, keys, m_items).items()]
    compared = [r for r in rows if r["delta"] is not None]
    verdict = "regressed" if any(r["regressed"] for r in rows) else "passed" if compared else "incomparable"
    if not compared:
        notes.append("no task could be compared with the reference")
    return {"verdict": verdict, "rows": rows, "notes": notes}


def gated(gate, rows: List[dict], ref_name: str) -> List[dict]:
    want = [str(m) for m in gate.models]
    return [r for r in rows if (r["name"] in want if want else r["name"] != ref_name)]


def verdict(gate, sdir: Path, rows: List[dict], after: List[str] = ()) -> dict:
    """gate.json's content for this stage's results rows (results.json's `models`); `after`: the run's stages
    after evaluate (what a regression keeps from starting)."""
    src, ref_row, ref_items = reference(gate, sdir, rows)
    models = {}
    for r in gated(gate, rows, src["name"]):
        models[r["name"]] = compare_model(gate, r, ref_row, load_items(sdir / ITEMS, r["name"]), ref_items)
    states = [m["verdict"] for m in models.values()]
    overall = "regressed" if "regressed" in states else "incomparable" if "incomparable" in states or not states \
        else "passed"
    bad = [n for n, m in models.items() if m["verdict"] != "passed"]
    if overall == "passed":
        summary = f"passed: {', '.join(models)} against {src['name']} (no drop beyond the bound)"
    else:
        summary = (f"{overall}: {', '.join(bad) or 'no model'} against {src['name']}"
                   + ("" if gate.warn_only else f"; not started: {', '.join(after)}" if after else ""))
    settings = {k: getattr(gate, k) for k in ("k", "max_drop", "resamples", "seed", "warn_only")}
    settings.update(floors=dict(gate.floors or {}), groups={k: list(v) for k, v in (gate.groups or {}).items()},
                    metrics=dict(gate.metrics or {}))
    return {"format": gate_verdict.FORMAT, "verdict": overall, "warn_only": bool(gate.warn_only),
            "stops": overall != "passed" and not gate.warn_only, "summary": summary, "reference": src,
            "settings": settings, "models": models}


def run(cfg, ctx) -> str:
    """After the evaluate stage wrote results.json: the verdict, written everywhere, then the stop. A pass
    returns its summary for the stage's last line (the demo's console stays short); anything else is logged."""
    gate = cfg.evaluate.gate
    if not gate.enabled:
        return ""
    sdir = ctx.stage_dir
    results = json.loads((sdir / "results.json").read_text())
    stages = list(cfg.stages)
    v = verdict(gate, sdir, results["models"], stages[stages.index("evaluate") + 1:] if "evaluate" in stages else [])
    write_atomic(sdir / gate_verdict.FILE, json.dumps(v, indent=2) + "\n")
    for r in results["models"]:
        if r["name"] in v["models"]:
            r["gate"] = {"verdict": v["models"][r["name"]]["verdict"], "reference": v["reference"]["name"]}
    results["gate"] = {k: v[k] for k in ("verdict", "warn_only", "summary")}
    write_atomic(sdir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    table = gate_verdict.markdown(v)
    write_atomic(sdir / "gate.md", f"# Promotion gate\n\n{v['summary']}\n\n{table}")
    with open(sdir / "results.md", "a", encoding="utf-8") as f:
        f.write(f"\n## Promotion gate\n\n{v['summary']}\n\n{table}")
    try:
        from dfm_hpc.job import gate_plot

        gate_plot.plot(v, sdir / gate_verdict.PLOT)
    except ImportError as e:  # matplotlib missing: the table still says it all
        ctx.log(f"gate: no plot ({e})")
    if v["verdict"] == "passed":
        return f"; gate {v['summary']} (gate.json)"
    ctx.log(f"gate: {v['summary']} ({sdir / gate_verdict.FILE})")
    for line in gate_verdict.failing_rows(v):
        ctx.log(f"gate: {'WARNING: ' if gate.warn_only else ''}{line}")
    if gate.warn_only:
        ctx.log(f"gate: WARNING: {v['verdict'].upper()}; evaluate.gate.warn_only=true, so the chain goes on")
        return ""
    raise Regressed(f"gate: {v['summary']} (gate.json; evaluate.gate.warn_only=true lets them run)")
