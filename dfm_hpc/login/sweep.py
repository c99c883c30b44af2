"""A sweep's points share the login node's work where the work cannot tell them apart (issue #24).

The points of one family (sweep_family.py: the same config groups and fixed overrides, the same swept keys, each
a plain assignment) differ only in the swept keys' values. A representative's config is frozen with its swept
leaves *watched*: every read of their values (attribute access, get, items(), ==, str(), to_container, the
copies a merge makes) is recorded. The work done on it is check_stages, plan, every checker of checks.CHECKS
but PER_POINT's, launch._oasst_plan, the predictions and their checks, and a probe that reads what the point's
job scripts and Slurm submission are made of (its name, runs_root, dry_run and the whole cluster profile).
That work is deterministic and sees the config only through those reads, so a point whose values equal the
representative's on every swept key it read would run the same steps to the same result: it takes the
representative's frozen config, jobs, problems and predictions (`Work`). A point that differs on a key that
was read is made a representative of its own. Not shared: each point's own config (config.yaml, from
`LaunchPoint.config`), its overrides and run dir, and the checks of single values (ranges, text safety:
PER_POINT), which run on every point's own plain config, so a swept value is always checked. Points made
otherwise (rerun, Hydra's own path) and a local run that starts processes are never shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from omegaconf import AnyNode, DictConfig, OmegaConf

from dfm_hpc import predict
from dfm_hpc.login import checks
from dfm_hpc.login.checks import ranges, safety
from dfm_hpc.login.point import LaunchPoint
from dfm_hpc.plan import StageJob, plan

PER_POINT = (ranges.check_ranges, safety.check_text)  # checks of single values: run on each point's plain config


class _Watched(AnyNode):
    """A swept leaf: each read of its value is recorded in `seen` (its copies share it)."""

    def __init__(self, value: Any, key: str, seen: Set[str], path: str):
        super().__init__(value=value, key=key)
        self.__dict__["_seen"], self.__dict__["_path"] = seen, path

    def _mark(self) -> None:
        self.__dict__["_seen"].add(self.__dict__["_path"])

    def _value(self) -> Any:
        self._mark()
        return super()._value()

    def __eq__(self, other: Any) -> bool:
        self._mark()
        return super().__eq__(other)

    def __hash__(self) -> int:
        self._mark()
        return super().__hash__()

    def __str__(self) -> str:
        self._mark()
        return super().__str__()

    def __repr__(self) -> str:
        self._mark()
        return super().__repr__()

    def __deepcopy__(self, memo: Dict[int, Any]) -> "_Watched":
        res = _Watched(None, self._metadata.key, self.__dict__["_seen"], self.__dict__["_path"])
        self._deepcopy_impl(res, memo)
        return res


def watched(config: dict, keys: Sequence[str]) -> Tuple[Optional[DictConfig], Set[str]]:
    """(`config` frozen with the leaves at `keys` watched, the set their reads go to); (None, ...) when one of
    them is not a plain leaf of nested mappings (a list item, a whole mapping): such a family is not shared."""
    seen: Set[str] = set()
    cfg = OmegaConf.create(config)
    for key in keys:
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node._get_node(part) if isinstance(node, DictConfig) else None
            if not isinstance(node, DictConfig):
                return None, seen
        leaf = node._get_node(last)
        if type(leaf) is not AnyNode:
            return None, seen
        w = _Watched(leaf._value(), last, seen, key)
        w._set_parent(node)
        node.__dict__["_content"][last] = w
    OmegaConf.set_readonly(cfg, True)
    return cfg, seen


def _value_key(value: Any) -> Tuple[str, Any]:
    """Equal only for the same value: 1, 1.0 and True are equal in Python, and so are 0.0 and -0.0."""
    return type(value).__name__, repr(value) if isinstance(value, float) else value


@dataclass
class Work:
    """The login node's work on one representative's frozen config, shared by the points that read the same."""
    cfg: Any
    jobs: Optional[List[StageJob]]
    stage_problems: List[str]  # check_stages': when there are any, they are the config's only problems
    by_check: Dict[Any, List[str]]  # each checker of checks.CHECKS but PER_POINT's -> its problems
    records: Optional[List[dict]] = None  # plan.json's (made when the representative has no problem at all)
    prediction_problems: List[str] = field(default_factory=list)
    oasst: Tuple[List[str], List[str]] = ([], [])  # launch._oasst_plan's (problems, lines) for this config


def point_problems(p: LaunchPoint, w: Work) -> List[str]:
    """checks.check_config's problems for `p`, in its order: PER_POINT's on the point's own plain config."""
    if w.stage_problems:
        return list(w.stage_problems)
    return [x for check in checks.CHECKS
            for x in (check(p.config, w.jobs) if check in PER_POINT else w.by_check[check])]


def _work(p: LaunchPoint, oasst, watched_reads: bool) -> Work:
    cfg = p.cfg
    stage_problems = checks.check_stages(cfg)
    if stage_problems:
        return Work(cfg, None, stage_problems, {})
    jobs = plan(cfg)
    w = Work(cfg, jobs, [], {c: c(cfg, jobs) for c in checks.CHECKS if c not in PER_POINT})
    w.oasst = oasst([cfg])
    p.jobs = jobs
    if not point_problems(p, w) and not w.oasst[0]:
        w.records = predict.records(cfg, jobs)
        todo = [r for r in w.records if r["stage"] not in p.reuse]
        w.prediction_problems = predict.problems(todo) + checks.check_predictions(cfg, todo)
        if watched_reads:  # only a watched config's reads matter
            _read_like_submit(p)
    return w


def _read_like_submit(p: LaunchPoint) -> None:
    """Read what the point's job scripts and its Slurm submission are made of besides its jobs (plan's, shared):
    the run's name, runs_root and dry_run, and the whole cluster profile, the run's and each job's (the render
    and submission, slurm.py and checkpoint_evals.py, see a point's config only through a job and its cluster;
    submit.py reads these of `LaunchPoint.cfg`). A point shares jobs only where its scripts would be the same
    but for its own run dir (test_sweep.py renders a sweep both ways)."""
    cfg = p.cfg
    _ = (cfg.name, cfg.runs_root, cfg.dry_run, OmegaConf.to_container(cfg.cluster))
    for j in p.todo:
        OmegaConf.to_container(j.cluster)


def _shareable(p: LaunchPoint) -> bool:
    """Points composed by compose's fast path, in a launch that renders or queues scripts (a local run
    starts processes from each point's own config: not shared)."""
    c = p.config
    return bool(p.swept) and p.family is not None and not p.reuse and not p.resume and \
        (bool(c.get("dry_run")) or (c.get("cluster") or {}).get("scheduler") == "slurm")


def assign(points: List[LaunchPoint], oasst) -> List[Work]:
    """Each point's Work, made once per representative; fills in each point's cfg and jobs. `oasst`: launch's
    _oasst_plan (it reads the config too, so it is part of the work)."""
    reps: Dict[Any, List[Tuple[Tuple[str, ...], Dict[tuple, Work]]]] = {}
    out: List[Work] = []
    for p in points:
        share = _shareable(p)
        w = _find(reps.get(p.family, []), p) if share else None
        if w is None:
            seen: Set[str] = set()
            cfg = None
            if share:
                cfg, seen = watched(p.config, list(p.swept))
            p.cfg = cfg if cfg is not None else OmegaConf.create(p.config, flags={"readonly": True})
            w = _work(p, oasst, cfg is not None)
            if cfg is not None:
                read = tuple(sorted(seen))  # the swept keys this work read: points equal on them share it
                tables = reps.setdefault(p.family, [])
                table = next((t for r, t in tables if r == read), None)
                if table is None:
                    table = {}
                    tables.append((read, table))
                table[tuple(_value_key(p.swept[k]) for k in read)] = w
        p.cfg, p.jobs = w.cfg, w.jobs
        out.append(w)
    return out


def _find(tables, p: LaunchPoint) -> Optional[Work]:
    for read, table in tables:
        w = table.get(tuple(_value_key(p.swept[k]) for k in read))
        if w is not None:
            return w
    return None


def early_problems(firsts: List[Tuple[LaunchPoint, int]]) -> List[str]:
    """What the point count decides, before the other points are made (issue #24): per-user job limits, array
    tasks included, and the sweep array's size. `firsts`: (a family's first point, its point count). A family
    counts where its plan reads no swept key: then every point of it has the same jobs (the argument above)."""
    from dfm_hpc.login.checks.resources import check_sweep_counts

    classes = []
    for p, n in firsts:
        cfg, seen = watched(p.config, list(p.swept))
        if cfg is None or checks.check_stages(cfg):
            continue
        jobs = plan(cfg)
        if not seen:
            classes.append((cfg, jobs, n))
    return check_sweep_counts(classes)
