"""The GPU check's dry mode (bench/gpu_wheels.py; `bash bench/gpu.sh --dry`): the wheels it carries to the GPU
machine, as bench/gpu_wheels.json records them, against the image's package list (bench/gpu_image.txt), offline.
The wheels themselves are not here in CI (make gpu-wheels downloads them): the install-and-import half is checked
on two wheels made here."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
import zipfile

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_wheels  # noqa: E402


@pytest.fixture(scope="module")
def record():
    return json.loads(gpu_wheels.RECORD.read_text())


@pytest.fixture(scope="module")
def image():
    return gpu_wheels.load_image()


def test_the_carried_set_installs_on_the_image(record, image):
    """Every Requires-Dist met by the image or the carried set, cp312 manylinux tags, the locks' versions, no
    image package shadowed, everything dfm_hpc imports there (or said why not), under the size budget."""
    problems, unverified = gpu_wheels.check_record(record, image, gpu_wheels.lock_versions())
    problems += gpu_wheels.check_dfm_hpc(record, image)
    assert problems == []
    assert {"trl", "deepspeed", "datasets", "hydra-core", "omegaconf", "submitit"} <= set(record["wheels"])
    assert not {"torch", "transformers", "peft", "accelerate"} & set(record["wheels"])  # the image's own
    ds = record["wheels"]["deepspeed"]
    assert ds["file"].endswith("-py3-none-any.whl") and "DS_BUILD_OPS=0" in ds["source"]
    assert sum(w["bytes"] for w in record["wheels"].values()) < gpu_wheels.BUDGET_MIB * 2**20
    assert image["torch"] == "2.11.0" and image["transformers"] == "5.17.0" and "deepspeed" not in image
    assert all("version is not recorded" in u for u in unverified)


def test_dry_mode_names_what_would_not_install(record, image):
    broken = copy.deepcopy(record)
    del broken["wheels"]["dill"]  # datasets needs it, the image lacks it
    broken["wheels"]["numpy"] = {**broken["wheels"]["hjson"], "file": "numpy-2.5.2-cp311-cp311-manylinux_2_17_x86_64"
                                                                      ".whl", "version": "2.5.2", "requires": []}
    broken["wheels"]["trl"] = {**broken["wheels"]["trl"], "requires": ["transformers>=6"]}
    broken["wheels"]["hjson"] = {**broken["wheels"]["hjson"], "version": "3.0.0",
                                 "file": "hjson-3.0.0-py3-none-any.whl"}
    problems, _ = gpu_wheels.check_record(broken, image, gpu_wheels.lock_versions())
    text = "\n".join(problems)
    assert "datasets needs dill<0.4.2,>=0.3.0: neither carried nor in the image" in text
    assert "numpy-2.5.2-cp311-cp311-manylinux_2_17_x86_64.whl: no tag for CPython 3.12.3" in text
    assert "numpy: carried, but the image has it (2.5.2)" in text
    assert "trl needs transformers>=6: the image has 5.17.0" in text
    assert "hjson==3.0.0: the locks say 3.1.0" in text


def test_dfm_hpc_imports_are_checked(record, image):
    imports = gpu_wheels.imported_distributions()
    assert imports["hydra"].startswith("dfm_hpc/") and "ctranslate2" in imports
    lean = copy.deepcopy(record)
    del lean["wheels"]["submitit"]
    assert any("dfm_hpc imports submitit" in p for p in gpu_wheels.check_dfm_hpc(lean, image))
    assert any("dependency submitit" in p for p in gpu_wheels.check_dfm_hpc(lean, image))


def _wheel(folder, name: str, body: str, requires=()):
    """A pure-Python wheel: one module, its METADATA, WHEEL and RECORD."""
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n" +
             "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    rows = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
            f"{len(t.encode())}" for p, t in files.items()]
    files[f"{info}/RECORD"] = "\n".join(rows + [f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, t in files.items():
            z.writestr(p, t)
    return path, {"version": "1.0", "file": path.name, "bytes": path.stat().st_size, "source": "PyPI wheel",
                  "sha256": gpu_wheels.sha256(path), "requires_python": None, "requires": list(requires)}


def test_wheels_install_and_import_with_only_the_image_visible(tmp_path, image):
    """The carried modules import in a Python that sees the stdlib, the image's packages (yaml) and the carried
    ones: a module needing a package that is here but not on the image (jsonschema) fails; torch is skipped."""
    wheels = {}
    for name, body, req in (("carried_ok", "import yaml\n", ["pyyaml"]),
                            ("carried_gpu", "import torch\n", ["torch"]),
                            ("carried_bad", "import jsonschema\n", [])):
        _, wheels[name] = _wheel(tmp_path, name, body, req)
    problems, imports = gpu_wheels.check_wheels({"wheels": wheels}, image, tmp_path)
    assert imports["carried_ok"] == "ok"
    assert imports["carried_gpu"] == "skipped (GPU stack: torch)"
    assert imports["carried_bad"].startswith("failed: ModuleNotFoundError") and "jsonschema" in imports["carried_bad"]
    assert problems == [f"import carried_bad: {imports['carried_bad']}"]
    (tmp_path / "stray-1.0-py3-none-any.whl").write_bytes(b"")
    problems, _ = gpu_wheels.check_wheels({"wheels": wheels}, image, tmp_path)
    assert problems == [f"{tmp_path.name}/stray-1.0-py3-none-any.whl: not in gpu_wheels.json"]
