"""`python -m dfm_hpc --help`: dfm_hpc's own, read from conf/'s files; Hydra's flags still Hydra's."""

from __future__ import annotations

import subprocess
import sys

import yaml

from dfm_hpc.__main__ import SUBCOMMANDS
from dfm_hpc.login import usage

from helpers import REPO, dfm, run_dirs

CONF = REPO / "conf"


def _line(out: str, section: str, name: str) -> str:
    """The line of `name` in the paragraph that starts with `section`."""
    (para,) = [p for p in out.split("\n\n") if p.startswith(section)]
    (line,) = [ln for ln in para.splitlines() if ln.split()[:1] == [name]]
    return line


def test_help_lists_usage_experiments_groups_and_docs(tmp_path):
    h = dfm("--help", cwd=tmp_path)
    assert h.returncode == 0, h.stderr
    assert "Usage:" in h.stdout and "python -m dfm_hpc +experiment=NAME [key=value ...]" in h.stdout
    for f in sorted((CONF / "experiment").glob("*.yaml")):
        description = yaml.safe_load(f.read_text()).get("description", "")
        assert description in _line(h.stdout, "Experiments", f.stem), f.stem
    picked = {k: v for e in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"] if isinstance(e, dict)
              for k, v in e.items() if not k.startswith("override")}
    in_files = {d.name: [p.stem for p in d.glob("*.yaml")] for d in CONF.iterdir() if d.is_dir()}
    for group in (set(in_files) | set(picked)) - {"experiment"}:
        options = _line(h.stdout, "Config groups", group).split(None, 1)[1].split(", ")
        assert {o.removesuffix(" (default)") for o in options} == set(in_files.get(group, [])) | {picked[group]}
        if len(options) > 1:
            assert f"{picked[group]} (default)" in options, group
    assert "docs/config.md" in h.stdout and "--hydra-help" in h.stdout
    assert dfm("-h", cwd=tmp_path).stdout == h.stdout


def test_help_never_launches_nor_validates(tmp_path):
    h = dfm("+experiment=munin_sft", "cluster=lumi", "--help", cwd=tmp_path, env={"DFM_CLUSTER": "nonesuch"})
    assert h.returncode == 0 and "Usage:" in h.stdout, h.stderr
    assert run_dirs(tmp_path) == []


def test_usage_names_every_subcommand():
    for cmd in SUBCOMMANDS:
        assert f"python -m dfm_hpc {cmd}" in usage.USAGE or f"| {cmd}" in usage.USAGE, cmd


def test_groups_come_from_files_and_the_defaults_list(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "plain.yaml").write_text("# @package _global_\nname: plain\n")
    (tmp_path / "experiment" / "quoted.yaml").write_text("description: 'a: b'\n")
    (tmp_path / "model").mkdir()
    for m in ("big", "small"):
        (tmp_path / "model" / f"{m}.yaml").write_text("{}\n")
    (tmp_path / "config.yaml").write_text(
        "defaults:\n  - base_config\n  - model: small\n  - stage: default\n  - override hydra/job_logging: none\n"
        "  - _self_\n")
    assert usage.groups(tmp_path) == {"experiment": ["plain", "quoted"], "model": ["big", "small"],
                                      "stage": ["default"]}
    assert usage.experiments(tmp_path) == {"plain": "", "quoted": "a: b"}
    assert _line(usage.text(tmp_path), "Config groups", "model") == "  model  big, small (default)"
    assert _line(usage.text(tmp_path), "Config groups", "stage") == "  stage  default"  # one option: no mark


def test_help_imports_no_hydra_and_nothing_heavy(tmp_path):
    code = ("import sys\nfrom dfm_hpc.__main__ import main\nrc = main(['--help'])\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'submitit', 'rich', "
            "'torch', 'transformers', 'datasets', 'deepspeed', 'trl', 'peft', 'accelerate'))\n"
            "print('LOADED', rc, loaded)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert "Usage:" in p.stdout and "LOADED 0 []" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]


def test_hydra_flags_stay_hydras(tmp_path):
    h = dfm("--hydra-help", cwd=tmp_path)
    assert h.returncode == 0 and "== Flags ==" in h.stdout and "--cfg,-c" in h.stdout, h.stderr
    c = dfm("+experiment=munin_sft", "--cfg", "job", cwd=tmp_path)
    assert c.returncode == 0 and "name: munin_sft" in c.stdout, c.stderr
    s = dfm("status", "--help", cwd=tmp_path)  # a subcommand's own argparse help
    assert s.returncode == 0 and "--runs-root" in s.stdout
    assert run_dirs(tmp_path) == []
