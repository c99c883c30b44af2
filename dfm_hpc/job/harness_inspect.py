"""inspect_ai as a client of the served model, like EuroEval: `python -m inspect_ai eval` runs from the harness
environment (`evaluate.inspect_python`, else $DFM_HPC_INSPECT_PYTHON, else EuroEval's: one environment holds
both) against the job's OpenAI-compatible server, through inspect's generic `openai-api` provider (service
`dfm`: it reads DFM_BASE_URL and DFM_API_KEY). Its JSON logs are parsed here with the standard library (this
job's own environment has no inspect_ai): one result per task, in the format of the other harnesses
(`{"scores", "meta"}`, job/harness.py) plus `items`, each sample's score, for the gate's bootstrap over items
(job/gate.py moves them to stages/evaluate/items/<model>.json).

`dfm:<name>` tasks are this project's (dfm_hpc/harness_tasks/, loaded by file path); any other name goes to
inspect as written (a registered task such as `inspect_evals/...`, or `file.py@task`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

TASKS_DIR = Path(__file__).resolve().parent.parent / "harness_tasks"
# name -> (task file, task function, its data file)
DFM_TASKS = {"dfm:danish_qa": (TASKS_DIR / "inspect_danish.py", "dfm_danish_qa", TASKS_DIR / "danish_qa.json")}
SERVICE = "dfm"  # openai-api/<service>/<model>: the provider reads <SERVICE>_BASE_URL and <SERVICE>_API_KEY
# inspect's score values as numbers (its own value_to_float: correct, incorrect, partial, no answer)
LETTERS = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}


def task_spec(name: str) -> str:
    if name in DFM_TASKS:
        file, fn, _ = DFM_TASKS[name]
        return f"{file}@{fn}"
    return name


def inspect_command(python: str, model_id: str, tasks: List[str], *, log_dir: str, seed: int,
                    limit: Optional[int] = None, extra: List[str] = ()) -> List[str]:
    """inspect's CLI from its own environment, against the served model `model_id`."""
    argv = [python, "-m", "inspect_ai", "eval", *[task_spec(t) for t in tasks],
            "--model", f"openai-api/{SERVICE}/{model_id}", "--log-dir", log_dir, "--log-format", "json",
            "--display", "plain", "--seed", str(seed), "--max-connections", "4", "--no-fail-on-error"]
    if limit:
        argv += ["--limit", str(limit)]
    return argv + list(extra)


def client_env(base_url: str) -> Dict[str, str]:
    """The server's address for the provider; offline like the job (task data from files or the prefetched cache)."""
    return {f"{SERVICE.upper()}_BASE_URL": base_url, f"{SERVICE.upper()}_API_KEY": "none",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _value(v) -> Optional[float]:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, str):
        if v in LETTERS:
            return LETTERS[v]
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _revision(location: Optional[str], task_file: Optional[str]) -> Optional[str]:
    """A local data file's sha256 (our own tasks; inspect logs its path relative to the task file's dir); None for
    data inspect fetched (it reports no commit)."""
    for p in [Path(location)] + ([Path(task_file).parent / location] if task_file else []) if location else []:
        if p.is_file():
            return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return None


def parse_log(log: dict, meta: Optional[dict] = None) -> Dict[str, dict]:
    """One inspect JSON log -> {"inspect/<task>": {"scores", "meta", "items"}}. Scores: each metric of the task's
    scorer (`accuracy`, with inspect's `stderr` as `accuracy_stderr`; `metric (scorer)` when it has several);
    items: each sample's value of the first scorer (C/I/P as 1/0/0.5), under its main metric's name."""
    ev, res = log.get("eval") or {}, log.get("results") or {}
    task = str(ev.get("task", "?")).split("/")[-1]
    scores: Dict[str, Optional[float]] = {}
    groups = res.get("scores") or []
    for g in groups:
        metrics = g.get("metrics") or {}
        main = next((m for m in metrics if m != "stderr"), "score")
        for m, val in metrics.items():
            label = f"{main}_stderr" if m == "stderr" else m
            if len(groups) > 1:
                label = f"{label} ({g.get('name')})"
            scores[label] = _value((val or {}).get("value"))
    first = (groups[0].get("scorer") or groups[0].get("name")) if groups else None
    main = next((m for m in (groups[0].get("metrics") or {}) if m != "stderr"), "score") if groups else "score"
    main = f"{main} ({groups[0].get('name')})" if len(groups) > 1 else main  # as its score is labelled
    ids, hashes, values = [], [], []
    for s in log.get("samples") or []:
        sc = s.get("scores") or {}
        got = sc.get(first) if first in sc else next(iter(sc.values()), None)
        epoch = s.get("epoch", 1)
        ids.append(str(s.get("id")) if epoch == 1 else f"{s.get('id')}#{epoch}")
        hashes.append(hashlib.sha256(json.dumps(s.get("input"), sort_keys=True).encode()).hexdigest()[:16])
        values.append(_value((got or {}).get("value")))
    # per item, in the gate's format (job/gate.py): paired with another model's by id, checked by the input's hash
    items = {"unit": "item", "ids": ids, "hashes": hashes, "metrics": {main: values}, "higher_is_better": {main: True}}
    data = ev.get("dataset") or {}
    packages = ev.get("packages") or {}
    location = data.get("location")
    return {f"inspect/{task}": {"scores": scores, "items": items, "meta": {
        **(meta or {}), "harness": "inspect", "harness_version": packages.get("inspect_ai"),
        "task_version": None if ev.get("task_version") is None else str(ev["task_version"]),
        "split": "all", "n_samples": res.get("completed_samples"), "n_samples_total": data.get("samples"),
        "num_fewshot": 0, "dataset": data.get("name") or location,
        "dataset_revision": _revision(location, ev.get("task_file")),
        "status": log.get("status")}}}


def run_inspect(argv: List[str], workdir: Path, meta: dict, env: Optional[dict] = None, timeout: float = 3600,
                log=print) -> Tuple[Optional[Dict[str, dict]], Optional[str]]:
    """(results, None) or (None, why not): inspect's CLI in `workdir`, each of its logs parsed. A task whose
    log says it did not succeed is a note, with inspect's error."""
    workdir.mkdir(parents=True, exist_ok=True)
    logs = Path(argv[argv.index("--log-dir") + 1])
    shutil.rmtree(logs, ignore_errors=True)  # an earlier start's logs are not this run's
    log("inspect: " + " ".join(argv))
    with open(workdir / "inspect.log", "ab") as f:
        try:
            # inspect's traces and sample buffer go to its XDG data dir: here, never $HOME (20 GB on LUMI)
            code = subprocess.run(argv, cwd=workdir, env={**os.environ, "XDG_DATA_HOME": str(workdir / "data"),
                                                          **(env or {})},
                                  stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"inspect did not run: {type(e).__name__}: {e}"
    out, errors = {}, []
    for p in sorted(logs.glob("*.json")) if logs.is_dir() else []:
        raw = json.loads(p.read_text())
        if raw.get("status") != "success":
            err = (raw.get("error") or {}).get("message") or raw.get("status")
            errors.append(f"{(raw.get('eval') or {}).get('task')}: {err}")
            continue
        out.update(parse_log(raw, meta))
    if out:
        return out, ("inspect: " + "; ".join(errors)) if errors else None
    tail = "\n".join((workdir / "inspect.log").read_text(errors="replace").splitlines()[-8:])
    return None, f"inspect (exit {code}) scored nothing{': ' + '; '.join(errors) if errors else ''}; " \
                 f"last lines of {workdir / 'inspect.log'}:\n{tail}"
