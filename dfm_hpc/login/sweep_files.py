"""The config.yaml of a sweep's points, with the work their shared parts need done once (issue #24).

A sweep's points share every mapping their swept values leave alone (sweep_family.with_values). What
rundir.snapshot does to a point's config is a pure function of each such mapping: the secret values found in
it, its redaction (redact.redact_all) and its YAML text. `Files` keeps them by the mapping's identity for the
launch (the points hold every mapping, so no identity is reused), and gives the same text as rundir.write_yaml
of redact.redact_all (tests/login/test_sweep_files.py): a top-level section's YAML does not depend on the others
(block style; a document with no object twice has no aliases).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import yaml

from dfm_hpc import redact, rundir


class Files:
    def __init__(self):
        self._found: Dict[int, Tuple[Any, frozenset]] = {}
        self._redacted: Dict[tuple, Tuple[Any, Any]] = {}
        self._text: Dict[tuple, Tuple[Any, str]] = {}
        self._env = frozenset(redact.secret_values({}))

    def secret_values(self, config: dict) -> List[str]:
        """redact.secret_values(config)."""
        found = set(self._env) | self._secrets(config)
        return sorted((v for v in found if len(v) >= 6 and v != redact.REDACTED), key=len, reverse=True)

    def _secrets(self, obj) -> frozenset:
        if not isinstance(obj, (dict, list)):
            return frozenset()
        hit = self._found.get(id(obj))
        if hit is None:
            if isinstance(obj, dict):
                out = set()
                for k, v in obj.items():
                    if redact.is_secret_key(str(k)) and isinstance(v, (str, int)):
                        out.add(str(v))
                    else:
                        out |= self._secrets(v)
            else:
                out = set().union(*(self._secrets(v) for v in obj))
            hit = self._found[id(obj)] = (obj, frozenset(out))
        return hit[1]

    def redacted(self, obj, values: Tuple[str, ...]):
        """redact.redact_all(obj, list(values))."""
        if isinstance(obj, str):
            return redact.redact_text(obj, list(values))
        if not isinstance(obj, (dict, list)):
            return obj
        hit = self._redacted.get((id(obj), values))
        if hit is None:
            if isinstance(obj, dict):
                out: Any = {k: (redact.redact_text(redact.REDACTED, list(values))
                                if redact.is_secret_key(str(k)) and v not in (None, "") else self.redacted(v, values))
                            for k, v in obj.items()}
            else:
                out = [self.redacted(v, values) for v in obj]
            hit = self._redacted[(id(obj), values)] = (obj, out)
        return hit[1]

    def config_text(self, config: dict, values: List[str]) -> str:
        """rundir.write_yaml's text of redact.redact_all(config, values), one top-level section at a time."""
        v = tuple(values)
        parts = []
        for key, value in config.items():
            hit = self._text.get((key, id(value), v))
            if hit is None:
                secret = redact.is_secret_key(str(key)) and value not in (None, "")
                section = redact.redact_text(redact.REDACTED, values) if secret else self.redacted(value, v)
                text = yaml.dump({key: section}, Dumper=rundir._DUMPER, sort_keys=False, allow_unicode=True)
                hit = self._text[(key, id(value), v)] = (value, text)
            parts.append(hit[1])
        return "".join(parts) if config else yaml.dump({}, Dumper=rundir._DUMPER)
