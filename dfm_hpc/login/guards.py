"""Checkers of a composed config for hostile or impossible values (validate.CHECKS runs them).

Text that reaches a job script (shell.py), a run's name and root, secrets that would be written,
rules between keys, walltime formats, and local data files (in dry runs too: exists, right kind,
readable, a parseable first record). Each checker is `(cfg, jobs) -> list of problems`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from dfm_hpc import redact, rundir, sources
from dfm_hpc.login import shell
from dfm_hpc.registry import TRAINED_STAGES


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


_NAME_KEYS = ("name",)


def check_names(cfg, jobs) -> List[str]:
    out = []
    if not rundir.NAME_RE.match(str(cfg.name)) or str(cfg.name) in (".", ".."):
        out.append(f"name={cfg.name!r}: a run's name is one plain directory name (letters, digits, . _ -; not "
                   "starting with . or -), so that its runs stay inside runs_root; e.g. name=munin_sft_v2")
    if not str(cfg.runs_root).strip():
        out.append("runs_root is empty; give a directory, e.g. runs_root=/scratch/project_465000670/runs")
    return out


def _walltime(text: str) -> str:
    """Why a walltime is not Slurm's form, or ''. parse_time reads 99:99 as 1:40; Slurm would not."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        return "not [D-]HH:MM:SS"
    days, a, b, c = m.groups()
    rest = [x for x in (b, c) if x is not None]
    if any(len(x) != 2 or int(x) > 59 for x in rest):
        return "minutes and seconds are two digits, 00-59"
    if days is not None and int(a) > 23:
        return "with a day count the hours are 0-23"
    return ""


def check_times(cfg, jobs) -> List[str]:
    out = []
    for s in cfg.stages:
        why = _walltime(cfg[s].time)
        if why:
            out.append(f"{s}.time={cfg[s].time!r}: {why}; e.g. {s}.time=12:00:00 or 2-00:00:00")
    return out


def check_relations(cfg, jobs) -> List[str]:
    """Rules between keys (each key's own range is schema metadata: login/ranges.py)."""
    out: List[str] = []
    trained = [s for s in cfg.stages if s in TRAINED_STAGES]
    for s in trained:
        st = cfg[s]
        if not 0 <= st.warmup_steps <= max(st.max_steps, 0):
            out.append(f"{s}.warmup_steps={st.warmup_steps}: 0 to max_steps ({st.max_steps})")
        if s in ("sft", "dpo") and st.merge_adapter and cfg.peft.method == "none":
            out.append(f"{s}.merge_adapter=true with peft=none: there is no adapter to merge; use peft=lora or drop it")
    if trained and cfg.deepspeed.offload_params and cfg.deepspeed.stage != 3:
        out.append(f"deepspeed.offload_params=true needs ZeRO-3 (deepspeed.stage={cfg.deepspeed.stage}); use "
                   "deepspeed=zero3, or offload_optimizer only")
    m = cfg.merge
    if "merge" in cfg.stages and not 0 <= m.min_length_ratio < m.max_length_ratio:
        out.append(f"merge.min_length_ratio={m.min_length_ratio}: from 0 up to merge.max_length_ratio "
                   f"({m.max_length_ratio})")
    cl = cfg.cluster
    for j in jobs:
        if cl.scheduler == "slurm" and cl.signal_delay_s > j.minutes * 60 > 0:
            out.append(f"cluster.signal_delay_s={cl.signal_delay_s}: longer than {j.stage}'s walltime "
                       f"({j.minutes} min); the stop signal would come at the start")
            break
    if cl.system == "lumi":
        for j in jobs:
            if j.gpus_per_node == 0 and (j.partition or "").endswith("-g"):
                out.append(f"{j.stage}: gpus_per_node=0 on {j.partition}, a GPU partition (billed per GCD or node); "
                           f"give {j.stage}.gpus_per_node=1 or more")
    return out


# ---------------------------------------------------------------- data files

_COLUMNS = {"sft.dataset": ("messages",), "dpo.dataset": ("prompt", "chosen", "rejected"),
            "pii.input": ("text",), "data.corpus": ("text",), "data.eval_text": ("text",)}
_USERS = {"sft.dataset": "sft", "dpo.dataset": "dpo", "pii.input": "pii", "data.corpus": "cpt",
          "data.eval_text": "evaluate"}


def _file_problem(key: str, path: Path) -> str:
    """Why a local data file cannot be what `key` needs, or ''."""
    cols = _COLUMNS[key]
    if path.is_dir():
        if key in ("sft.dataset", "dpo.dataset") and (path / "config.yaml").is_file():
            return ""  # a run dir: its merge (or pii) view
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


def check_data_files(cfg, jobs) -> List[str]:
    from dfm_hpc.login.validate import _should_check_paths

    if not _should_check_paths(cfg):
        return []
    out = []
    for key, stage in _USERS.items():
        if stage not in cfg.stages:
            continue
        group, leaf = key.split(".")
        value = cfg[group][leaf]
        if not value or not sources.looks_local(str(value)):
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            if cfg.dry_run and key in ("sft.dataset", "dpo.dataset"):  # else check_finetune says it
                out.append(f"{key}={value!r} does not exist")
            continue
        why = _file_problem(key, path)
        if why:
            out.append(f"{key}={value!r} {why}")
    return out


CHECKS = [check_names, check_text, check_times, check_relations, check_data_files]
