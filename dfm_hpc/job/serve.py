"""An OpenAI-compatible model server inside the evaluate job: start it, wait for health, always stop it.

DFM's own LUMI evaluation (dfm-evals, lumi/run_euroeval.sbatch) serves the base model and the run's
LoRA adapters with vLLM's OpenAI server in the job and points the benchmark clients at
http://127.0.0.1:PORT/v1. `vllm` is that server (LUMI's AI Factory image ships it for MI250X);
`transformers` is `transformers serve` (transformers' own CLI, FastAPI + uvicorn), the stand-in that
runs the same path on a CPU. Whatever happens in the `with` block (success, an exception, Slurm's
pre-timeout USR2, scancel's TERM) the server's whole process group is stopped, and a dying parent
takes the server with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc.job.rank import Preempted


@dataclass
class Served:
    """What one server holds: {served name: model path}; `base` is the model vLLM loads, the rest are
    its LoRA adapters (vLLM) (transformers serve: one model)."""

    base: str
    names: Dict[str, str] = field(default_factory=dict)


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str) -> str:
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def servers(backend: str, specs: List[Tuple[str, str]], merged: Dict[str, str]) -> List[Served]:
    """Which server holds which model. vLLM: one per base, its adapters as LoRA modules under their
    names; an adapter on an adapter (DPO on SFT) cannot be stacked, so it is served merged by a
    server of its own. transformers serve: a server per model (preloaded, answering to any name),
    adapters merged."""
    if backend == "transformers":
        return [Served(base=merged.get(n, p), names={n: merged.get(n, p)}) for n, p in specs]
    groups: Dict[str, Served] = {}
    for name, path in specs:
        if is_adapter(path) and not is_adapter(adapter_base(path)):
            base = adapter_base(path)
            groups.setdefault(base, Served(base=base, names={})).names[name] = path
        else:
            full = merged.get(name, path)
            groups.setdefault(full, Served(base=full, names={})).names[name] = full
    for g in groups.values():  # vLLM names the base too
        if g.base not in g.names.values():
            g.names = {"_base": g.base, **g.names}
    return list(groups.values())


def command(backend: str, served: Served, port: int, dtype: str, extra: List[str]) -> List[str]:
    """The server's argv. vLLM: the base under its name, each adapter as --lora-modules NAME=PATH.
    transformers serve: the one model, preloaded."""
    if backend == "vllm":
        base_name = next(n for n, p in served.names.items() if p == served.base)
        loras = [f"{n}={p}" for n, p in served.names.items() if p != served.base]
        argv = ["vllm", "serve", served.base, "--served-model-name", base_name, "--host", "127.0.0.1",
                "--port", str(port), "--dtype", dtype, "--seed", "0"]
        if loras:
            rank = max(_lora_rank(p) for p in served.names.values() if p != served.base)
            argv += ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(loras)),
                     "--lora-modules", *loras]
        return argv + list(extra)
    if backend == "transformers":
        # a pinned server answers only to the model id it loaded: run it where NAME is a link to
        # the model (Server's cwd, `link_names`), so the model id is the served name
        exe = Path(sys.executable).parent / "transformers"
        (name,) = served.names
        return [str(exe) if exe.exists() else "transformers", "serve", name, "--host", "127.0.0.1",
                "--port", str(port), "--device", "cpu" if dtype == "float32" else "auto", "--dtype", dtype,
                # its plain path turns EuroEval's `stop: []` into an empty StopStringCriteria (HTTP 500);
                # on a CPU a small paged KV cache (the default sizing makes the first request take a minute)
                "--continuous-batching", *(CPU_CACHE if dtype == "float32" else []), *extra]
    raise ValueError(f"unknown server backend {backend!r}")


CPU_CACHE = ["--cb-num-blocks", "128", "--cb-block-size", "32", "--cb-max-batch-tokens", "2048"]


def link_names(served: Served, workdir: Path) -> Path:
    """workdir/NAME -> the model, for each served name (transformers serve loads NAME from its cwd)."""
    for name, path in served.names.items():
        link = workdir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(path).resolve(), target_is_directory=True)
    return workdir


def _lora_rank(path: str) -> int:
    cfg = Path(path) / "adapter_config.json"
    return int(json.loads(cfg.read_text()).get("r", 16)) if cfg.exists() else 16


def version(backend: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version("vllm" if backend == "vllm" else "transformers")
    except metadata.PackageNotFoundError:
        return None


def _die_with_parent() -> None:
    try:  # Linux: SIGTERM the server when the job's python dies without cleaning up
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Server:
    """`with Server(argv, port, log) as s:` starts the server, waits for GET /health (or /v1/models)
    and stops it on the way out, whatever the way out is. `s.startup_s`: seconds to healthy."""

    def __init__(self, argv: List[str], port: int, log_path: Path, timeout_s: float = 900,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None, say=print):
        self.argv, self.port, self.log_path, self.timeout_s = argv, port, Path(log_path), timeout_s
        self.env, self.cwd, self.say = env, cwd, say
        self.proc: Optional[subprocess.Popen] = None
        self.startup_s: Optional[float] = None
        self._old: dict = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "Server":
        for sig in (signal.SIGUSR2, signal.SIGTERM):  # stop where we are: the `with` exit stops the server
            self._old[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_signal(self, signum, frame):
        old = self._old.get(signum)
        if callable(old):
            old(signum, frame)  # e.g. the rank's handler marks the stage for requeue
        raise Preempted(f"signal {signal.Signals(signum).name} while the model server was up")

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"starting model server: {' '.join(self.argv)} (log {self.log_path})")
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def healthy(self) -> bool:
        for path in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return False

    def wait_healthy(self) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with {self.proc.returncode} before it was healthy; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            if self.healthy():
                self.startup_s = round(time.time() - self.t0, 2)
                self.say(f"model server healthy on port {self.port} after {self.startup_s} s")
                return
            if time.time() - self.t0 > self.timeout_s:
                raise TimeoutError(f"model server not healthy after {self.timeout_s} s; last lines of "
                                   f"{self.log_path}:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 30) -> None:
        """TERM the server's process group, KILL it after `grace_s`; restore the signal handlers."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.say(f"model server stopped (exit {self.proc.returncode})")


def complete(base_url: str, model: str, prompt: str, max_tokens: int, chat: bool = False) -> dict:
    """One greedy request; returns the response JSON (the text and its `usage`)."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    req = urllib.request.Request(f"{base_url}/{'chat/completions' if chat else 'completions'}",
                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def throughput(base_url: str, model: str, prompts: List[str], max_tokens: int) -> dict:
    """Generation throughput through the server: completion tokens per second over `prompts`, one
    request at a time (latency-bound: what a benchmark client without batching sees), after one
    untimed warm-up request."""
    complete(base_url, model, prompts[0], 1)
    t0, tokens, outputs = time.time(), 0, []
    for p in prompts:
        out = complete(base_url, model, p, max_tokens)
        tokens += int((out.get("usage") or {}).get("completion_tokens") or 0)
        outputs.append(out["choices"][0].get("text", ""))
    s = time.time() - t0
    return {"requests": len(prompts), "completion_tokens": tokens, "seconds": round(s, 3),
            "tokens_per_s": round(tokens / s, 2) if s > 0 else None, "outputs": outputs}
