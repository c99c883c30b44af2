"""results.json fixtures as the evaluate stage writes them since issue #23: rows with `bound_to`, written by the
login-side tests of compare and export-evals (no model, no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

META = {"harness": "lm-eval", "harness_version": "0.4.13", "task_version": "1.0", "split": "test", "n_samples": 20,
        "n_samples_total": 20, "num_fewshot": 0, "seed": 0, "dtype": "float32", "backend": "hf (in-process)",
        "backend_version": "4.57.1", "chat_template": False, "dataset": "json", "dataset_revision": "sha256:abc"}


def row(name: str, sha: Optional[str], ref: str, run: Optional[Path] = None, acc: float = 0.25) -> dict:
    """A model row; sha None: a row from before hashes (no bound_to at all)."""
    out = {"name": name, "path": ref, "eval_loss": 2.0, "perplexity": 7.389, "eval_texts": 40, "eval_tokens": 1000,
           "benchmarks": {"lm-eval/dfm_danish_mc": {"scores": {"acc": acc, "acc_stderr": 0.09}, "meta": dict(META)}},
           "notes": [], "serving": None, "seconds": 1.0}
    if sha is not None:
        out["bound_to"] = {
            "model": ref, "weights": {"sha256": sha, "files": 1, "bytes": 1000, "base": None}, "parameters": 12345,
            "run": {"run_dir": str(run), "snapshot": run.name, "created": "2026-12-06T10:00:00+0000",
                    "git_commit": "c0ffee", "git_dirty": False, "config_sha256": "f" * 64} if run else None,
            "image": None, "harnesses": {"lm-eval": "0.4.13"}, "server": None}
    return out


def write(run: Path, rows: list, eval_data: str = "tiny:eval") -> Path:
    (run / "stages" / "evaluate").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("name: x\n")
    f = run / "stages" / "evaluate" / "results.json"
    f.write_text(json.dumps({"format": 2, "eval_data": eval_data, "models": rows}))
    return f
