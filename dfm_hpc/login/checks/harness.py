"""The harness clients of the evaluate stage (EuroEval, inspect_ai): they score a served model, so they need
evaluate.server; on LUMI they run from the harness overlay, never from a plain venv.

A plain venv on Lustre (/project, /scratch) is what containers/build_harness.sh replaces: thousands of small
files that every Python start opens through the metadata servers and that count against /project's 100k-file
quota (LUMI's guide on Python installations; docs/lumi.md), and a venv made with --system-site-packages from the
container's own venv does not see the container's packages, so pip installs a second torch into it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from dfm_hpc.login.slurm import HARNESS_MOUNT


def _python(ev, env, key: str, var: str) -> Optional[Tuple[str, str]]:
    """(where it is set, the python) of one harness."""
    if ev.get(key):
        return f"evaluate.{key}", str(ev.get(key))
    return (f"cluster.env.{var}", env[var]) if env.get(var) else None


def check_harness(cfg, jobs) -> List[str]:
    if "evaluate" not in cfg.stages:
        return []
    ev, out = cfg.evaluate, []
    if ev.inspect_tasks and ev.server == "none":
        out.append(f"evaluate.inspect_tasks={list(ev.inspect_tasks)}: inspect is a client of a served model; set "
                   "evaluate.server (vllm on LUMI, transformers on a CPU) or leave inspect_tasks empty")
    if cfg.cluster.system != "lumi" or ev.server == "none" or not cfg.cluster.container.image:
        return out
    env = {k: str(v) for k, v in cfg.cluster.env.items()}
    euroeval = _python(ev, env, "euroeval_python", "DFM_HPC_EUROEVAL_PYTHON")
    used = ([euroeval] if ev.euroeval else []) + \
        ([_python(ev, env, "inspect_python", "DFM_HPC_INSPECT_PYTHON") or euroeval] if ev.inspect_tasks else [])
    if used and not cfg.cluster.container.harness_overlay:
        out.append("evaluate runs EuroEval/inspect on LUMI, and cluster.container.harness_overlay is not set: they "
                   "run from the harness overlay (build it with containers/build_harness.sh; docs/lumi.md), or set "
                   "evaluate.euroeval=false and evaluate.inspect_tasks=[]")
    for where, python in dict.fromkeys(u for u in used if u):
        if not python.startswith(HARNESS_MOUNT + "/"):
            out.append(f"{where}={python}: a plain venv is refused on LUMI (thousands of small files on Lustre, "
                       "against /project's 100k-file quota; and a venv made from the container's venv installs a "
                       f"second torch). Build the harness overlay (containers/build_harness.sh) and use "
                       f"{HARNESS_MOUNT}/bin/python (cluster.env.DFM_HPC_EUROEVAL_PYTHON; docs/lumi.md)")
    return out
