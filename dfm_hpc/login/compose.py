"""Hydra composition on the login node: the command line -> one LaunchPoint per run (one, or one per sweep point).

Three ways, one result: a plain run is composed once with Hydra's compose API; a sweep (-m) composes each
family of points once and sets each point's swept values on its family's dict (sweep_family.py); Hydra's own
flags (--cfg, --info, --hydra-help) and hydra.* overrides go through @hydra.main as in any Hydra app, whose
task function only collects the configs. `compose_config` is the subcommands' (prefetch, tests) one config.
Nothing is written here; every problem is raised at once as `Problems`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import List

from omegaconf import OmegaConf

from dfm_hpc import CONF_DIR, config_io
from dfm_hpc.login import checks, sweep, sweep_family
from dfm_hpc.login.point import LaunchPoint

SWEEP_LIMIT = 256  # points; more needs --large-sweep (each point is a run dir and an array task)
LARGE_SWEEP = "--large-sweep"


class Problems(ValueError):
    """The command line cannot be composed: every problem (console.report_problems prints them, exit 2)."""

    def __init__(self, problems: List[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class Composition:
    points: List[LaunchPoint]  # empty: Hydra printed what was asked (--cfg, --info, --hydra-help)
    sweep: bool
    command: List[str]  # the command line as the run dir records it


def hint(message: str, argv: List[str]) -> str:
    """What to type instead, for Hydra's least helpful messages."""
    if "Ambiguous value" in message and "-m" not in argv and "--multirun" not in argv:
        return message + " (a comma-separated value is a sweep: add -m, or quote the list: key='[a,b]')"
    if "not in struct" in message or "Could not override" in message or "Key '" in message and "not in" in message:
        return message + " (to add a key the config does not have, prefix it with +, e.g. +cluster.env.NAME=value)"
    return message


def compose_config(overrides: List[str]):
    """One config from `+experiment=... key=value` (no sweep), typed; for subcommands such as
    prefetch. Raises Problems (a ValueError) with every problem."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_io.register()
    problems = checks.check_overrides(overrides)
    if problems:
        raise Problems(problems)
    try:
        return config_io.typed(_compose(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise Problems([checks.explain_hydra_error(e)]) from None


def _compose(overrides: List[str]) -> dict:
    """The resolved config of `overrides`, composed once with Hydra's compose API (no sweep).

    OmegaConf stops at the first value outside a choice field's Enum. So that every such value is reported at
    once, each one found is set aside (its key given an allowed value, a list emptied) and the config composed
    again, once more per bad key; then all of them are raised as Problems. Other errors are raised as they come."""
    from hydra import compose, initialize_config_dir

    problems: List[str] = []
    todo, set_aside = list(overrides), set()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="dfm_hpc"):
        while True:
            try:
                composed = compose("config", overrides=todo)
                break
            except Exception as e:  # noqa: BLE001  (Hydra wraps OmegaConf's errors in its own)
                bad = checks.invalid_choice(e)
                key = bad and bad[0].partition("[")[0]  # merge.drop[0] -> merge.drop: the whole list
                if not bad or key in set_aside or len(set_aside) >= MAX_BAD_CHOICES:
                    if problems:
                        raise Problems(problems) from None
                    raise
                problems.append(checks.explain_hydra_error(e))
                set_aside.add(key)
                stand_in = f"{key}=[]" if key != bad[0] else f"{key}={bad[1][0]}"
                todo = [o for o in todo if o.lstrip("+~").partition("=")[0] != key] + [stand_in]
    if problems:
        raise Problems(problems)
    return OmegaConf.to_container(composed, resolve=True, enum_to_str=True)


MAX_BAD_CHOICES = 20  # one composition (~0.1 s) per bad value found


def command_line(argv: List[str]) -> Composition:
    """`[-m] key=value ...` (and Hydra's flags) -> the launch points. Raises Problems."""
    config_io.register()
    large = LARGE_SWEEP in argv
    argv = [a for a in argv if a != LARGE_SWEEP]
    command = ["python", "-m", "dfm_hpc", *argv]
    problems = checks.check_overrides(split_overrides(argv))
    if problems:
        raise Problems(problems)
    if any(a in ("-m", "--multirun") for a in argv) and not any(
            a.startswith(("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--run", "-r",
                          "--shell-completion", "-sc", "--config-", "-cp", "-cn", "-cd")) for a in argv):
        return Composition(_sweep(argv, large), True, command)
    if not any(a.startswith(("-", "hydra.", "+hydra.", "~hydra.")) for a in argv):
        return Composition([_run_once(argv)], False, command)
    points, multirun = _through_hydra_main(argv)
    return Composition(points, multirun, command)


def split_overrides(argv: List[str]) -> List[str]:
    """The key=value arguments among Hydra's own flags."""
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                   "--config-dir", "-cd", "--experimental-rerun"}
    info_topics = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
    out, skip, prev = [], False, ""
    for a in argv:
        if skip:
            skip = False
        elif prev in ("--info", "-i") and a in info_topics:
            pass
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
        prev = a
    return out


def _run_once(argv: List[str]) -> LaunchPoint:
    """A plain run (key=value only): composed once. `@hydra.main` composes twice (once only to learn the
    run mode, half a dry run's time) for what is not asked here (--help, --cfg, hydra.*); same config (tested)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return LaunchPoint(_compose(argv), list(argv))
    except Problems:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise Problems([hint(checks.explain_hydra_error(e), argv)]) from None


def _sweep(argv: List[str], large: bool = False) -> List[LaunchPoint]:
    """-m: Hydra's BasicSweeper semantics (cartesian product of the sweeps, in order). Hydra's own multirun
    composes every point twice (~0.1 s each); here each family (a choice of config groups, with the overrides
    all points share) is composed once, and each point is its family's resolved dict with its swept values set
    (sweep_family.py); an override that path cannot take exactly is applied by Hydra to a copy of the family's
    config, as before. What the point count decides is decided before the points are made (sweep.early_problems)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        combos = BasicSweeper.split_arguments(parser.parse_overrides(split_overrides(argv)), None)[0]
    except HydraException as e:
        raise Problems([checks.explain_hydra_error(e)]) from None
    if len(combos) > SWEEP_LIMIT and not large:
        raise Problems([f"the sweep has {len(combos):,} points, over the limit of {SWEEP_LIMIT} (each point is "
                        f"a run dir and an array task); narrow it, or add {LARGE_SWEEP} if you mean it"])
    families = sweep_family.Families(parser, set(checks.groups()), combos, lambda o: hint(o, argv))
    with families.hydra():
        early = sweep.early_problems(families.first_points())
        if early:
            raise Problems(early)
        points, problems = families.points()
    if problems:
        raise Problems(problems)
    return points


# @hydra.main's task function runs inside Hydra: it hands what it composed back through these
_collected: List[LaunchPoint] = []
_collect_problems: List[str] = []
_multirun = False


def _collect(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    global _multirun
    hc = HydraConfig.get()
    _multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    try:
        _collected.append(LaunchPoint(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), overrides))
    except Exception as e:  # e.g. an interpolation that cannot resolve
        prefix = f"[{' '.join(overrides)}] " if _multirun else ""
        _collect_problems.append(prefix + checks.explain_hydra_error(e))


def _through_hydra_main(argv: List[str]) -> tuple:
    """Hydra's flags or hydra.* overrides: @hydra.main as in any Hydra app. (points, multirun)"""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us (exit 2, not Hydra's 1)
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_collect)
    saved, sys.argv = sys.argv, ["dfm_hpc", *argv]
    _collected.clear()
    _collect_problems.clear()
    try:
        app()
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise Problems([hint(checks.explain_hydra_error(e), argv)]) from None
    finally:
        sys.argv = saved
    if _collect_problems:
        raise Problems(list(_collect_problems))
    return list(_collected), _multirun

