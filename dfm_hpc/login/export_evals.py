"""`python -m dfm_hpc export-evals RUN [--out DIR]`: evaluate results in the every-eval-ever format.

Every Eval Ever (github.com/evaleval/every_eval_ever, schema 0.3.0: every_eval_ever/schemas/eval.schema.json)
is the record format DFM's dfm-evals and EuroEval >= 17 write. One JSON record per model and benchmark (and one
for the held-out perplexity), at DIR/<benchmark>/<model>/<uuid>.json as in the every-eval-ever datastore; the
uuid is derived from the run, model and benchmark, so exporting again rewrites the same files. What a score is
bound to (results.json's `bound_to`: the weights' sha256, the run's snapshot and config hash, the image, the
parameter count, the server's versions) goes into model_info.additional_details, the benchmark's comparability
fields into eval_library.additional_details, the dataset, split and samples into source_data. The package
itself needs Python >= 3.12 (this project pins 3.11): tests validate the records against its schema file.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dfm_hpc import results

SCHEMA_VERSION = "0.3.0"
OUT_DIR = "every_eval_ever"  # default: beside results.json
LOWER_IS_BETTER = ("eval_loss", "perplexity")
NAMESPACE = uuid.UUID("6f1c3c1e-7d3b-4d52-9a55-0d2f6c1b9e23")  # dfm_hpc's: uuid5(NAMESPACE, run|model|benchmark)
LIBRARY = {"lm-eval": "lm_eval", "euroeval": "euroeval", "inspect": "inspect_ai"}


def _strings(d: Dict) -> Dict[str, str]:
    """additional_details hold strings only: numbers as text, dicts as JSON, None left out."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list))
            else str(v).lower() if isinstance(v, bool) else str(v) for k, v in d.items() if v is not None}


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "model"


def model_info(label: str, row: dict, engine: Optional[Dict[str, str]]) -> dict:
    b = row.get("bound_to") or {}
    w, run, img = b.get("weights") or {}, b.get("run") or {}, b.get("image") or {}
    details = {"deployment_type": "self_deployed", "model_availability": "unknown",
               "weights_sha256": w.get("sha256") or "unknown", "weights_files": w.get("files"),
               "weights_bytes": w.get("bytes"), "base_weights_sha256": (w.get("base") or {}).get("sha256"),
               "base_model": (w.get("base") or {}).get("path"), "parameters": b.get("parameters"),
               "run_dir": run.get("run_dir"), "run_snapshot": run.get("snapshot"),
               "run_git_commit": run.get("git_commit"), "config_sha256": run.get("config_sha256"),
               "container_image": img.get("path"), "container_image_sha256": img.get("sha256"),
               "container_image_size": img.get("size"), "container_image_mtime": img.get("mtime"),
               "server_runtime": b.get("server"), "path": row.get("path")}
    out = {"name": label, "id": results.model_ref(row), "inference_platform": "local",
           "additional_details": _strings(details)}
    if engine:
        out["inference_engine"] = engine
    return out


def _source_data(task: str, meta: dict) -> dict:
    dataset, n = meta.get("dataset"), meta.get("n_samples")
    extra = _strings({"dataset": dataset, "config": meta.get("dataset_config"),
                      "revision": meta.get("dataset_revision"), "split": meta.get("split"),
                      "samples_total": meta.get("n_samples_total"), "samples": n})
    hub = bool(dataset) and dataset.count("/") == 1 and not dataset.startswith(("/", "."))
    if not hub:  # local files (lm-eval's `json` loader), EuroEval's dataset names, the held-out text
        return {"dataset_name": task, "source_type": "other", "additional_details": extra}
    split = {"validation": "val"}.get(meta.get("split"), meta.get("split"))
    return {"dataset_name": dataset, "source_type": "hf_dataset", "hf_repo": dataset,
            **({"hf_split": split} if split else {}), **({"samples_number": int(n)} if n is not None else {}),
            "additional_details": extra}


def _results(task: str, harness: str, scores: dict, meta: dict) -> List[dict]:
    """One evaluation result per metric. lm-eval's `<m>_stderr` is a standard error; EuroEval's `<m>_se` the
    half-width of a 95 % interval (job/harness.parse_euroeval)."""
    out = []
    for metric, value in scores.items():
        if value is None or metric.endswith(("_stderr", "_se")):
            continue
        unc: dict = {}
        if scores.get(f"{metric}_stderr") is not None:
            unc["standard_error"] = {"value": float(scores[f"{metric}_stderr"])}
        if scores.get(f"{metric}_se") is not None:
            hw = float(scores[f"{metric}_se"])
            unc["confidence_interval"] = {"lower": value - hw, "upper": value + hw, "confidence_level": 0.95}
        if unc and meta.get("n_samples") is not None:
            unc["num_samples"] = int(meta["n_samples"])
        out.append({"evaluation_result_id": f"{task}/{metric}", "evaluation_name": task,
                    "source_data": _source_data(task, meta),
                    "metric_config": {"metric_id": metric, "metric_name": metric,
                                      "lower_is_better": metric in LOWER_IS_BETTER},
                    "score_details": {"score": float(value), **({"uncertainty": unc} if unc else {})}})
    return out


def records(label: str, data: dict, when: str) -> List[dict]:
    """Every record of one results.json (`label`: its run, as compare names it)."""
    now = f"{time.time():.6f}"
    out = []
    for row in data.get("models", []):
        name = f"{label}:{row['name']}"
        own = (row.get("bound_to") or {}).get("run") is not None  # made by a dfm_hpc run, not a hub model
        source = {"source_name": "dfm_hpc evaluate", "source_type": "evaluation_run",
                  "source_organization_name": "Danish Foundation Models",
                  "evaluator_relationship": "first_party" if own else "third_party"}
        held = {"eval_loss": row.get("eval_loss"), "perplexity": row.get("perplexity")}
        benches = [("held_out_text", "dfm_hpc", None, held,
                    {"dataset": data.get("eval_data"), "n_samples": row.get("eval_texts")})]
        for key, res in sorted(results.benchmarks(row).items()):
            harness, _, task = key.partition("/")
            benches.append((task, harness, (res.get("meta") or {}).get("harness_version"), res.get("scores") or {},
                            res.get("meta") or {}))
        for task, harness, version, scores, meta in benches:
            evals = _results(task, harness, scores, meta)
            if not evals:
                continue
            engine = ({"name": str(meta["backend"]), "version": str(meta.get("backend_version") or "unknown")}
                      if meta.get("backend") else None)
            lib = {"name": LIBRARY.get(harness, harness), "version": str(version or "unknown"),
                   "additional_details": _strings({k: meta.get(k) for k in results.COMPARABLE
                                                   if k not in ("harness", "harness_version")})}
            rid = uuid.uuid5(NAMESPACE, f"{label}|{row['name']}|{harness}/{task}")
            out.append({"schema_version": SCHEMA_VERSION, "evaluation_id": f"{task}/{name}/{now}",
                        "evaluation_timestamp": when, "retrieved_timestamp": now, "source_metadata": source,
                        "eval_library": lib, "model_info": model_info(name, row, engine), "evaluation_results": evals,
                        "_path": f"{_slug(f'{harness}_{task}')}/{_slug(name)}/{rid}.json"})
    return out


def export(refs: Sequence[str], out: Optional[str] = None, runs_root: str = "runs") -> int:
    from dfm_hpc.login import compare

    written, missing = 0, []
    for label, path, _, _ in [s for ref in refs for s in compare.sources(ref, runs_root)]:
        if not path.is_file():
            missing.append(f"{label}: no evaluate results ({path} is missing)")
            continue
        data = json.loads(path.read_text())
        when = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))
        dest = Path(out) if out else path.parent / OUT_DIR
        for rec in records(label, data, when):
            f = dest / rec.pop("_path")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
            written += 1
        print(f"{label}: {path} -> {dest}")
    for m in missing:
        print(f"warning: {m}", file=sys.stderr)
    print(f"wrote {written} every-eval-ever record(s) (schema {SCHEMA_VERSION})")
    return 0 if written else 1
