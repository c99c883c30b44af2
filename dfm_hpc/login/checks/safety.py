"""Hostile values: nothing in the config can become code in a job script (shell.py), a run's name keeps its
runs inside runs_root, and no secret is written in clear."""

from __future__ import annotations

import re
from typing import List

from omegaconf import OmegaConf

from dfm_hpc import redact, rundir
from dfm_hpc.login import shell


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else cfg


def check_text(cfg, jobs) -> List[str]:
    """Nothing in the config can become code: one line of printable text everywhere, env keys
    that are shell names, sbatch_extra keys that are option names, no secret written in clear."""
    out: List[str] = []
    plain = _plain(cfg)
    for key, text in shell.walk_strings(plain):
        out += shell.check_value(key, text)
    cl = plain["cluster"]
    for k in cl.get("env") or {}:
        out += shell.check_env_key(k)
    for k in cl.get("sbatch_extra") or {}:
        out += shell.check_sbatch_option(k)
    single = cl.get("single_device") or {}
    for k in single.get("sbatch_extra") or {}:
        out += shell.check_sbatch_option(k)
    for k in single.get("env") or {}:
        out += shell.check_env_key(k)
    return out + _check_secrets(plain)


_SETUP_SECRET = re.compile(r"(?:^|[\s;])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def _check_secrets(plain: dict) -> List[str]:
    """A secret would land in sbatch.sh: a setup line that assigns one, or a secret's value under a
    key that is not secret-named (only secret-named cluster.env keys reach the job by name)."""
    out = []
    for i, line in enumerate(plain["cluster"].get("setup") or []):
        for name, value in _SETUP_SECRET.findall(str(line)):
            if redact.is_secret_key(name) and not value.startswith(("$", '"$')):
                out.append(f"cluster.setup[{i}] assigns {name} a value: secrets are never written into scripts; "
                           f"export {name} in the shell you submit from, or pass +cluster.env.{name}=... "
                           "(the job gets it by name, docs/security.md)")
    values = redact.secret_values(plain)
    if values:
        redacted = redact.redact(plain)
        for key, text in shell.walk_strings(redacted):
            if any(v in text for v in values):
                out.append(f"{key.replace(' (the key)', '')}: holds the value of a secret under a name that is not "
                           "secret, so it would be written in clear; put it in a secret-named key "
                           "(e.g. cluster.env.HF_TOKEN) or export it")
    return out


def check_names(cfg, jobs) -> List[str]:
    out = []
    if not rundir.NAME_RE.match(str(cfg.name)) or str(cfg.name) in (".", ".."):
        out.append(f"name={cfg.name!r}: a run's name is one plain directory name (letters, digits, . _ -; not "
                   "starting with . or -), so that its runs stay inside runs_root; e.g. name=munin_sft_v2")
    if not str(cfg.runs_root).strip():
        out.append("runs_root is empty; give a directory, e.g. runs_root=/scratch/project_465000670/runs")
    return out
