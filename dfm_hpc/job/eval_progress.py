"""What an evaluate stage has finished, kept across its starts: stages/evaluate/progress.json.

The pieces of work are each model's in-process part (perplexity, samples, in-process lm-eval) and, with a
server, each of its served pieces (the throughput probe, lm-eval, EuroEval, inspect). A model is keyed by its
name, its path and a cheap identity of its weights (the names, sizes and mtimes of its files, and its adapter's
base's), so a rerun that points at other weights never reuses an old score. The settings a score depends
on are hashed too: when they change, everything is scored again. The file is rewritten whole after each
piece (tmp + os.replace) and removed when the stage ends: results.json stays the one output.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

FILE = "progress.json"
FORMAT = 1
INPROC = "in-process"  # the piece name of a model's in-process part
# evaluate's keys a score depends on (where the server listens, its timeout, the walltime: not)
SCORED_BY = ("lm_eval_tasks", "lm_eval_include", "lm_eval_limit", "num_fewshot", "server", "server_args",
             "server_chat", "euroeval", "euroeval_tasks", "euroeval_datasets", "euroeval_test_split", "euroeval_args",
             "inspect_tasks", "inspect_limit", "inspect_args", "max_eval_texts", "generation_prompts", "max_new_tokens")


def _files(d: Path) -> List[Tuple[str, int, int]]:
    out = []
    for p in sorted(d.iterdir()):
        if p.is_file():  # a hub snapshot's files are links to blobs: stat follows them
            st = p.stat()
            out.append((p.name, st.st_size, st.st_mtime_ns))
    return out


def local_dir(path: str) -> Optional[Path]:
    """The directory a model path names: itself, or a hub id's cached snapshot (offline, no download)."""
    if Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # not cached, or not a hub id: the path alone identifies it
        return None


def adapter_base(d: Path) -> Optional[str]:
    """An adapter dir's base model (as its adapter_config.json names it); "" when unreadable; None: no adapter.
    The one rule for both identities of weights: this cheap one and job/scored.py's content hash."""
    cfg = d / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        return str(json.loads(cfg.read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError):
        return ""


def weights_id(path: str, depth: int = 0) -> str:
    """A cheap identity of the model a path names: a hash of its files' names, sizes and mtimes (and, for
    an adapter, its base's). Rewriting a weight file changes it; reading the weights is not needed."""
    d = local_dir(path)
    parts: list = [str(path), _files(d) if d else "unresolved"]
    base = adapter_base(d) if d else None
    if base is not None and depth < 4:
        parts.append(weights_id(base, depth + 1) if base else "base unknown")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def model_key(name: str, path: str) -> str:
    """`rerun` links an earlier run's stage dirs into the new run: the path they resolve to is the same."""
    where = str(Path(path).resolve()) if Path(path).exists() else path
    return f"{name}|{where}|{weights_id(where)}"


def settings_id(cfg, source: str, texts: List[str]) -> str:
    """The settings every score depends on: the scored keys of evaluate, the seed and the held-out text."""
    from omegaconf import OmegaConf

    ev = OmegaConf.to_container(cfg.evaluate, resolve=True, enum_to_str=True)
    blob = {"evaluate": {k: ev.get(k) for k in SCORED_BY}, "seed": cfg.seed, "source": source,
            "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def served_pieces(lm_eval: bool, euroeval: bool, inspect: bool = False) -> List[str]:
    """A model's served pieces, in the order they run: the throughput probe, lm-eval, EuroEval, inspect."""
    return ["serving"] + (["lm-eval"] if lm_eval else []) + (["euroeval"] if euroeval else []) + \
        (["inspect"] if inspect else [])


def apply(row: dict, delta: dict) -> None:
    """Add a served piece's results to a model's row, as running it did."""
    if "serving" in delta:
        row["serving"] = delta["serving"]
    row["benchmarks"].update(delta.get("benchmarks", {}))
    row["notes"].extend(delta.get("notes", []))


def delta(before: dict, row: dict) -> dict:
    """What a served piece added to a row (its benchmarks, notes and serving record)."""
    out = {"benchmarks": {k: v for k, v in row["benchmarks"].items() if k not in before["benchmarks"]},
           "notes": row["notes"][len(before["notes"]):]}
    if row.get("serving") != before.get("serving"):
        out["serving"] = row["serving"]
    return out


class Progress:
    """The finished pieces, by model key: {key: {piece: what it produced}}."""

    def __init__(self, path: Path, settings: str, models: Optional[Dict[str, Dict[str, dict]]] = None):
        self.path, self.settings, self.models = path, settings, models or {}
        self.left = 0  # pieces still to do in this start (set by the stage): a stop with none left just ends

    @classmethod
    def load(cls, sdir: Path, settings: str, keys: Iterable[str], log: Callable[[str], None]) -> "Progress":
        """The earlier starts' progress that still holds: same settings, and only models whose key (name,
        path, weights) is one of `keys`. Says what it drops and why."""
        path = sdir / FILE
        prog = cls(path, settings)
        if not path.is_file():
            return prog
        try:
            raw = json.loads(path.read_text())
            models = raw["models"]
            ok = raw.get("format") == FORMAT and isinstance(models, dict)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log(f"{path} cannot be read ({type(e).__name__}): every model is scored again")
            return prog
        if not ok or raw.get("settings") != settings:
            log(f"the evaluate settings changed since the earlier start ({path}): every model is scored again")
            return prog
        keys = set(keys)
        for key in models:
            if key not in keys:
                name, _, _ = key.partition("|")
                log(f"[{name}] an earlier start scored other weights under this name ({key.split('|', 1)[1]}): "
                    "not reused, scored again")
        prog.models = {k: v for k, v in models.items() if k in keys}
        for pieces in prog.models.values():  # the merged model an earlier start served is gone: made again
            merged = (pieces.get(INPROC) or {}).get("merged")
            if merged and not Path(merged).is_dir():
                del pieces[INPROC]
        return prog

    def done(self, key: str, piece: str) -> Optional[dict]:
        return self.models.get(key, {}).get(piece)

    def record(self, key: str, piece: str, value: dict) -> None:
        self.models.setdefault(key, {})[piece] = json.loads(json.dumps(value))  # a copy: rows grow after
        self.left = max(0, self.left - 1)
        self.save()

    def safe_point(self, ctx, what: str) -> None:
        """After each piece: when the job is asked to stop and work is left, stop here; the requeued job skips
        what is done (a served phase's `with serve.Server` stops the server on the way out)."""
        from dfm_hpc.job.rank import Preempted

        if ctx.should_stop() and self.left:
            raise Preempted(f"evaluate stopped after {what}; {self.left} piece(s) left for the next start ({FILE})")

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "settings": self.settings, "models": self.models},
                                  ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)  # a stop mid-write leaves the previous version whole

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
