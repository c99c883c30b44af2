"""The environment a job will see, as the login node can know it: `cluster.env` values, and the Hugging Face
cache they name (HF_HOME, its hub and datasets caches, a model's snapshot in it).

Shared and standard library only: prefetch and validation check the cache with it, the plan reads a model's
config.json from it (model_shape.py), local runs export the values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

EXPAND = "expand:"  # cluster.env values are literal unless written expand:TEXT (docs/security.md)
REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")  # $NAME / ${NAME}, nothing else


def job_value(value, environ=None) -> str:
    """What the job sees for an env value (local runs, the login node's view of HF_HOME)."""
    text = str(value)
    if not text.startswith(EXPAND):
        return text
    env = os.environ if environ is None else environ
    return REF.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text[len(EXPAND):])


def _env(cfg) -> Dict[str, str]:
    return {k: job_value(v) for k, v in cfg.cluster.env.items()}


def hf_home(cfg) -> Path:
    """The HF_HOME the jobs see: the cluster profile's env, else this shell's, else the default."""
    home = _env(cfg).get("HF_HOME") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return Path(home).expanduser()


def cache_dirs(cfg) -> Tuple[Path, Path]:
    """(hub cache, datasets cache) the jobs see: HF_HUB_CACHE / HF_DATASETS_CACHE, else under HF_HOME."""
    env, home = _env(cfg), hf_home(cfg)
    hub = env.get("HF_HUB_CACHE") or str(home / "hub")
    data = env.get("HF_DATASETS_CACHE") or str(home / "datasets")
    return Path(hub).expanduser(), Path(data).expanduser()


def snapshot(hub: Path, repo_id: str, revision: Optional[str] = None) -> Optional[Path]:
    """The snapshot dir from_pretrained(repo_id, revision) resolves offline in `hub` (it holds config.json),
    or None: snapshots/<commit> for a commit hash, else the commit refs/<revision> (default main) names."""
    repo = Path(hub) / f"models--{repo_id.replace('/', '--')}"
    rev = revision or "main"
    snap = repo / "snapshots" / rev if re.fullmatch(r"[0-9a-f]{40}", rev) else None
    if snap is None and (repo / "refs" / rev).is_file():
        snap = repo / "snapshots" / (repo / "refs" / rev).read_text().strip()
    return snap if snap is not None and (snap / "config.json").is_file() else None
