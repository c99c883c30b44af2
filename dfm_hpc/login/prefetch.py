"""What an experiment needs from the Hugging Face Hub, whether the jobs' cache has it, and fetching it.

Compute nodes are offline (the LUMI profile sets HF_HUB_OFFLINE=1), so every hub model and dataset a
run names must be in the cache the jobs use (`cluster.env.HF_HOME`) before anything is queued.
`python -m dfm_hpc prefetch +experiment=NAME` lists them with their cache state and, with
`--download`, fetches what is missing on the login node; validation refuses a run whose jobs would
find something missing. Checking is file-system only (login node: no torch, no datasets); fetching
imports huggingface_hub (models) and datasets (datasets: `load_dataset` prepares the cache that
offline `load_dataset` reads, which a plain snapshot is not).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from dfm_hpc.jobenv import cache_dirs, hf_home, snapshot  # hf_home: checks/paths.py's too
from dfm_hpc.registry import inputs
from dfm_hpc.sources import is_hub_id


@dataclass(frozen=True)
class Need:
    kind: str  # model | dataset | euroeval (EuroEval's datasets, fetched by EuroEval itself)
    repo_id: str
    revision: Optional[str]
    key: str  # the config key that names it
    subset: Optional[str] = None  # a dataset's config name (data.mixture[i].subset)


# lm-eval's Danish tasks -> the hub dataset (and config) their YAML loads (lm_eval/tasks/...)
LM_EVAL_DATASETS = {
    "belebele_dan_Latn": ("facebook/belebele", "dan_Latn"),
    "arc_da": ("alexandrainst/m_arc", "da"),
    "hellaswag_da": ("alexandrainst/m_hellaswag", "da"),
    "m_mmlu_da": ("alexandrainst/m_mmlu", "da"),
    "truthfulqa_da_mc1": ("alexandrainst/m_truthfulqa", "da"),
    "truthfulqa_da_mc2": ("alexandrainst/m_truthfulqa", "da"),
}


def _euroeval_env(cfg):
    """(EuroEval's python, its dataset cache) as the evaluate job will see them."""
    env = {k: str(v) for k, v in cfg.cluster.env.items()}
    ev = cfg.evaluate
    python = ev.euroeval_python or env.get("DFM_HPC_EUROEVAL_PYTHON") or os.environ.get("DFM_HPC_EUROEVAL_PYTHON")
    cache = ev.euroeval_cache or env.get("DFM_HPC_EUROEVAL_CACHE") or os.environ.get("DFM_HPC_EUROEVAL_CACHE")
    return python, (Path(os.path.expandvars(cache)).expanduser() if cache else None)


def needs(cfg) -> List[Need]:
    """The hub models and datasets the run's stages load (registry.inputs; local paths and tiny:* need nothing),
    and the evaluate stage's benchmarks."""
    out: List[Need] = []
    for i in inputs(cfg):
        if is_hub_id(i.value) and all(n.repo_id != i.value for n in out):
            out.append(Need(i.reads.kind, i.value, i.revision, i.entry or i.key, i.subset))
    if "evaluate" in cfg.stages:
        for task in cfg.evaluate.lm_eval_tasks:  # tiny:* and unknown tasks: nothing to fetch here
            if task in LM_EVAL_DATASETS and all((n.repo_id, n.subset) != LM_EVAL_DATASETS[task] for n in out):
                repo, config = LM_EVAL_DATASETS[task]
                out.append(Need("dataset", repo, None, f"lm-eval {task}", config))
        if cfg.evaluate.euroeval and cfg.evaluate.server != "none":
            what = ",".join([*cfg.evaluate.euroeval_tasks, *cfg.evaluate.euroeval_datasets]) or "Danish"
            out.append(Need("euroeval", f"EuroEval {what}", None, "evaluate.euroeval"))
    return out


def _snake(name: str) -> str:
    """datasets' camelcase_to_snakecase (the name of a prepared dataset's cache dir)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def is_cached(need: Need, cfg) -> bool:
    hub, data = cache_dirs(cfg)
    if need.kind == "euroeval":  # what EuroEval's offline load_dataset finds in its cache_dir
        cache = _euroeval_env(cfg)[1]
        return bool(cache) and any(cache.glob("EuroEval___*/*/*/*"))
    if need.kind == "model":  # what from_pretrained(repo, revision) resolves offline
        return snapshot(hub, need.repo_id, need.revision) is not None
    # what offline load_dataset(repo) finds: a prepared copy under <datasets cache>/<org>___<name>/
    org, name = need.repo_id.split("/")
    root = data / f"{org}___{_snake(name)}"
    return any(p.is_dir() for p in root.glob(f"{need.subset or '*'}/*/*"))


def missing(cfg) -> List[Need]:
    return [n for n in needs(cfg) if not is_cached(n, cfg)]


def download(cfg, todo: List[Need], say=print) -> List[str]:
    """Fetch `todo` into the jobs' cache; returns the failures (one line each)."""
    hub, data = cache_dirs(cfg)  # before the imports: both libraries read these once
    os.environ.update(HF_HOME=str(hf_home(cfg)), HF_HUB_CACHE=str(hub), HF_DATASETS_CACHE=str(data))
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(k, None)
    failures = []
    for n in todo:
        say(f"fetching {n.kind} {n.repo_id}" + (f" @ {n.revision}" if n.revision else "") + " ...")
        try:
            if n.kind == "euroeval":
                _download_euroeval(cfg)
            elif n.kind == "model":
                from huggingface_hub import snapshot_download

                snapshot_download(n.repo_id, revision=n.revision)
            else:
                import datasets

                datasets.load_dataset(n.repo_id, n.subset, revision=n.revision)
        except Exception as e:  # network, gated repo (huggingface_hub login), missing package
            failures.append(f"{n.kind} {n.repo_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return failures


def _download_euroeval(cfg) -> None:
    """EuroEval's own --download-only, from its environment, into the cache the job reads."""
    import subprocess

    python, cache = _euroeval_env(cfg)
    if not python or not cache:
        raise RuntimeError("EuroEval's environment or cache is not set (evaluate.euroeval_python/_cache, or "
                           "DFM_HPC_EUROEVAL_PYTHON/_CACHE in the cluster's env)")
    ev = cfg.evaluate
    argv = [python, "-m", "euroeval.cli", "--model", cfg.model.name_or_path, "--language", "da", "--download-only",
            "--cache-dir", str(cache), *sum((["--task", t] for t in ev.euroeval_tasks), []),
            *sum((["--dataset", d] for d in ev.euroeval_datasets), [])]
    subprocess.run(argv, check=True)


def run(cfg, fetch: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    todo = needs(cfg)
    if not todo:
        con.print(f"{cfg.name}: nothing to fetch from the Hub (local paths and tiny:* models only)")
        return 0
    t = Table(title=f"{cfg.name}: what the jobs load from the Hub (cache: {hf_home(cfg)})", title_justify="left")
    for col in ("kind", "repo", "revision", "config key", "cached"):
        t.add_column(col, no_wrap=col in ("repo", "config key"))
    gone = set(missing(cfg))
    for n in todo:
        t.add_row(n.kind, n.repo_id + (f" ({n.subset})" if n.subset else ""), n.revision or "main", n.key,
                  "[red]no[/]" if n in gone else "[green]yes[/]")
    con.print(t)
    if not gone:
        con.print("everything is cached; the jobs can run offline")
        return 0
    if not fetch:
        con.print(f"{len(gone)} missing; fetch them here (login node, internet) with --download")
        return 1
    failures = download(cfg, [n for n in todo if n in gone], con.print)
    for f in failures:
        con.print(f"[red]failed[/]: {f}")
    left = missing(cfg)
    if left:
        con.print(f"[red]{len(left)} still missing[/]: " + ", ".join(n.repo_id for n in left) +
                  " (gated models: log in first, `huggingface-cli login`)")
        return 1
    con.print("all fetched; the jobs can run offline")
    return 0
