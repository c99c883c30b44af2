"""A launch point: one run of a launch (the run itself, or one point of a sweep), from its composed config to
its run dir. Composition (compose.py) or rerun makes it; launch.py fills in the rest as the launch proceeds,
and submit.py, slurm.py and console.py read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from dfm_hpc.plan import StageJob


@dataclass
class LaunchPoint:
    config: dict  # resolved
    overrides: List[str]  # what the command line set for this point
    reuse: Dict[str, Path] = field(default_factory=dict)  # stage -> finished stage dir of an earlier run
    resume: Dict[str, Path] = field(default_factory=dict)  # stage -> unfinished stage dir to continue in
    rerun_of: Optional[Path] = None
    # a sweep point made by compose's fast path: its family (config groups and fixed overrides) and its swept
    # keys' typed values; the points of a family share the launch's work where it read none that differ (sweep.py)
    family: Optional[tuple] = None
    swept: Dict[str, Any] = field(default_factory=dict)
    # filled by the launch
    # `config`, frozen: what runs is what was checked. In a sweep, the representative's config where the point shares
    # its work (login/sweep.py: equal on every value the launch reads); the point's own values are in `config`
    cfg: Any = None
    jobs: Optional[List[StageJob]] = None  # plan(cfg), each job with its cluster; None while the stages are unknown
    records: List[dict] = field(default_factory=list)  # plan.json: each job with its prediction
    run_dir: Optional[Path] = None

    def label(self, sweep: bool) -> str:
        """What a problem of this point starts with: in a sweep, which point it is."""
        return f"[{' '.join(self.overrides)}] " if sweep else ""

    @property
    def todo(self) -> List[StageJob]:
        """The jobs to run: all but the stages reused from an earlier run."""
        return [j for j in self.jobs or [] if j.stage not in self.reuse]
