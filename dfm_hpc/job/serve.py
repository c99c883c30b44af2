"""An OpenAI-compatible model server inside the evaluate job: start it, wait for health, always stop it.

DFM's own LUMI evaluation (dfm-evals, lumi/run_euroeval.sbatch) serves the base model and the run's
LoRA adapters with vLLM's OpenAI server in the job and points the benchmark clients at
http://127.0.0.1:PORT/v1. `vllm` is that server (LUMI's AI Factory image ships it for MI250X);
`transformers` is `transformers serve` (transformers' own CLI, FastAPI + uvicorn), the stand-in that
runs the same path on a CPU. Whatever happens in the `with` block (success, an exception, Slurm's
pre-timeout USR2, scancel's TERM) the server's whole process group is stopped, and a dying parent
takes the server with it (PR_SET_PDEATHSIG).

The address is the job's own (issue #22): small-g nodes are shared, and vLLM binds with SO_REUSEPORT,
so a second server of the same user on the same port would take half the connections. Each server
gets a port derived from the job and checked free, every served name carries a per-job nonce, and
no request is sent until the port's listening socket is held by the server's own processes
(/proc/net/tcp -> /proc/<pid>/fd) and /v1/models lists exactly its names. A Unix socket (LUMI's AI
Guide: vLLM `--uds`) is not used: lm-eval's and EuroEval's (LiteLLM) OpenAI clients speak TCP only.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

from dfm_hpc.job import server_env
from dfm_hpc.job.rank import Preempted


@dataclass
class Served:
    """What one server holds: {served name: model path}; `base` is the model vLLM loads, the rest are
    its LoRA adapters (vLLM) (transformers serve: one model)."""

    base: str
    names: Dict[str, str] = field(default_factory=dict)
    nonce: str = ""  # the job's: the server knows each model as NAME-NONCE (`id`)

    def id(self, name: str) -> str:
        return f"{name}-{self.nonce}" if self.nonce else name

    def ids(self) -> Dict[str, str]:
        """{served id: model path}: what /v1/models must list, nothing more."""
        return {self.id(n): p for n, p in self.names.items()}


def nonce() -> str:
    return secrets.token_hex(4)


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str) -> str:
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def servers(backend: str, specs: List[Tuple[str, str]], merged: Dict[str, str], tag: str = "") -> List[Served]:
    """Which server holds which model. vLLM: one per base, its adapters as LoRA modules under their
    names; an adapter on an adapter (DPO on SFT) cannot be stacked, so it is served merged by a
    server of its own. transformers serve: a server per model (preloaded, answering to any name),
    adapters merged. `tag`: the job's nonce, appended to every served name."""
    if backend == "transformers":
        return [Served(base=merged.get(n, p), names={n: merged.get(n, p)}, nonce=tag) for n, p in specs]
    groups: Dict[str, Served] = {}
    for name, path in specs:
        if is_adapter(path) and not is_adapter(adapter_base(path)):
            base = adapter_base(path)
            groups.setdefault(base, Served(base=base, names={}, nonce=tag)).names[name] = path
        else:
            full = merged.get(name, path)
            groups.setdefault(full, Served(base=full, names={}, nonce=tag)).names[name] = full
    for g in groups.values():  # vLLM names the base too
        if g.base not in g.names.values():
            g.names = {"_base": g.base, **g.names}
    return list(groups.values())


def command(backend: str, served: Served, port: int, dtype: str, extra: List[str],
            host: str = "127.0.0.1") -> List[str]:
    """The server's argv. vLLM: the base under its name, each adapter as --lora-modules NAME=PATH.
    transformers serve: the one model, preloaded. `host`: 0.0.0.0 for a chat job's login-node client."""
    if backend == "vllm":
        base_name = next(n for n, p in served.ids().items() if p == served.base)
        loras = [f"{n}={p}" for n, p in served.ids().items() if p != served.base]
        argv = ["vllm", "serve", served.base, "--served-model-name", base_name, "--host", host,
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
        (name,) = served.ids()
        return [str(exe) if exe.exists() else "transformers", "serve", name, "--host", host,
                "--port", str(port), "--device", "cpu" if dtype == "float32" else "auto", "--dtype", dtype,
                # its plain path turns EuroEval's `stop: []` into an empty StopStringCriteria (HTTP 500);
                # on a CPU a small paged KV cache (the default sizing makes the first request take a minute)
                "--continuous-batching", *(CPU_CACHE if dtype == "float32" else []), *extra]
    raise ValueError(f"unknown server backend {backend!r}")


CPU_CACHE = ["--cb-num-blocks", "128", "--cb-block-size", "32", "--cb-max-batch-tokens", "2048"]


def link_names(served: Served, workdir: Path) -> Path:
    """workdir/ID -> the model, for each served id (transformers serve loads ID from its cwd)."""
    for name, path in served.ids().items():
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


# ---------------------------------------------------------------------------- the job's own address

# below Linux's ephemeral ports (32768-60999: outgoing connections take them) and above MASTER_PORT's
# 10000-19999 (dist.PORT_BASE): a port here is ours unless a listener says otherwise
PORT_LO, PORT_SPAN = 20000, 12000
_LISTEN, _BOUND = "0A", "07"  # /proc/net/tcp states: listening; bound, not yet listening (vLLM loading)


class AddressTaken(RuntimeError):
    """Something other than this job's server holds (or answers on) its address."""


def _proc_net() -> bool:
    return Path("/proc/net/tcp").is_file()


def sockets(port: int, states=(_LISTEN, _BOUND)) -> Set[int]:
    """Inodes of the TCP sockets (v4 and v6, any address) bound to local `port` in `states`, every user's."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == port and f[3] in states:
                found.add(int(f[9]))
    return found


def held(session: int) -> Set[int]:
    """Inodes of the sockets open in the processes of `session` (the server and every child it forked)."""
    inodes = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            for fd in (d / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def port_free(port: int) -> bool:
    """Nobody has bound or listens on `port` (any address), and 127.0.0.1:PORT binds (SO_REUSEADDR, as
    the servers do: an old connection's TIME_WAIT is no owner)."""
    if _proc_net() and sockets(port):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def job_seed() -> int:
    """The job's number: SLURM_JOB_ID (an array task has its own), else this process's pid."""
    try:
        return int(os.environ["SLURM_JOB_ID"])
    except (KeyError, ValueError):
        return os.getpid()


def pick_port(seed: Optional[int] = None, skip=()) -> int:
    """The first free port from PORT_LO + seed % PORT_SPAN on (jobs sharing a node start apart)."""
    seed = job_seed() if seed is None else seed
    for k in range(256):
        port = PORT_LO + (seed + k) % PORT_SPAN
        if port not in skip and port_free(port):
            return port
    raise AddressTaken(f"no free port in {PORT_LO}-{PORT_LO + PORT_SPAN - 1} near {PORT_LO + seed % PORT_SPAN}")


class Server:
    """`with Server(argv, port, log, expect=ids) as s:` starts the server, waits until it is healthy *and*
    is this job's own, and stops it on the way out, whatever the way out is. `argv`: a list, or
    port -> list; `port` 0: `pick_port()` (a port that turns out taken is retried elsewhere, twice);
    `expect`: {served id: path}, what /v1/models must list. `s.startup_s`: seconds to healthy. The server's
    environment: server_env's (GPU variables on ROCm, `compile`, caches under the log's folder), then `env`."""

    def __init__(self, argv: Union[List[str], Callable[[int], List[str]]], port: int, log_path: Path,
                 timeout_s: float = 900, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
                 say=print, expect: Optional[Dict[str, str]] = None, tries: int = 3, compile: bool = False):
        self.argv_for = argv if callable(argv) else (lambda _port: list(argv))
        self.fixed_port, self.port, self.log_path, self.timeout_s = port, port, Path(log_path), timeout_s
        self.env, self.cwd, self.say, self.expect, self.tries = env, cwd, say, expect, tries
        self.compile, self.versions = compile, None
        self.proc: Optional[subprocess.Popen] = None
        self.startup_s: Optional[float] = None
        self._old: dict = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "Server":
        for sig in (signal.SIGUSR2, signal.SIGTERM):  # stop where we are: the `with` exit stops the server
            self._old[sig] = signal.signal(sig, self._on_signal)
        tried: List[int] = []
        try:
            while True:
                self.port = self.fixed_port or pick_port(skip=tried)
                tried.append(self.port)
                self.argv = self.argv_for(self.port)
                try:
                    self.start()
                    self.wait_healthy()
                    return self
                except AddressTaken as e:
                    self._kill()
                    if self.fixed_port or len(tried) >= self.tries:
                        raise
                    self.say(f"{e}; trying another port")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_signal(self, signum, frame):
        old = self._old.get(signum)
        if callable(old):
            old(signum, frame)  # e.g. the rank's handler marks the stage for requeue
        raise Preempted(f"signal {signal.Signals(signum).name} while the model server was up")

    def start(self) -> None:
        if not port_free(self.port):
            raise AddressTaken(f"127.0.0.1:{self.port} is already in use (not by this job's server)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"starting model server: {' '.join(self.argv)} (log {self.log_path})")
        changes = server_env.server_env(os.environ, self.log_path.parent / "cache", self.compile,
                                        rocm=server_env.is_rocm())
        env = server_env.apply(os.environ, {**changes, **(self.env or {})})
        if self.versions is None:  # what the scores were served by, in the rank log and the server log
            self.versions = server_env.runtime_versions(self.argv[0], env)
        note = (f"model server runtime: {server_env.describe(self.versions)}; environment: "
                + " ".join(f"{k}={'(unset)' if v is None else v}" for k, v in sorted(changes.items())))
        self.say(note)
        log = open(self.log_path, "ab")
        log.write(f"dfm_hpc: {note}\n".encode())
        log.flush()
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def owner(self) -> Optional[bool]:
        """Whether the port's listening sockets are all held by the server's own processes: True, False
        (one is someone else's), None (nobody listens yet, or no /proc to tell)."""
        if not _proc_net():
            return None
        listening = sockets(self.port, (_LISTEN,))
        if not listening:
            return None
        return listening <= held(self.proc.pid)  # start_new_session: the server's session id is its pid

    def _get(self, path: str) -> Optional[bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.read() if r.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def healthy(self) -> bool:
        return self._get("/health") is not None or self._get("/v1/models") is not None

    def wait_healthy(self) -> None:
        """Poll until healthy. Nothing is sent to the port before its listener is known to be ours (where
        /proc can tell): a foreign listener ends the wait at once, unasked."""
        while True:
            mine = self.owner()
            if mine is False:
                raise AddressTaken(f"another process listens on 127.0.0.1:{self.port}, not this job's server: "
                                   "it is not asked anything")
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with {self.proc.returncode} before it was healthy; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            if (mine or not _proc_net()) and self.healthy():
                self.verify()
                self.startup_s = round(time.time() - self.t0, 2)
                self.say(f"model server healthy on port {self.port} after {self.startup_s} s, serving "
                         + ", ".join(sorted(self.expect or {})))
                return
            if time.time() - self.t0 > self.timeout_s:
                raise TimeoutError(f"model server not healthy after {self.timeout_s} s; last lines of "
                                   f"{self.log_path}:\n{self.log_tail()}")
            time.sleep(0.5)

    def verify(self) -> None:
        """/v1/models lists exactly the expected ids (each with the job's nonce), and where vLLM names a
        local model's path (`root`), it is the expected one."""
        if self.expect is None:
            return
        raw = self._get("/v1/models")
        try:
            models = json.loads(raw)["data"] if raw else []
        except (ValueError, KeyError, TypeError):
            models = []
        ids = {str(m.get("id")): m for m in models if isinstance(m, dict)}
        if set(ids) != set(self.expect):
            raise AddressTaken(f"the server on 127.0.0.1:{self.port} serves {sorted(ids)}, not this job's "
                               f"{sorted(self.expect)}")
        for name, path in self.expect.items():
            root = ids[name].get("root")
            if root and Path(root).exists() and Path(path).exists() and Path(root).resolve() != Path(path).resolve():
                raise AddressTaken(f"the server on 127.0.0.1:{self.port} serves {name} from {root}, not {path}")

    def check(self) -> None:
        """Still this job's server: alive, and no one else listens on its port (a result scored while that
        was not so is not kept)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"model server exited ({self.proc.returncode if self.proc else None}); "
                               f"last lines of {self.log_path}:\n{self.log_tail()}")
        if self.owner() is False:
            raise AddressTaken(f"another process now listens on 127.0.0.1:{self.port} beside this job's server")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _kill(self, grace_s: float = 30) -> None:
        """TERM the server's process group, KILL it after `grace_s`."""
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

    def stop(self, grace_s: float = 30) -> None:
        """Stop the server; restore the signal handlers."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        self._kill(grace_s)


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
