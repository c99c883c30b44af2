"""The serving job of `chat RUN` on a Slurm cluster: the run's model behind an OpenAI-compatible server that the
login node's chat (login/chat_remote.py) talks to.

The server is job/serve.py's, under issue #22's address rules: the job's own port (derived from the job id,
checked free), the served name with a per-job nonce, and /v1/models checked to list exactly that name before
anyone is told the address. Unlike evaluate's server it listens on all interfaces: its client is on the
login node. Once healthy, the job writes {host, port, model, ...} as JSON to RUN/chat/server.<job id> (the
name appears whole: written beside it, then renamed) and keeps the server up, checking it, until scancel's
TERM (the chat ended), Slurm's pre-timeout signal or the walltime; then the server's process group is
stopped and the address file removed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from dfm_hpc.job import serve
from dfm_hpc.job.rank import Preempted


def _merge(path: str, out: Path) -> str:
    """An adapter the server cannot load (transformers serve; vLLM with an adapter on an adapter) merged into
    its base once, saved as a plain model in `out`."""
    if (out / "config.json").is_file():
        return str(out)
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from dfm_hpc.job import train

    model = train.load_model_or_adapter(path, SimpleNamespace(precision="bf16", attn_implementation="sdpa"))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp)
    os.replace(tmp, out)
    return str(out)


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def write_address(path: Path, info: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfm_hpc.job.chat_server")
    ap.add_argument("model")
    ap.add_argument("--name", required=True, help="the served name (the job's nonce is appended)")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--backend", choices=("vllm", "transformers"), default="vllm")
    ap.add_argument("--timeout-s", type=float, default=900, help="how long the server may take to get healthy")
    ap.add_argument("--compile", action="store_true", help="leave torch.compile on in the server")
    ap.add_argument("--server-arg", action="append", default=[], help="an extra server argument (repeatable; "
                    "--server-arg=--flag for one that starts with -)")
    args = ap.parse_args(argv)
    run, job = Path(args.run_dir), serve.job_seed()
    work = run / "chat" / f"server-{job}"
    address = run / "chat" / f"server.{job}"
    say = lambda m: print(f"dfm_hpc chat server: {m}", flush=True)  # noqa: E731  (the job's log)
    path = args.model
    if path.startswith("tiny:"):  # the tests' and the demo's base: built, not downloaded
        from dfm_hpc.tiny.models import resolve

        path = resolve(path, run / "cache")
    merged = {}
    if serve.is_adapter(path) and (args.backend == "transformers" or serve.is_adapter(serve.adapter_base(path))):
        say(f"merging the adapter {path} into its base (the server cannot load it as it is)")
        merged[args.name] = _merge(path, run / "chat" / f"merged-{args.name.replace('/', '_')}")
    group = serve.servers(args.backend, [(args.name, path)], merged, tag=serve.nonce())[0]
    dtype = "bfloat16" if _on_gpu() else "float32"
    extra = list(args.server_arg)
    cwd = serve.link_names(group, work / "served") if args.backend == "transformers" else None
    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        with serve.Server(lambda port: serve.command(args.backend, group, port, dtype, extra, host="0.0.0.0"), 0,
                          work / "server.log", timeout_s=args.timeout_s, cwd=cwd, say=say, expect=group.ids(),
                          compile=args.compile) as srv:
            write_address(address, {"host": host, "port": srv.port, "model": group.id(args.name), "job": str(job),
                                    "backend": args.backend, "startup_s": srv.startup_s, "pid": os.getpid()})
            say(f"serving {group.id(args.name)} at http://{host}:{srv.port}/v1 (address in {address})")
            while True:  # until scancel (the chat ended) or the walltime
                time.sleep(5)
                srv.check()
    except Preempted as e:
        say(f"stopping: {e}")
        return 0
    finally:
        address.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
