"""What a score was scored on: each evaluated model's `bound_to` record in results.json.

- `weights`: a content hash (sha256) of the model's weight files, and for an adapter also its base's;
- `model`: the model as evaluate.models named it, made absolute (a hub id, or a resolved path): the name
  `compare` groups by, refusing rows where one name carries two hashes;
- `run`: the snapshot of the run that made the weights (none for a hub model): its dir, when and from which
  commit it was launched, and the sha256 of its config.yaml;
- `image`: the container image the scores were computed in;
- `parameters`: the loaded model's parameter count (an adapter: the merged model's);
- `harnesses`: each harness's version, as its results report it; `server`: the serving runtime's versions,
  read by the server's own interpreter (serve.Server.versions).
Per benchmark, the dataset, its revision, split and number of samples sit in the benchmark's `meta`
(job/harness.py). Two identities of weights, kept apart on purpose:
- eval_progress.weights_id: names, sizes, mtimes: costs nothing, says when to score again on a restart;
- content_hash here: every byte read once, says what was scored to anyone, on any machine, later.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc.job import eval_progress
from dfm_hpc.rundir import CONFIG, PROVENANCE, STAGES_DIR

# the files that hold weights (hub snapshots and our own saves); training_args.bin is settings, not weights
WEIGHT_FILES = ("model*.safetensors", "adapter*.safetensors", "*.bin")
NOT_WEIGHTS = ("training_args.bin",)
CHUNK = 8 * 1024 * 1024
IMAGE_ENV = ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")  # set inside the container to its image


def weight_files(d: Path) -> List[Path]:
    """The weight files of a model dir, sorted by relative name (links followed: hub snapshots)."""
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name not in NOT_WEIGHTS
                  and any(fnmatch.fnmatch(p.name, pat) for pat in WEIGHT_FILES))


def content_hash(path: str, depth: int = 0) -> Dict:
    """{"sha256", "files", "bytes", "base"}: sha256 over the sorted (relative name, bytes) of the weight files,
    streamed; an adapter's hash also covers its base's (so one hash names the model that was scored), whose
    own record is `base`. A path that resolves to nothing here (a hub id not cached): sha256 None. Kept for
    this process under the cheap identity: base, SFT and DPO on one 7B base read the base once, not three times."""
    key = eval_progress.weights_id(path)
    if key not in _HASHED:
        _HASHED[key] = _content_hash(path, depth)
    return json.loads(json.dumps(_HASHED[key]))  # a copy: callers may add to it


_HASHED: Dict[str, Dict] = {}


def _content_hash(path: str, depth: int) -> Dict:
    d = eval_progress.local_dir(path)
    if d is None:
        return {"sha256": None, "why": f"{path} is neither a dir nor a cached hub model"}
    files = weight_files(d)
    if not files:
        return {"sha256": None, "why": f"no weight files ({', '.join(WEIGHT_FILES)}) in {d}"}
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(d).as_posix()}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    out: Dict = {"sha256": None, "files": len(files), "bytes": sum(f.stat().st_size for f in files), "base": None}
    base = eval_progress.adapter_base(d)
    if base is not None and depth < 4:
        out["base"] = {"path": base, **(content_hash(base, depth + 1) if base else
                                        {"sha256": None, "why": "adapter_config.json names no base"})}
        h.update(f"\0base\0{out['base']['sha256']}".encode())
        if out["base"]["sha256"] is None:  # an adapter on unknown weights: its hash is unknown too
            return {**out, "why": f"its base {base}: {out['base'].get('why')}"}
    out["sha256"] = h.hexdigest()
    return out


def run_of(model_path: str) -> Optional[Path]:
    """The run dir that made a model: <run>/stages/<stage>/model (or a file under it); None for others."""
    p = Path(model_path).resolve() if Path(model_path).exists() else None
    for parent in (p.parents if p else []):
        if parent.name == STAGES_DIR and (parent.parent / CONFIG).is_file():
            return parent.parent
    return None


def run_snapshot(run: Optional[Path]) -> Optional[Dict]:
    """A run's snapshot identity: its dir, its provenance's creation time and commit, its config's sha256."""
    if run is None:
        return None
    prov_file = run / PROVENANCE
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    return {"run_dir": str(run), "snapshot": run.name, "created": prov.get("created"),
            "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"),
            "config_sha256": hashlib.sha256((run / CONFIG).read_bytes()).hexdigest()}


def image_fingerprint(configured: Optional[str]) -> Optional[Dict]:
    """The image this process runs in ($APPTAINER_CONTAINER), else the configured one: its path and size+mtime,
    or the sha256 its `<image>.sha256` sidecar holds (written when the image was built: hashing 20 GB here
    would take minutes on Lustre). None: no container."""
    path = next((os.environ[k] for k in IMAGE_ENV if os.environ.get(k)), None) or configured
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return {"path": path, "exists": False}
    st = p.stat()
    out = {"path": path, "size": st.st_size, "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                   time.localtime(st.st_mtime)),
           "source": "size+mtime"}
    side = p.with_name(p.name + ".sha256")
    words = side.read_text().split() if side.is_file() else []
    if words:  # `sha256sum image.sif > image.sif.sha256`: its first word
        out.update(sha256=words[0], source=f"sidecar {side.name}")
    return out


def model_ref(ref: str) -> str:
    """The name compare groups by: a hub id (or tiny:NAME) stays itself; a path becomes absolute, links
    resolved (a rerun's linked stage dirs name the same weights)."""
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def bound_to(cfg, ref: str, path: str, parameters: Optional[int]) -> Dict:
    """A model's record, made by the in-process part (weights, run, image, parameters); the served part adds
    `server`, and `finish` the harness versions. `ref`: what evaluate.models named (base: model.name_or_path)."""
    return {"model": model_ref(ref), "weights": content_hash(path), "parameters": parameters,
            "run": run_snapshot(run_of(path)), "image": image_fingerprint(cfg.cluster.container.image),
            "harnesses": {}, "server": None}


def finish(row: dict) -> dict:
    """The harness versions as the row's benchmarks report them, and the server's runtime as its serving record
    holds it (both kept there across restarts: eval_progress keeps a served piece's benchmarks and serving)."""
    b = row.get("bound_to")
    if b is not None:
        b["harnesses"] = {m["harness"]: m.get("harness_version") for m in
                          ((r.get("meta") or {}) for r in row.get("benchmarks", {}).values()) if m.get("harness")}
        b["server"] = (row.get("serving") or {}).get("runtime")
    return row


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once
