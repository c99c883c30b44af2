"""A sweep's points, made cheaply (issue #24): compose.py's -m path.

The points of a sweep are Hydra's BasicSweeper combinations. Points with the same config-group choices form a
family; the value overrides every point gives alike (`cluster.account=...`, `dry_run=true`) are composed into
the family's config once, with its groups, when no swept key is one of theirs or nested in one. Each point is
then the family's resolved dict with its swept values set, where every swept override is one Hydra would apply
as a plain assignment of a single value:

- `key=value` (no +, ++ or ~), a value that is not a list, a mapping or an interpolation, at a key the family's
  config has as a single value inside mappings, and no two swept keys nested in each other;
- no interpolation of the config names the key (its last part appears in none: then nothing else changes
  with it, and the family's resolved dict holds every other value as the point's would).

The value the point gets is Hydra's own: the override applied to a copy of the family's typed config (once per
distinct override), read back as `to_container(enum_to_str=True)` would give it, with its error if it has one.
The point shares with the family's dict every mapping it does not change (nothing changes a point's config
after composition: the launch freezes a copy). Any other override makes the point as before: Hydra applies the
point's overrides to a deep copy of the family's typed config.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from enum import Enum
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from dfm_hpc import CONF_DIR
from dfm_hpc.login import checks
from dfm_hpc.login.point import LaunchPoint

_ABSENT = object()


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _strings(node) -> List[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def with_values(base: dict, values: Dict[str, Any]) -> dict:
    """`base` with `values` set at their dotted keys; mappings on no key's path are shared, not copied."""
    out = dict(base)
    for key, value in values.items():
        *parents, last = key.split(".")
        node, src = out, base
        for part in parents:
            src = src[part]
            if node[part] is src:
                node[part] = dict(src)
            node = node[part]
        node[last] = value
    return out


class _Family:
    def __init__(self, groups: Tuple[str, ...], fixed: Tuple[str, ...]):
        self.groups, self.fixed = groups, fixed
        self.cfg = None  # the typed config of the groups (and the fixed overrides)
        self._plain: Optional[dict] = None
        self._interpolations: Optional[List[str]] = None
        self._scratch = None
        self.typed: Dict[str, Tuple[bool, Any]] = {}  # override -> (ok, value or the error)

    @property
    def plain(self) -> dict:
        if self._plain is None:
            self._plain = OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)
        return self._plain

    def names_key(self, key: str) -> bool:
        if self._interpolations is None:
            self._interpolations = [s for s in _strings(OmegaConf.to_container(self.cfg, resolve=False)) if "${" in s]
        last = key.rpartition(".")[2]
        return any(last in s for s in self._interpolations)

    def value(self, override, hint: Callable[[str], str]) -> Tuple[bool, Any]:
        """Hydra's value for one plain assignment, applied to a copy of the family's config (or its error)."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        line = override.input_line
        if line not in self.typed:
            if self._scratch is None:
                self._scratch = copy.deepcopy(self.cfg)
            try:
                ConfigLoaderImpl._apply_overrides_to_config([override], self._scratch)
                v = OmegaConf.select(self._scratch, override.key_or_group)
                self.typed[line] = (True, v.name if isinstance(v, Enum) else v)
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                self.typed[line] = (False, hint(checks.explain_hydra_error(e)))
        return self.typed[line]


class Families:
    """The combinations of a sweep, by family; `points()` makes them, `first_points()` one per family first."""

    def __init__(self, parser, group_names, combos: List[List[str]], hint: Callable[[str], str]):
        self.parser, self.combos, self.hint = parser, combos, hint
        self.is_group = lambda o: _key(o) in group_names
        shape = [[_key(o) for o in c] for c in combos]
        uniform = all(s == shape[0] for s in shape)
        fixed_at = {i for i, o in enumerate(combos[0]) if all(c[i] == o for c in combos)} if uniform else set()
        fixed_at = {i for i in fixed_at if not self.is_group(combos[0][i])}
        swept = [k for i, k in enumerate(shape[0]) if i not in fixed_at and not self.is_group(combos[0][i])] \
            if uniform else []
        if any(_related(shape[0][i], k) for i in fixed_at for k in swept):
            fixed_at = set()  # Hydra applies overrides in order: composing those first could change a point
        self.fixed_at = fixed_at
        self.families: Dict[tuple, _Family] = {}
        self._parsed: Dict[str, Any] = {}
        self._made: Dict[int, Tuple[Optional[LaunchPoint], Optional[str]]] = {}

    @contextmanager
    def hydra(self):
        from hydra import initialize_config_dir

        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="dfm_hpc"):
            yield

    def _split(self, combo: List[str]) -> Tuple[tuple, List[str]]:
        groups = tuple(o for o in combo if self.is_group(o))
        fixed = tuple(o for i, o in enumerate(combo) if i in self.fixed_at)
        values = [o for i, o in enumerate(combo) if not self.is_group(o) and i not in self.fixed_at]
        return (groups, fixed), values

    def _family(self, key: tuple) -> _Family:
        """Composed on first use; the fixed overrides go in with the groups unless that fails (then each point
        applies them, and reports their error, as before)."""
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if key not in self.families:  # a choice of groups that cannot be composed raises for each of its points
            groups, fixed = key
            fam = _Family(groups, fixed)
            try:
                fam.cfg = compose("config", overrides=[*groups, *fixed])
            except (HydraException, OmegaConfBaseException, ValueError):
                if not fixed:
                    raise
                fam.fixed, fam.cfg = (), compose("config", overrides=list(groups))
            self.families[key] = fam
        return self.families[key]

    def _parse(self, override: str):
        if override not in self._parsed:
            self._parsed[override] = self.parser.parse_overrides([override])[0]
        return self._parsed[override]

    def _plain_assignment(self, fam: _Family, o) -> bool:
        value = o.value() if not o.is_sweep_override() else None
        if o.is_sweep_override() or o.package is not None or o.is_add() or o.is_force_add() or o.is_delete():
            return False
        if isinstance(value, (list, dict)) or (isinstance(value, str) and "${" in value):
            return False
        node: Any = fam.plain
        for part in o.key_or_group.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return not isinstance(node, (dict, list)) and not fam.names_key(o.key_or_group)

    def _make(self, i: int) -> Tuple[Optional[LaunchPoint], Optional[str]]:
        """Point i, or the problem that stops it."""
        if i in self._made:
            return self._made[i]
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        combo = self.combos[i]
        label = f"[{' '.join(combo)}] "
        try:
            key, values = self._split(combo)
            fam = self._family(key)
            if fam.fixed != key[1]:  # the fixed overrides could not be composed in: this point applies them
                values = [o for o in combo if not self.is_group(o)]
            parsed = [self._parse(o) for o in values]
            keys = [o.key_or_group for o in parsed]
            if all(self._plain_assignment(fam, o) for o in parsed) and \
                    not any(_related(a, b) for n, a in enumerate(keys) for b in keys[n + 1:]):
                swept = {}
                for o in parsed:
                    ok, v = fam.value(o, self.hint)
                    if not ok:
                        return self._made.setdefault(i, (None, label + v))
                    swept[o.key_or_group] = v
                point = LaunchPoint(with_values(fam.plain, swept), list(combo), family=(key, tuple(keys)),
                                    swept=swept)
            else:
                cfg = copy.deepcopy(fam.cfg)
                ConfigLoaderImpl._apply_overrides_to_config(self.parser.parse_overrides(values), cfg)
                point = LaunchPoint(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), list(combo))
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            return self._made.setdefault(i, (None, label + self.hint(checks.explain_hydra_error(e))))
        return self._made.setdefault(i, (point, None))

    def first_points(self) -> List[Tuple[LaunchPoint, int]]:
        """(the first point, the family's point count) per family whose first point was made the fast way."""
        counts: Dict[tuple, List[int]] = {}
        for i, combo in enumerate(self.combos):
            counts.setdefault(self._split(combo)[0], []).append(i)
        out = []
        for members in counts.values():
            point, _ = self._make(members[0])
            if point is not None and point.family is not None:
                out.append((point, len(members)))
        return out

    def points(self) -> Tuple[List[LaunchPoint], List[str]]:
        made = [self._make(i) for i in range(len(self.combos))]
        return [p for p, _ in made if p is not None], [x for _, x in made if x is not None]
