"""What the tests share: the repo's paths, the CLI in a subprocess, LUMI's arguments, a config builder and a
stage context. Fixtures (the local Slurm cluster) live in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
DATA = TESTS / "data"  # real public data (OASST), old run dirs
GOLDEN = TESTS / "golden"  # expected outputs, compared byte for byte

LUMI_ACCOUNT = "project_465000670"
LUMI = ["cluster=lumi", f"cluster.account={LUMI_ACCOUNT}"]


def lumi_args(*extra: str, cluster: str = "lumi") -> list:
    """The overrides of a LUMI run (a valid project account) followed by `extra`."""
    return [f"cluster={cluster}", f"cluster.account={LUMI_ACCOUNT}", *extra]


def dfm(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m dfm_hpc ARGS` as a user would type it; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "dfm_hpc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("runs/*/*") if p.is_dir())


def wait_for(predicate, timeout: float = 180, every: float = 1.0, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_cfg(*overrides: str, **values):
    """A typed config: composed from conf/ as the CLI does (`+experiment=munin_sft`, `sft.lr=1e-4`), or the
    schema's defaults with `values` merged (sft={"lr": 1e-4}); both when given both."""
    from omegaconf import OmegaConf

    from dfm_hpc.config_io import typed

    if not overrides:
        return typed(values)
    from dfm_hpc.login.compose import compose_config

    cfg = compose_config(list(overrides))
    return typed(OmegaConf.merge(cfg, values)) if values else cfg


def stage_ctx(run: Path, stage: str, rank: int = 0, world_size: int = 1, worker: int = 0, workers: int = 1):
    """The StageContext a rank gets for `stage` of the run dir `run` (one node, port 29500)."""
    from dfm_hpc import dist, rundir
    from dfm_hpc.job.rank import StageContext

    env = dist.DistEnv(rank, rank, world_size, world_size, 0, "127.0.0.1", 29500)
    return StageContext(run, rundir.stage_dir(run, stage), env, array_index=worker, array_size=workers)
