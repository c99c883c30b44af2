"""The locks in requirements/ (make lock) agree with pyproject.toml, and the dev venv is installed
from its lock; the snapshot records the locks' hashes and rerun warns when packages changed."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement

from helpers import REPO, dfm, run_dirs

# lock file -> (pyproject extras in it, packages left out, Python it is resolved for); as the Makefile's lock target
SETS = {
    "login.txt": ((), (), "3.11"),
    "dev.txt": (("dev", "demo", "translate", "train"), (), "3.11"),
    "lumi.txt": (("train", "translate"), ("torch",), "3.12"),
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str):
    """{name: version} and the names uv marks as coming straight from pyproject.toml."""
    pins, direct, current = {}, set(), None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s;]+)", line)
        if m:
            current = norm(m[1])
            pins[current] = m[2]
        elif current and "dfm-hpc (pyproject.toml)" in line:
            direct.add(current)
    return pins, direct


def lock_problems(pyproject: str, lock: str, extras, excluded, python: str):
    """Why pyproject.toml's requirements and a lock disagree (empty: they agree)."""
    project = tomllib.loads(pyproject)["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for e in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][e]]
    env = {"python_version": python, "python_full_version": python + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64"}
    reqs = [r for r in reqs if norm(r.name) not in excluded and (r.marker is None or r.marker.evaluate(env))]
    pins, direct = read_lock(lock)
    problems = []
    for r in reqs:
        have = pins.get(norm(r.name))
        if have is None:
            problems.append(f"{r.name} is required but not locked")
        elif not r.specifier.contains(have.split("+")[0], prereleases=True):
            problems.append(f"{r.name}{r.specifier} but the lock has {have}")
    for r in reqs:  # an extra (pkg[extra]) pulls more packages: with pkg installed, its metadata says which
        try:
            needs = [Requirement(x) for x in metadata.requires(r.name) or []]
        except metadata.PackageNotFoundError:
            continue
        for dep in needs:
            if r.extras and dep.marker is not None and not dep.marker.evaluate({**env, "extra": ""}) \
                    and any(dep.marker.evaluate({**env, "extra": e}) for e in r.extras) and norm(dep.name) not in pins:
                problems.append(f"{r.name}[{','.join(sorted(r.extras))}] needs {dep.name}, which is not locked")
    wanted = {norm(r.name) for r in reqs}
    problems += [f"{n} is locked as a direct requirement that pyproject.toml no longer has" for n in direct - wanted]
    problems += [f"{n} is excluded from this set but locked" for n in excluded if n in pins]
    return list(dict.fromkeys(problems))  # a requirement in two extras is one problem


def test_every_lock_agrees_with_pyproject():
    pyproject = (REPO / "pyproject.toml").read_text()
    for name, (extras, excluded, py) in SETS.items():
        lock = (REPO / "requirements" / name).read_text()
        assert "make lock" in lock.splitlines()[1], f"{name} was not written by make lock"
        assert lock_problems(pyproject, lock, extras, excluded, py) == [], f"{name}: run make lock"


def test_a_changed_pin_without_relocking_fails_the_check():
    pyproject = (REPO / "pyproject.toml").read_text()
    lock = (REPO / "requirements" / "dev.txt").read_text()
    extras, excluded, py = SETS["dev.txt"]
    newer = re.sub(r'"transformers>=[^"]*"', '"transformers>=99.0"', pyproject)
    assert newer != pyproject
    assert any("transformers" in p for p in lock_problems(newer, lock, extras, excluded, py))
    added = pyproject.replace('"rich>=13",', '"rich>=13",\n  "left-pad>=1",')
    assert any("left-pad" in p for p in lock_problems(added, lock, extras, excluded, py))
    with_extra = re.sub(r'"pytest>=8"', '"pytest[dev]>=8"', pyproject)  # pytest's dev extra: not locked
    assert with_extra != pyproject
    assert any(p.startswith("pytest[dev] needs") for p in lock_problems(with_extra, lock, extras, excluded, py))
    old_pin = re.sub(r"(?m)^trl==\S+", "trl==0.8.0", lock)
    assert any(p.startswith("trl") for p in lock_problems(pyproject, old_pin, extras, excluded, py))


def test_dev_lock_has_cpu_torch_and_the_lumi_lock_no_torch():
    dev, _ = read_lock((REPO / "requirements" / "dev.txt").read_text())
    lumi, _ = read_lock((REPO / "requirements" / "lumi.txt").read_text())
    assert dev["torch"] in ("2.13.0", "2.13.0+cpu")
    for pins in (dev, lumi):
        assert not [n for n in pins if n.startswith(("nvidia-", "triton", "cuda-"))], "a CUDA package is locked"
    assert "torch" not in lumi and "transformers" in lumi and "deepspeed" in lumi


def test_this_environment_is_installed_from_the_dev_lock():
    """make setup installs requirements/dev.txt; a package at another version means the venv was not
    (or a later pip install changed it: run make setup again after rm .venv/.installed)."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        import pytest

        pytest.skip("not the project's .venv")
    installed = {norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    text = (REPO / "requirements" / "dev.txt").read_text()
    pins, _ = read_lock(text)
    markers = {norm(m[1]): m[2] for m in re.finditer(r"(?m)^([A-Za-z0-9][\w.\-]*)==\S+\s*;\s*(.+)$", text)}
    wrong = [f"{n}: lock {v}, installed {installed.get(n)}" for n, v in pins.items()
             if installed.get(n) != v and (n not in markers or Marker(markers[n]).evaluate())]
    assert wrong == []


def test_snapshot_records_lock_hashes_and_rerun_warns_on_package_drift(tmp_path):
    assert dfm("+experiment=demo", "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    prov = json.loads((run / "provenance.json").read_text())
    assert set(prov["lock_sha256"]) == {"dev.txt", "login.txt", "lumi.txt", "harness.txt", "harness-lumi.txt"}
    assert all(len(h) == 64 for h in prov["lock_sha256"].values())
    quiet = dfm("rerun", str(run), cwd=tmp_path)
    assert quiet.returncode == 0 and "installed packages differ" not in quiet.stderr
    req = run / "requirements.txt"
    req.write_text(re.sub(r"(?m)^omegaconf==\S+", "omegaconf==2.0.0", req.read_text()))
    r = dfm("rerun", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "installed packages differ" in r.stderr and "omegaconf: 2.0.0 -> " in r.stderr


def test_the_harness_locks_hold_euroeval_and_inspect_and_the_harness_venv_installs_from_its_lock():
    """harness.txt: the .venv-euroeval of make test (Python 3.11, CPU torch, dfm_hpc's own dependencies for the
    tests run from it); harness-lumi.txt: the LUMI harness overlay (Python 3.12: EuroEval >= 17; the container's
    torch)."""
    here, _ = read_lock((REPO / "requirements" / "harness.txt").read_text())
    lumi, _ = read_lock((REPO / "requirements" / "harness-lumi.txt").read_text())
    assert {"euroeval", "inspect-ai", "pytest", "hydra-core"} <= set(here) and here["torch"].endswith("+cpu")
    assert {"euroeval", "inspect-ai"} <= set(lumi) and "torch" not in lumi
    assert int(lumi["euroeval"].split(".")[0]) >= 17
    make = (REPO / "Makefile").read_text()
    recipe = make[make.index("$(VENV)-euroeval/.installed:"):]
    assert "-r requirements/harness.txt" in recipe.split("touch $@")[0]
