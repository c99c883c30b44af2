"""What the run's stages read (registry.STAGES' `reads`), checked where the paths belong: each local source
exists and, if a stage reads it as data, is a file it can read with the columns it needs (a parseable first
record); `init_from` run dirs exist; an offline job's hub models and datasets are in its cache; the
container image exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from dfm_hpc import lumi, registry, sources
from dfm_hpc.login import prefetch
from dfm_hpc.registry import TRAINED_STAGES


def should_check_paths(cfg) -> bool:
    """Paths are checked on the machine the config is for (cluster.check_paths overrides)."""
    if cfg.cluster.check_paths is not None:
        return cfg.cluster.check_paths
    return cfg.cluster.system != "lumi" or lumi.on_lumi()


def check_inputs(cfg, jobs) -> List[str]:
    if not should_check_paths(cfg):
        return []
    out, cl, found = [], cfg.cluster, registry.inputs(cfg)
    for s in cfg.stages:
        for i in found:
            if i.stage == s and sources.is_local(i.value) and not Path(i.value).expanduser().exists():
                other = ", a run dir" if i.reads.run_dir else ""
                out.append(f"{i.key}={i.value!r} does not exist (an input of stage {s!r}: give a local path{other} or "
                           "a hub id org/name)")
        init = cfg[s].get("init_from") if s in TRAINED_STAGES else None
        if init and not Path(init).exists():
            out.append(f"{s}.init_from={init!r}: no such run directory")
    if str(cl.env.get("HF_HUB_OFFLINE", "0")).lower() in ("1", "true") and not cfg.dry_run:
        gone = prefetch.missing(cfg)  # the jobs run offline: what they load must be in their cache
        if gone:
            out.append(f"not in the jobs' Hugging Face cache ({prefetch.hf_home(cfg)}), and compute nodes are "
                       f"offline: {', '.join(f'{n.kind} {n.repo_id} ({n.key})' for n in gone)}. Fetch them on the "
                       "login node: python -m dfm_hpc prefetch <the same arguments> --download")
    image = cl.container.image
    if image and not Path(image).exists():
        out.append(f"cluster.container.image={image!r} does not exist")
    return out


def check_data_files(cfg, jobs) -> List[str]:
    """The local data files the stages read (in dry runs too): the right kind, readable, the columns there."""
    if not should_check_paths(cfg):
        return []
    out = []
    for i in registry.inputs(cfg):
        path = Path(i.value).expanduser()
        if i.reads.columns and sources.is_local(i.value) and path.exists():
            why = _file_problem(i.reads, path)
            if why:
                out.append(f"{i.key}={i.value!r} {why}")
    return out


def _file_problem(reads: registry.Reads, path: Path) -> str:
    """Why a local data file cannot be what `reads` needs, or ''."""
    cols = reads.columns
    if path.is_dir():
        if reads.run_dir and (path / "config.yaml").is_file():
            return ""  # a run dir: its pii or merge outputs
        return "is a directory, not a run dir nor a .jsonl/.parquet file"
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        return f"is not a .jsonl, .json or .parquet file (a file with {', '.join(cols)})"
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head.strip():
        return "is empty"
    if path.suffix == ".parquet":
        return "" if head[:4] == b"PAR1" else "is not a Parquet file (no PAR1 header)"
    text = head.decode("utf-8", errors="replace").lstrip()
    if path.suffix == ".json" and text.startswith("["):
        return ""
    line = text.splitlines()[0]
    try:
        first = json.loads(line)
    except ValueError:
        return "does not start with a JSON record (one object per line)"
    if not isinstance(first, dict):
        return "does not start with a JSON object"
    missing = [c for c in cols if c not in first]
    return f"has no {', '.join(missing)} in its first record (it has {', '.join(list(first)[:6])})" if missing else ""
