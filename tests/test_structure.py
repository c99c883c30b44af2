"""The layout's rules, checked: the import contract (and that it catches a violation), no heavy package on
the login node after any subcommand, stages as leaves, small modules, no dead schema key."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DATA, REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
HEAVY = ("torch", "transformers", "deepspeed", "trl", "peft", "datasets", "accelerate")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contract_holds():
    p = _lint_imports(REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout or "broken" not in p.stdout.split("Contracts:")[-1]


def test_the_import_contract_catches_a_stage_importing_a_stage_and_login_importing_torch(tmp_path):
    shutil.copytree(REPO / "dfm_hpc", tmp_path / "dfm_hpc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    sft = tmp_path / "dfm_hpc" / "stages" / "sft.py"
    sft.write_text(sft.read_text() + "\n\ndef _leak():\n    from dfm_hpc.stages import cpt  # noqa\n")
    status = tmp_path / "dfm_hpc" / "login" / "status.py"
    status.write_text(status.read_text() + "\n\ndef _heavy():\n    import torch  # noqa\n")
    p = _lint_imports(tmp_path)
    assert p.returncode == 1, p.stdout[-3000:]
    assert "dfm_hpc.stages.sft -> dfm_hpc.stages.cpt" in p.stdout
    assert "dfm_hpc.login is not allowed to import torch" in p.stdout
    assert "dfm_hpc.login.status -> torch" in p.stdout


def test_the_import_contract_catches_a_cycle_between_login_modules(tmp_path):
    """login/checks/keys.py importing launch (which imports checks), and checks/paths.py importing checks/stages
    (which imports paths): a cycle among login's modules and one inside login/checks/, each named."""
    shutil.copytree(REPO / "dfm_hpc", tmp_path / "dfm_hpc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    checks = tmp_path / "dfm_hpc" / "login" / "checks"
    for name, target in (("keys.py", "dfm_hpc.login import launch"),
                         ("paths.py", "dfm_hpc.login.checks import stages")):
        (checks / name).write_text((checks / name).read_text() + f"\n\ndef _cycle():\n    from {target}  # noqa\n")
    p = _lint_imports(tmp_path)
    assert p.returncode == 1, p.stdout[-3000:]
    assert "No cycles are allowed in dfm_hpc.login.\n" in p.stdout
    assert re.search(r"- \.(checks -> \.launch|launch -> \.checks) ", p.stdout), p.stdout[-3000:]
    assert "No cycles are allowed in dfm_hpc.login.checks.\n" in p.stdout
    assert re.search(r"- \.(paths -> \.stages|stages -> \.paths) ", p.stdout), p.stdout[-3000:]


def test_no_stage_imports_another_stage():
    hits = [f"{p.name}: {line.strip()}" for p in (REPO / "dfm_hpc" / "stages").glob("*.py")
            for line in p.read_text().splitlines() if re.search(r"from dfm_hpc\.stages|import dfm_hpc\.stages", line)]
    assert hits == []


def test_every_subcommand_leaves_the_login_node_light(tmp_path):
    """A dry run, then status/logs/rerun/cancel/list/compare/prefetch of it, in one process: none of them may
    pull torch & co. into sys.modules (the import contract checks the code; this checks what really runs)."""
    lumi = "'cluster=lumi', 'cluster.account=project_465000670'"
    code = f"""
import sys, glob
from dfm_hpc.__main__ import main
rcs = [main(['+experiment=munin_pipeline', {lumi}, 'dry_run=true'])]
run = sorted(glob.glob('runs/munin_pipeline/*'))[-1]
for argv in (['status', run], ['status'], ['list'], ['logs', run], ['compare', run],
             ['prefetch', '+experiment=munin_pipeline', {lumi}], ['rerun', run, 'dry_run=true'], ['cancel', run]):
    try:
        rcs.append(main(argv))
    except SystemExit as e:
        rcs.append(e.code)
print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), 'RC', rcs)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "HEAVY [] RC" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.split("RC ")[-1].startswith("[0, 0"), p.stdout[-2000:]  # the dry run and its status work


def test_modules_are_small():
    """At most ~450 lines, schema.py included: a module that needs more holds more than one concern (split it)."""
    big = []
    for p in (REPO / "dfm_hpc").rglob("*.py"):
        n = len(p.read_text().splitlines())
        if n > 450:
            big.append(f"{p.relative_to(REPO)}: {n} lines")
    assert big == []


def test_no_fixture_literal_in_a_module():
    """Fixtures are data files (dfm_hpc/tiny/*.json), not code: no module holds a huge string literal."""
    import ast

    for p in (REPO / "dfm_hpc").rglob("*.py"):
        tree = ast.parse(p.read_text())
        sizes = [len(n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert sum(s for s in sizes if s > 200) < 8000, f"{p}: {sum(sizes)} characters of string literals"


@pytest.mark.parametrize("stage", ["translate", "merge", "pii", "tokenize", "cpt", "sft", "dpo", "evaluate", "card"])
def test_every_stage_declares_run_cfg_ctx(stage):
    text = (REPO / "dfm_hpc" / "stages" / f"{stage}.py").read_text()
    assert re.search(r"^def run\(cfg: Config, ctx: StageContext\) -> None:", text, re.M), stage


def test_run_dirs_of_the_previous_version_still_show(tmp_path):
    """tests/data/runs_v0: a finished local demo and a LUMI dry run made by the flat-layout version
    (commit 2aac914; their config.yaml has keys the schema has since dropped, e.g. model.family)."""
    from helpers import dfm

    shutil.copytree(DATA / "runs_v0", tmp_path / "runs")
    demo = sorted((tmp_path / "runs" / "demo").iterdir())[0]
    sft = sorted((tmp_path / "runs" / "munin_sft").iterdir())[0]
    assert "family:" in (sft / "config.yaml").read_text()
    p = dfm("status", str(demo), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"demo .*COMPLETED", p.stdout) and re.search(r"demo_check .*COMPLETED", p.stdout)
    p = dfm("status", str(sft), cwd=tmp_path)
    assert p.returncode == 0 and "evaluate" in p.stdout, p.stdout + p.stderr
    p = dfm("list", cwd=tmp_path)
    assert p.returncode == 0 and "demo: COMPLETED" in p.stdout and "munin_sft" in p.stdout, p.stdout


def test_run_dirs_of_the_previous_version_rerun_and_compare(tmp_path):
    """Keys the schema retired (config_io.RETIRED: data.name, throughput.name, model.family, cpt.prep_shards, the
    model's shape model.hidden_size ...) are dropped even when a config is read strictly, so tests/data/runs_v0
    reruns; any other unknown key still stops a strict read."""
    from omegaconf.errors import ConfigKeyError

    from dfm_hpc import config_io

    from helpers import dfm, run_dirs

    shutil.copytree(DATA / "runs_v0", tmp_path / "runs")
    demo = sorted((tmp_path / "runs" / "demo").iterdir())[0]
    sft = sorted((tmp_path / "runs" / "munin_sft").iterdir())[0]
    for run in (demo, sft):
        old = (run / "config.yaml").read_text()
        assert "family:" in old and "prep_shards:" in old and re.search(r"^data:\n(  .*\n)*  name:", old, re.M)
        assert "num_kv_heads:" in old and "max_position_embeddings:" in old
        assert config_io.load_config(run).model.name  # strict
    p = dfm("rerun", str(demo), cwd=tmp_path)
    assert p.returncode == 0 and "nothing to rerun" in p.stdout + p.stderr, p.stdout + p.stderr
    p = dfm("rerun", str(sft), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (new,) = [d for d in run_dirs(tmp_path) if d not in (demo, sft)]
    new_text = (new / "config.yaml").read_text()
    assert "family:" not in new_text and "hidden_size:" not in new_text
    p = dfm("compare", str(demo), str(sft), cwd=tmp_path)
    # compare reads results.json only: these runs have none, which is its answer (exit 1), not an error
    assert p.returncode == 1 and "no evaluate results" in p.stdout and not p.stderr, p.stdout + p.stderr
    edited = tmp_path / "edited"
    edited.mkdir()
    text = (sft / "config.yaml").read_text()
    (edited / "config.yaml").write_text(text.replace("  family:", "  flavour: x\n  family:"))
    with pytest.raises(ConfigKeyError, match="flavour"):
        config_io.load_config(edited)
    assert "flavour" not in config_io.load_config(edited, lenient=True).model
