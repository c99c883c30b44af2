"""`chat RUN cluster=<Slurm profile>`: the terminal half of a chat whose model is served by a job.

The login side queues the serving job (login/chat.py renders it; job/chat_server.py serves), shows its
queue state while it waits, reads the address the job writes once its server is healthy, and chats
from this terminal as a client of the server's OpenAI-compatible /v1/chat/completions with `stream:
true` (the server applies the model's chat template). Standard library only (urllib, server-sent
events): the login node imports no torch, transformers or openai. Whatever ends the chat (/exit, end
of input, Ctrl-C, a closed terminal, an error) cancels the job: this job id alone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, List, Optional

PROMPT, REPLY = "you> ", "model> "  # as the local chat (job/chat.py)
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE")


# the job's node directly: a login node's http_proxy (for the hub) would send the chat to the proxy instead
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ChatError(RuntimeError):
    """The serving job or its server failed; the message says why (and the job is cancelled)."""


# ---------------------------------------------------------------------------- the client

def sse_data(lines: Iterator[bytes]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream, one per event (multi-line data joined by \\n),
    up to `[DONE]`. Comments (`: ...`) and other fields are skipped."""
    data: List[str] = []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:  # an event ends at a blank line
            if data:
                payload, data = "\n".join(data), []
                if payload == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and "\n".join(data) != "[DONE]":
        yield "\n".join(data)


def stream_chat(base_url: str, body: dict, timeout: float = 300) -> Iterator[str]:
    """POST /chat/completions with stream: true; yields the reply's text pieces as they arrive."""
    req = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ChatError(f"the server answered HTTP {e.code}: {e.read()[:500].decode(errors='replace')}") from None
    with resp:
        for payload in sse_data(resp):
            event = json.loads(payload)
            if event.get("error"):
                raise ChatError(f"the server reported an error: {json.dumps(event['error'])[:500]}")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


def request_body(model: str, messages: list, args) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": args.max_new_tokens,
            "temperature": args.temperature}
    if args.temperature > 0:
        body["top_p"] = 0.9  # as the local chat samples
    if args.seed is not None:
        body["seed"] = args.seed
    return body


def chat_loop(base_url: str, model: str, name: str, args, stdin=None, out=None,
              transcript: Optional[Path] = None) -> int:
    """One user turn per line of `stdin`, each reply streamed to `out`; /reset starts over, /exit or end of
    input ends. With `transcript`, every turn is appended as JSONL as it happens (as the local chat)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    print(f"{name} served at {base_url} as {model}; one message per line, /reset to start over, /exit or Ctrl-D "
          "to end", file=out, flush=True)
    saved = open(transcript, "a", encoding="utf-8") if transcript else None
    try:
        while True:
            out.write(PROMPT)
            out.flush()
            line = stdin.readline()
            if not line or line.strip() == "/exit":
                break
            text = line.rstrip("\n")
            if text.strip() == "/reset":
                messages = list(system)
                print("(new conversation)", file=out, flush=True)
                continue
            if not text.strip():
                continue
            messages.append({"role": "user", "content": text})
            out.write(REPLY)
            parts = []
            for piece in stream_chat(base_url, request_body(model, messages, args)):
                parts.append(piece)
                out.write(piece)
                out.flush()
            answer = "".join(parts)
            out.write("\n" if answer.strip() else f"(only whitespace: {json.dumps(answer)})\n")
            out.flush()
            messages.append({"role": "assistant", "content": answer})
            if saved:
                saved.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": name, "user": text,
                                        "assistant": answer, "served_by": base_url}, ensure_ascii=False) + "\n")
                saved.flush()
    finally:
        if saved:
            saved.close()
    if transcript:
        print(f"transcript: {transcript}", file=out, flush=True)
    return 0


def served_ids(base_url: str, timeout: float = 10) -> List[str]:
    """The model ids the server lists; raises OSError (refused, timed out, unreachable) or ValueError."""
    with _OPENER.open(f"{base_url}/models", timeout=timeout) as r:
        return [str(m.get("id")) for m in json.loads(r.read())["data"]]


# ---------------------------------------------------------------------------- the job

def sbatch(script: Path) -> str:
    try:
        p = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    except OSError as e:  # no Slurm here: not a login node of the cluster
        raise ChatError(f"cannot run sbatch ({e}): chat on a cluster from its login node") from None
    if p.returncode != 0:
        raise ChatError(f"sbatch refused the serving job: {p.stderr.strip()[:500]}")
    return p.stdout.strip().split(";")[0]


def scancel(job: str) -> None:
    subprocess.run(["scancel", "--", job], capture_output=True, text=True)


def queue_state(job: str) -> Optional[tuple]:
    """(state, reason, elapsed) while squeue lists the job, else None."""
    p = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r|%M"], capture_output=True, text=True)
    line = p.stdout.strip().splitlines()[0] if p.returncode == 0 and p.stdout.strip() else ""
    if not line:
        return None
    state, reason, elapsed = (line.split("|") + ["", ""])[:3]
    return state, reason, elapsed


def final_state(job: str) -> str:
    p = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True, text=True)
    return (p.stdout.split() or ["(unknown: not in squeue nor sacct)"])[0]


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log yet)"


def wait_address(job: str, address: Path, log: Path, say: Callable[[str], None], timeout_s: float,
                 poll_s: float = 1.0) -> dict:
    """Wait until the job's server is healthy (the job writes `address` then), showing its queue state as it
    changes: PENDING with Slurm's reason, RUNNING with the elapsed time. A job that ends first, or a wait past
    `timeout_s`, raises ChatError with the job log's last lines."""
    t0, shown, last_note = time.time(), None, 0.0
    while True:
        if address.is_file():
            try:
                return json.loads(address.read_text())
            except ValueError:
                pass  # written by rename: never half, but be patient with a slow filesystem
        q = queue_state(job)
        if q is None:
            if address.is_file():
                continue
            raise ChatError(f"the serving job {job} ended ({final_state(job)}) before its server was up; "
                            f"last lines of {log}:\n{tail(log)}")
        state, reason, elapsed = q
        now = time.time()
        key = (state, reason if state == "PENDING" else "")
        if key != shown or now - last_note > 30:
            what = f"PENDING ({reason})" if state == "PENDING" else state
            extra = ", loading the model" if state == "RUNNING" else ""
            say(f"job {job}: {what}, waited {int(now - t0)} s, elapsed in Slurm {elapsed}{extra}")
            shown, last_note = key, now
        if now - t0 > timeout_s:
            raise ChatError(f"no server from job {job} after {int(timeout_s)} s ({state}); last lines of {log}:\n"
                            f"{tail(log)}")
        time.sleep(poll_s)


def unreachable(info: dict, why: str, login: str) -> str:
    node, port = info["host"], info["port"]
    return (f"the server is up on {node}:{port} (healthy in its own log) but this machine cannot reach it: {why}. "
            f"Forward the port from a machine that can: ssh -L {port}:{node}:{port} {login}, then point an "
            f"OpenAI client at http://127.0.0.1:{port}/v1 (model {info['model']}) while a job serves it")


def run_chat(script: Path, log_for: Callable[[str], Path], address_for: Callable[[str], Path], name: str,
             args, transcript: Optional[Path], wait_s: float = 3600) -> int:
    """Queue the serving job, wait for its server, chat; cancel the job whatever ends the chat."""
    import socket

    say = lambda m: print(f"dfm_hpc: {m}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        job = sbatch(script)
    except ChatError as e:
        say(str(e))
        return 1
    say(f"queued the serving job {job} (log {log_for(job)}); it is cancelled when the chat ends")
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def _end(signum, frame):  # a closed terminal or a kill: still cancel the job
        raise KeyboardInterrupt

    for s in old:
        signal.signal(s, _end)
    try:
        info = wait_address(job, address_for(job), log_for(job), say, wait_s)
        base = f"http://{info['host']}:{info['port']}/v1"
        try:
            ids = served_ids(base)
        except (OSError, ValueError) as e:
            raise ChatError(unreachable(info, f"{type(e).__name__}: {e}", socket.getfqdn())) from None
        if info["model"] not in ids:
            raise ChatError(f"{base} serves {ids}, not this job's {info['model']}: not ours; nothing was sent")
        say(f"job {job}: server up on {info['host']}:{info['port']} after {info.get('startup_s')} s")
        return chat_loop(base, info["model"], name, args, transcript=transcript)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except ChatError as e:
        say(str(e))
        return 1
    except (OSError, ValueError) as e:  # the connection dropped mid-chat, a malformed event
        say(f"the chat with job {job} failed: {type(e).__name__}: {e}")
        return 1
    finally:
        scancel(job)
        address_for(job).unlink(missing_ok=True)  # a killed server may not have removed it
        for s, h in old.items():
            signal.signal(s, h)
        gone = _gone(job, 15)
        say(f"cancelled the serving job {job}" + ("" if gone else " (Slurm still lists it: completing)"))


def _gone(job: str, within_s: float) -> bool:
    end = time.time() + within_s
    while queue_state(job) is not None:
        if time.time() > end:
            return False
        time.sleep(0.5)
    return True
