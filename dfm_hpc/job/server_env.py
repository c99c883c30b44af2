"""The model server's environment and runtime, as LUMI runs vLLM (issue #23 item 1; sources in docs/lumi.md,
"The model server's environment").

- GPUs: vLLM on ROCm picks its devices by HIP_VISIBLE_DEVICES and aborts when only ROCR_VISIBLE_DEVICES is
  set (LAIF recipes issue #6). The LAIF image's entrypoint copies ROCR into HIP only under `singularity run`
  *and* MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1, and the server is a child of the rank, past any entrypoint: so
  the server gets HIP from ROCR here, with ROCR unset (HIP indices then name the same GCDs; DFM's dfm-evals
  does the same), and MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1 for any container it starts itself.
- Compile: off unless `evaluate.server_compile` (LAIF's vLLM tests: TORCH_COMPILE_DISABLE=1; dfm-evals:
  TORCHDYNAMO_DISABLE=1): one evaluation does not repay the compile time, and ROCm's inductor path is the
  least tested.
- Caches: vLLM's, Triton's and inductor's under the job's stage dir (LUMI's AI guide puts VLLM_CACHE_ROOT on
  /scratch), never $HOME (20 GB, 100k files).

`server_env` is pure: the test renders LUMI's case on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional

COMPILE_OFF = {"TORCH_COMPILE_DISABLE": "1", "TORCHDYNAMO_DISABLE": "1"}
# cache variable -> its folder under the cache root (vLLM's root holds its torch.compile cache and
# model-info cache; the rest fall back to ~/.cache or ~/.triton). Not XDG_CACHE_HOME: without HF_HOME the
# hub cache is under it, and an offline server would no longer find its models
CACHES = {"VLLM_CACHE_ROOT": "vllm", "VLLM_CONFIG_ROOT": "vllm-config", "TRITON_CACHE_DIR": "triton",
          "TORCHINDUCTOR_CACHE_DIR": "inductor", "OUTLINES_CACHE_DIR": "outlines"}


def server_env(environ: Mapping[str, str], cache_root: Path, compile: bool = False,
               rocm: bool = False) -> Dict[str, Optional[str]]:
    """The changes to `environ` the model server starts with: {name: value}, None = unset.

    rocm: the GPU variables (HIP_VISIBLE_DEVICES from ROCR_VISIBLE_DEVICES when only ROCR is set, ROCR
    then unset; MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1). compile=False: torch.compile and dynamo off. Caches:
    under `cache_root`, unless already set to a place outside $HOME."""
    out: Dict[str, Optional[str]] = {}
    if rocm:
        out["MAP_HIP_TO_ROCR_VISIBLE_DEVICES"] = "1"
        rocr, hip = environ.get("ROCR_VISIBLE_DEVICES"), environ.get("HIP_VISIBLE_DEVICES")
        if rocr and not hip:
            out["HIP_VISIBLE_DEVICES"], out["ROCR_VISIBLE_DEVICES"] = rocr, None
    if not compile:
        out.update(COMPILE_OFF)
    home = environ.get("HOME")
    for name, sub in CACHES.items():
        have = environ.get(name)
        if not have or (home and _under(have, home)):
            out[name] = str(Path(cache_root) / sub)
    return out


def _under(path: str, root: str) -> bool:
    """`path` (~ meaning `root`, the server's $HOME) is `root` or below it."""
    p = root + path[1:] if path == "~" or path.startswith("~/") else path
    p, r = os.path.abspath(p), os.path.abspath(root)
    return p == r or p.startswith(r.rstrip("/") + "/")


def apply(environ: Mapping[str, str], changes: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """`environ` with `changes` made (None removes the variable)."""
    env = dict(environ)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def is_rocm() -> bool:
    """This job's torch is a ROCm build (LUMI's containers)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(getattr(torch.version, "hip", None))


def versions() -> Dict:
    """{vllm, transformers, torch, hip_version, cuda_version} in this interpreter (None: not installed)."""
    from importlib import metadata

    out: Dict = {}
    for pkg in ("vllm", "transformers", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import torch

        out["hip_version"] = getattr(torch.version, "hip", None)
        out["cuda_version"] = getattr(torch.version, "cuda", None)
    except Exception as e:  # noqa: BLE001 - a broken torch is what the log should say
        out["torch_error"] = repr(e)[:200]
    return out


def interpreter(exe: str) -> str:
    """The Python that runs the console script `exe` (its shebang), else this one."""
    path = shutil.which(exe)
    if path:
        try:
            with open(path, "rb") as f:
                first = f.readline(512).decode(errors="replace").strip()
        except OSError:
            first = ""
        if first.startswith("#!") and "python" in first:
            return first[2:].split()[0]
    return sys.executable


def runtime_versions(exe: str, env: Optional[Mapping[str, str]] = None, timeout_s: float = 120) -> Dict:
    """{vllm, transformers, torch, hip_version, cuda_version} as the server's own interpreter sees them (vLLM
    may live in another environment than the job's). In this process when it is the same interpreter."""
    py = interpreter(exe)
    if os.path.realpath(py) == os.path.realpath(sys.executable):
        return versions()
    try:  # this file needs only the standard library: the other interpreter runs it as a script
        r = subprocess.run([py, __file__], capture_output=True, text=True, timeout=timeout_s,
                           env=dict(env) if env is not None else None)
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": f"{py}: {e}"[:300]}


def describe(versions: Mapping) -> str:
    """One line for the logs: vllm 0.x, transformers 4.x, torch 2.x, ROCm (HIP) 6.x / CUDA 12.x."""
    if "error" in versions:
        return f"versions unknown ({versions['error']})"
    parts = [f"{k} {versions[k]}" for k in ("vllm", "transformers", "torch") if versions.get(k)]
    if versions.get("hip_version"):
        parts.append(f"ROCm (HIP) {versions['hip_version']}")
    elif versions.get("cuda_version"):
        parts.append(f"CUDA {versions['cuda_version']}")
    else:
        parts.append("no GPU runtime (CPU torch)" if versions.get("torch") else "no torch")
    return ", ".join(parts)


if __name__ == "__main__":
    print(json.dumps(versions()))
