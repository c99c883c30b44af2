"""`python -m dfm_hpc --help` (and -h): usage, experiments, config groups, where the docs are.

dfm_hpc's own help, read from conf/ as files: Hydra's --help lists the groups by composing the config
store about 150 times (seconds on a login node). No Hydra, no OmegaConf, no rich here; `--hydra-help`,
`--cfg` and `--info` stay Hydra's. The one copy of the usage text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from dfm_hpc import CONF_DIR

USAGE = """\
dfm_hpc: Danish Foundation Models jobs on LUMI (Hydra config -> validated plan -> Slurm jobs).

Usage:
  python -m dfm_hpc +experiment=NAME [key=value ...]        plan, snapshot and submit
  python -m dfm_hpc +experiment=NAME dry_run=true            render sbatch scripts, submit nothing
  python -m dfm_hpc -m +experiment=NAME sft.lr=1e-4,2e-4     sweep: one run dir per point, one job array
  python -m dfm_hpc +experiment=NAME --cfg job               print the composed config
  python -m dfm_hpc status [RUN] | logs RUN [--stage S] [--rank R] [--follow]
  python -m dfm_hpc cancel RUN | rerun RUN [--fresh] [key=value ...] | list
  python -m dfm_hpc compare RUN [RUN ...]                    evaluation results side by side
  python -m dfm_hpc export-evals RUN [--out DIR]             evaluation results as every-eval-ever JSON
  python -m dfm_hpc prefetch +experiment=NAME [--download]   hub models/datasets the jobs need (offline)
  python -m dfm_hpc calibrate RUN                            the throughput a finished run measured
  python -m dfm_hpc chat RUN [--stage dpo|sft|cpt|base]      talk to a run's model in its own chat template
  python -m dfm_hpc SUBCOMMAND --help                        a subcommand's options
"""

FOOTER = """\
Any key: key=value (e.g. sft.lr=2e-4); a key the config lacks: +key=value. The cluster is
$DFM_CLUSTER if set, lumi on LUMI, else the default above.
Docs: docs/config.md (every key, its type, default and meaning), docs/lumi.md, docs/architecture.md.
Hydra's own flags: --hydra-help, --cfg job|hydra|all, --info [defaults|config|...], -m (--multirun).
"""


def _yaml(path: Path):
    import yaml

    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def experiments(conf: Path = CONF_DIR) -> Dict[str, str]:
    """Experiment -> its `description:` ("" without one)."""
    out = {}
    for f in sorted((conf / "experiment").glob("*.yaml")):
        data = _yaml(f)
        out[f.stem] = str(data.get("description") or "") if isinstance(data, dict) else ""
    return out


def defaults(conf: Path = CONF_DIR) -> Dict[str, str]:
    """Group -> the option config.yaml's defaults list picks (Hydra's own hydra/... overrides left out)."""
    out = {}
    for entry in (_yaml(conf / "config.yaml") or {}).get("defaults") or []:
        for key, option in entry.items() if isinstance(entry, dict) else ():
            if not key.startswith("override") and option is not None:
                out[key.split()[-1]] = str(option)  # "optional model" -> model
    return out


def groups(conf: Path = CONF_DIR) -> Dict[str, List[str]]:
    """Config group -> its options: conf/<group>/*.yaml, and the option the defaults list picks (it may
    live in Hydra's config store rather than in a file)."""
    found = {d.name: {p.stem for p in d.glob("*.yaml")} for d in conf.iterdir() if any(d.glob("*.yaml"))}
    for group, option in defaults(conf).items():
        found.setdefault(group, set()).add(option)
    return {group: sorted(options) for group, options in sorted(found.items())}


def text(conf: Path = CONF_DIR) -> str:
    exps = experiments(conf)
    width = max(map(len, exps), default=0) + 2
    lines = [USAGE, "Experiments (+experiment=NAME):"]
    lines += [f"  {name:<{width}}{desc}".rstrip() for name, desc in exps.items()]
    grps, picked = {g: o for g, o in groups(conf).items() if g != "experiment"}, defaults(conf)
    lines += ["", "Config groups (GROUP=OPTION):"]
    width = max(map(len, grps), default=0) + 2
    for group, options in grps.items():
        shown = [f"{o} (default)" if o == picked.get(group) and len(options) > 1 else o for o in options]
        lines.append(f"  {group:<{width}}{', '.join(shown)}")
    return "\n".join(lines) + "\n\n" + FOOTER
