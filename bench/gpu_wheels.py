"""The wheels bench/gpu.sh carries to the GPU machine, and the dry mode that proves they install there.

The GPU machine's image (bench/gpu_image.txt: Python 3.12, torch 2.11 CUDA 13, transformers 5.17, peft, accelerate)
has no trl, deepspeed, datasets, lm-eval, nor dfm_hpc's login side (hydra-core, omegaconf, submitit), and reaches
no package index: what is missing travels as wheels in ./.whl (git-ignored; named in the device call's `carry`;
64 MiB with the working tree). WANT names what to carry; their dependencies that the image lacks come along, each
at the version requirements/lumi.txt locks (one version of each). bench/gpu_wheels.json records the set (names,
versions, files, hashes, sizes, Requires-Dist), so the dry mode checks it offline, in make test.

    python bench/gpu_wheels.py build [--dir .whl]   # make gpu-wheels: download/build the set, rewrite the record
    python bench/gpu_wheels.py check [--dir .whl]   # the dry mode (bash bench/gpu.sh --dry); exit 1 on a problem
    python bench/gpu_wheels.py installed            # on the GPU machine after the install: real versions (JSON)

check: every carried wheel's tags and Requires-Python fit cp312 manylinux x86_64; every Requires-Dist is met by
the carried set or the image (by version where the image's is known); nothing carried shadows an image package;
the versions are the locks'; every third-party module dfm_hpc imports and every [project] dependency is there,
or NOT_CARRIED says why not; sizes fit. With --dir and the wheels there: the files are the record's, they
install with --no-deps into a scratch target, and each carried module imports where only the image's packages
and the carried ones can be found (the GPU stack, torch and what imports it, is blocked and noted, not imported).
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "bench" / "gpu_image.txt"
RECORD = REPO / "bench" / "gpu_wheels.json"
LOCKS = (REPO / "requirements" / "lumi.txt", REPO / "requirements" / "dev.txt")
WHEELS = REPO / ".whl"
WANT = {  # what the check runs that the image lacks
    "trl": "the pipeline's sft and dpo stages",
    "deepspeed": "the cpt_zero2/cpt_zero3 parts and the pipeline's ZeRO-3; ops not built (DS_BUILD_OPS=0)",
    "datasets": "dfm_hpc's data loading (trl needs it too)",
    "hydra-core": "dfm_hpc's login side: python -m dfm_hpc, the pipeline part",
    "omegaconf": "dfm_hpc's configs, in the ranks too",
    "submitit": "dfm_hpc.dist and the login side",
    "py3langid": "the merge stage's language check",
    "lm-eval": "the evaluate stage's scoring",
}
NOT_CARRIED = {  # dfm_hpc imports these, nothing the check runs needs them
    "ctranslate2": "the ctranslate2 translator backend: the check translates with hf (ctranslate2's wheel is ~40 MB)",
    "inspect-ai": "evaluate's inspect tasks run in the harness environment of their own, not in pipeline_tiny",
}
BUDGET_MIB = 32  # the carried wheels; the working tree travels with them under the device's 64 MiB
TREE_MIB = 64
PYTHON = "3.12.3"
ENV = {"python_version": PYTHON.rsplit(".", 1)[0], "python_full_version": PYTHON, "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
MANYLINUX = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64",
                                                                    "linux_x86_64"]
GPU_STACK = ("torch", "transformers", "triton", "peft", "accelerate")  # blocked in the import check
DOWNLOAD = ["--no-deps", "--only-binary=:all:", "--python-version", ENV["python_version"], "--implementation", "cp",
            "--abi", "cp312", "--abi", "abi3", "--abi", "none"] + [a for p in MANYLINUX[:-1] for a in ("--platform", p)]


def load_image(path: Path = IMAGE) -> dict:
    """{canonical name: version or None}; the 'python X' line is left out."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("python "):
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = ver or None
    return out


def lock_versions() -> dict:
    """{canonical name: version} from the compute-side lock, the dev lock for what it lacks."""
    out: dict = {}
    for path in reversed(LOCKS):
        for line in path.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
            if m:
                out[canonicalize_name(m[1])] = m[2]
    return out


def metadata(whl: Path) -> dict:
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = Parser().parsestr(z.read(name).decode())
        so = any(n.endswith((".so", ".pyd")) for n in z.namelist())
    return {"requires": msg.get_all("Requires-Dist") or [], "requires_python": msg.get("Requires-Python"),
            "compiled": so}


def needs(requires: list) -> list:
    """The Requirements that apply on the image (markers evaluated there, extras off)."""
    reqs = [Requirement(r) for r in requires]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(ENV)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def supported_tags() -> set:
    py = tuple(int(x) for x in ENV["python_version"].split("."))
    return set(tags.cpython_tags(py, abis=["cp312", "abi3", "none"], platforms=MANYLINUX)) | set(
        tags.compatible_tags(py, interpreter="cp312", platforms=MANYLINUX))


# ---------------------------------------------------------------- build (make gpu-wheels)

def _pip(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


def fetch(name: str, version: str, into: Path) -> tuple[Path, dict]:
    """A wheel for the image: PyPI's, else built here from the sdist with nothing compiled (DS_BUILD_OPS=0)."""
    p = _pip("download", "-q", *DOWNLOAD, "-d", str(into), f"{name}=={version}")
    if p.returncode == 0:
        (whl,) = _matching(into, name, version)
        return whl, {"source": "PyPI wheel", "sha256": sha256(whl)}
    with tempfile.TemporaryDirectory() as tmp:
        p = _pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", tmp, f"{name}=={version}")
        if p.returncode != 0:
            raise SystemExit(f"gpu_wheels: no wheel or sdist of {name}=={version}: {p.stderr[-800:]}")
        (sdist,) = Path(tmp).iterdir()
        env = {**os.environ, "DS_BUILD_OPS": "0", "SOURCE_DATE_EPOCH": "315532800"}
        p = _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into), str(sdist), env=env)
        if p.returncode != 0:
            raise SystemExit(f"gpu_wheels: building {sdist.name} failed: {p.stderr[-1500:]}")
        src = {"source": f"built here from {sdist.name} (DS_BUILD_OPS=0, no build isolation)",
               "sdist_sha256": sha256(sdist)}
    (whl,) = _matching(into, name, version)
    if not any(t in supported_tags() for t in parse_wheel_filename(whl.name)[3]) or metadata(whl)["compiled"]:
        raise SystemExit(f"gpu_wheels: {whl.name} built with compiled code: the image needs a pure-Python one")
    return whl, {**src, "sha256": sha256(whl)}


def _matching(into: Path, name: str, version: str) -> list:
    return [w for w in into.glob("*.whl")
            if parse_wheel_filename(w.name)[0] == canonicalize_name(name) and str(parse_wheel_filename(w.name)[1])
            == version]


def build(into: Path) -> dict:
    image, locks = load_image(), lock_versions()
    into.mkdir(exist_ok=True)
    carried: dict = {}
    todo = [canonicalize_name(n) for n in WANT]
    while todo:
        name = todo.pop(0)
        if name in carried or name in image:
            continue
        if name not in locks:
            raise SystemExit(f"gpu_wheels: {name} is needed on the image but no lock pins it (make lock)")
        whl, src = fetch(name, locks[name], into)
        meta = metadata(whl)
        carried[name] = {"version": locks[name], "file": whl.name, "bytes": whl.stat().st_size, **src,
                         "requires_python": meta["requires_python"], "requires": meta["requires"]}
        print(f"gpu_wheels: {whl.name} ({whl.stat().st_size / 2**20:.1f} MiB)", flush=True)
        todo += [canonicalize_name(r.name) for r in needs(meta["requires"])]
    keep = {c["file"] for c in carried.values()}
    for stale in into.glob("*.whl"):
        if stale.name not in keep:
            stale.unlink()
    record = {"python": PYTHON, "platforms": "manylinux x86_64", "image": IMAGE.name,
              "versions_from": [str(p.relative_to(REPO)) for p in LOCKS], "want": WANT,
              "not_carried": NOT_CARRIED, "wheels": dict(sorted(carried.items()))}
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    return record


# ---------------------------------------------------------------- check (the dry mode)

def imported_distributions(pkg: Path = REPO / "dfm_hpc") -> dict:
    """{top-level module: file} of the third-party modules dfm_hpc imports anywhere (at module level or in a
    function: a stage's imports count)."""
    out: dict = {}
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (n.split(".")[0] for n in names):
                if top not in sys.stdlib_module_names and top != pkg.name:
                    out.setdefault(top, str(path.relative_to(pkg.parent)))
    return out


@functools.lru_cache(maxsize=1)
def _module_dists() -> dict:
    import importlib.metadata as md

    return md.packages_distributions()


def module_dist(module: str) -> str:
    dists = _module_dists().get(module)  # this venv has every one; else the usual spelling
    return canonicalize_name(dists[0] if dists else module)


def check_record(record: dict, image: dict, locks: dict | None = None) -> tuple[list, list]:
    """(problems, unverified): the carried set against the image's package list, offline."""
    problems, unverified = [], []
    wheels = record["wheels"]
    have = supported_tags()
    for name, w in wheels.items():
        wname, wver, _, wtags = parse_wheel_filename(w["file"])
        if wname != name or str(wver) != w["version"]:
            problems.append(f"{w['file']}: not {name}=={w['version']}")
        if not any(t in have for t in wtags):
            problems.append(f"{w['file']}: no tag for CPython {PYTHON} manylinux x86_64")
        if w.get("requires_python") and not SpecifierSet(w["requires_python"]).contains(PYTHON):
            problems.append(f"{name}: Requires-Python {w['requires_python']} excludes the image's {PYTHON}")
        if name in image:
            problems.append(f"{name}: carried, but the image has it{f' ({image[name]})' if image[name] else ''}: "
                            "two versions, the carried one shadows the image's")
        if locks is not None and locks.get(name) != w["version"]:
            problems.append(f"{name}=={w['version']}: the locks say {locks.get(name)} (make gpu-wheels)")
        for req in needs(w["requires"]):
            dep = canonicalize_name(req.name)
            if dep in wheels:
                if not req.specifier.contains(wheels[dep]["version"], prereleases=True):
                    problems.append(f"{name} needs {req}: carried {wheels[dep]['version']}")
            elif dep in image:
                if image[dep] and not req.specifier.contains(image[dep], prereleases=True):
                    problems.append(f"{name} needs {req}: the image has {image[dep]}")
                elif not image[dep] and req.specifier:
                    unverified.append(f"{name} needs {req}: the image's version is not recorded")
            else:
                problems.append(f"{name} needs {req}: neither carried nor in the image")
    for name in WANT:
        if canonicalize_name(name) not in wheels and canonicalize_name(name) not in image:
            problems.append(f"{name} ({WANT[name]}): not carried")
    total = sum(w["bytes"] for w in wheels.values())
    if total > BUDGET_MIB * 2**20:
        problems.append(f"the carried wheels are {total / 2**20:.1f} MiB, over the {BUDGET_MIB} MiB budget")
    if total + tree_bytes() > TREE_MIB * 2**20:
        problems.append(f"the wheels and the working tree are {(total + tree_bytes()) / 2**20:.1f} MiB: the device "
                        f"takes {TREE_MIB} MiB")
    return problems, unverified


def tree_bytes() -> int:
    """What travels besides the wheels: the tracked files (0 where git is not there)."""
    p = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    files = [REPO / f for f in p.stdout.decode().split("\0") if f] if p.returncode == 0 else []
    return sum(f.stat().st_size for f in files if f.is_file())


def check_dfm_hpc(record: dict, image: dict) -> list:
    """Every third-party module dfm_hpc imports, and every [project] dependency, is on the image or carried."""
    import tomllib

    there = set(image) | set(record["wheels"])
    problems = [f"dfm_hpc imports {mod} ({where}): {module_dist(mod)} is neither on the image nor carried"
                for mod, where in imported_distributions().items()
                if module_dist(mod) not in there and module_dist(mod) not in NOT_CARRIED]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    problems += [f"dfm_hpc's dependency {d}: neither on the image nor carried" for d in deps
                 if canonicalize_name(Requirement(d).name) not in there]
    return problems


_IMPORT = r"""
import importlib, json, sys
target, skip, mods = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def why(e):  # a module the check leaves out, anywhere in the chain (libraries re-raise import errors as their own)
    while e is not None:
        top = (getattr(e, "name", None) or "").split(".")[0]
        if top in skip:
            return f"{skip[top]}: {top}"
        e = e.__cause__ or e.__context__
out = {}
for m in mods:
    try:
        f = getattr(importlib.import_module(m), "__file__", "") or ""
        out[m] = "ok" if f.startswith(target) else f"imported from {f}, not the carried wheel"
    except Exception as e:
        out[m] = f"skipped ({why(e)})" if why(e) else f"failed: {type(e).__name__}: {e}"
print(json.dumps(out))
"""


def image_site(image: dict, into: Path) -> list:
    """A stand-in for the image's site-packages: links to this environment's copies of the image's packages (their
    modules and .dist-info; other versions than the image's, same names), and to what those copies need here
    themselves (the image's own are taken to be consistent); the GPU stack left out. Returns the image packages
    this environment lacks."""
    import importlib.metadata as md

    dists = {}
    for d in md.distributions():
        dists.setdefault(canonicalize_name(d.metadata["Name"] or ""), d)
    todo, found = [n for n in image if n in dists], set()
    while todo:
        name = todo.pop()
        if name in found or name in GPU_STACK:
            continue
        found.add(name)
        d = dists[name]
        todo += [canonicalize_name(r.name) for r in needs(d.requires or []) if canonicalize_name(r.name) in dists]
        site = Path(d.locate_file(""))
        for first in {f.parts[0] for f in d.files or [] if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            if (site / first).exists() and not (into / first).exists():
                (into / first).symlink_to(site / first)
    return sorted(set(image) - found - set(GPU_STACK))


def check_wheels(record: dict, image: dict, folder: Path) -> tuple[list, dict]:
    """The wheels in `folder` are the record's; they install with --no-deps into a scratch target; each carried
    module imports there in a Python (-S) that sees only the stdlib, the image's packages and the carried ones."""
    problems = []
    files = {w.name for w in folder.glob("*.whl")}
    want = {w["file"]: (n, w) for n, w in record["wheels"].items()}
    problems += [f"{folder.name}/{f}: not in {RECORD.name}" for f in sorted(files - set(want))]
    problems += [f"{folder.name}/{f}: missing (make gpu-wheels)" for f in sorted(set(want) - files)]
    for f in sorted(files & set(want)):
        name, w = want[f]
        if w["source"] == "PyPI wheel" and sha256(folder / f) != w["sha256"]:
            problems.append(f"{f}: sha256 differs from {RECORD.name}'s")
        if metadata(folder / f)["requires"] != w["requires"]:
            problems.append(f"{f}: Requires-Dist differs from {RECORD.name}'s")
    if problems:
        return problems, {}
    with tempfile.TemporaryDirectory() as tmp:
        target, site = Path(tmp, "target"), Path(tmp, "image")
        p = _pip("install", "-q", "--no-index", "--no-compile", "--no-cache-dir", "--target", str(target),
                 *DOWNLOAD, *[str(folder / f) for f in sorted(files)])  # as on the image: cp312, manylinux
        if p.returncode != 0:
            return [f"pip install --no-deps --target failed: {p.stderr[-1500:]}"], {}
        site.mkdir()
        absent = image_site(image, site)
        tops = {n: sorted(_top_levels(folder / w["file"])) for n, w in record["wheels"].items()}
        skip = {m: "GPU stack" for m in GPU_STACK}
        if sys.version_info[:2] != (3, 12):  # a cp312 binary cannot load into this Python
            skip.update({m: f"cp312 binary, this Python is {sys.version_info[0]}.{sys.version_info[1]}"
                         for n, w in record["wheels"].items() if "cp312" in w["file"] for m in tops[n]})
        skip.update({m.replace("-", "_"): "an image package this environment lacks" for m in absent})
        mods = sorted({m for ms in tops.values() for m in ms})
        p = subprocess.run([sys.executable, "-S", "-c", _IMPORT, str(target), json.dumps(skip), json.dumps(mods)],
                           capture_output=True, text=True, timeout=300, env={
                               **os.environ, "PYTHONPATH": f"{target}{os.pathsep}{site}", "HF_HUB_OFFLINE": "1"})
        if p.returncode != 0:
            return [f"import check crashed: {p.stderr[-1500:]}"], {}
        imports = json.loads(p.stdout.strip().splitlines()[-1])
    problems += [f"import {m}: {r}" for m, r in imports.items() if not (r == "ok" or r.startswith("skipped"))]
    return problems, imports


def _top_levels(whl: Path) -> set:
    """The importable top-level names in a wheel (its paths' first parts; .dist-info and .data left out)."""
    with zipfile.ZipFile(whl) as z:
        firsts = {n.split("/", 1)[0] for n in z.namelist()}
    tops = {f.split(".", 1)[0] for f in firsts if not f.endswith((".dist-info", ".data", ".pth"))}
    return {t for t in tops if t.isidentifier() and not t.startswith("_")} - {"tests", "test", "docs", "examples"}


# ---------------------------------------------------------------- on the GPU machine

def installed(record: dict) -> dict:
    """After the install, with the image's real versions: the carried wheels' Requires-Dist checked against them."""
    import importlib.metadata as md

    image = {}
    for d in md.distributions():
        image.setdefault(canonicalize_name(d.metadata["Name"] or ""), d.version)
    carried = {n: image.get(n) for n in record["wheels"]}
    problems = [f"{n}: installed {v}, carried {record['wheels'][n]['version']}" for n, v in carried.items()
                if v != record["wheels"][n]["version"]]
    for name, w in record["wheels"].items():
        for req in needs(w["requires"]):
            have = image.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: {have or 'not installed'}")
    return {"python": sys.version.split()[0], "problems": problems,
            "image": {n: image.get(n) for n in ("torch", "transformers", "peft", "accelerate", "numpy",
                                                "typing-extensions", "fsspec", "pyarrow", "huggingface-hub")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["build", "check", "installed"])
    ap.add_argument("--dir", type=Path, default=None, help="the wheels' folder (build: .whl)")
    args = ap.parse_args(argv)
    if args.mode == "build":
        record = build(args.dir or WHEELS)
        total = sum(w["bytes"] for w in record["wheels"].values())
        print(f"gpu_wheels: {len(record['wheels'])} wheels, {total / 2**20:.1f} MiB in {args.dir or WHEELS}; "
              f"{RECORD.relative_to(REPO)} rewritten")
        args.dir = args.dir or WHEELS
    record = json.loads(RECORD.read_text())
    if args.mode == "installed":
        print(json.dumps(installed(record)))
        return 0
    image = load_image()
    problems, unverified = check_record(record, image, lock_versions())
    problems += check_dfm_hpc(record, image)
    imports: dict = {}
    if args.dir and not problems:
        more, imports = check_wheels(record, image, args.dir)
        problems += more
    total = sum(w["bytes"] for w in record["wheels"].values())
    print(f"gpu_wheels check: {len(record['wheels'])} carried wheels, {total / 2**20:.1f} MiB, against "
          f"{IMAGE.name} ({len(image)} packages, Python {PYTHON})")
    for m, r in imports.items():
        print(f"  import {m}: {r}")
    for u in unverified:
        print(f"  unverified: {u}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    print("gpu_wheels check: " + ("FAILED" if problems else "ok" + ("" if args.dir else
                                                                     " (the record only: no --dir)")))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
