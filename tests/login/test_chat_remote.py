"""The login half of a chat served by a Slurm job (login/chat_remote.py): server-sent events parsed as they
arrive from a real stdlib HTTP server in this process, /reset, the transcript, and the job cancelled however
the chat ends (recording sbatch/squeue/scancel stand-ins; the real cluster: tests/e2e/test_chat_slurm.py)."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from dfm_hpc.login import chat_remote

from helpers import slurm_stubs

MODEL = "run-sft-0123abcd"


class _Server:
    """POST /v1/chat/completions streams PIECES as SSE the way vLLM does (a role-only delta first, a comment,
    a finish chunk, [DONE]); the second piece is sent only once the client has printed the first (`printed`),
    so a client that waited for the whole body would never get it (`gate`). `error`: an error event instead."""

    PIECES = ["Køben", "havn", "."]

    def __init__(self, error: bool = False, gate: bool = False):
        self.bodies, self.printed, self.error, self.gate, self.streamed = [], threading.Event(), error, gate, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"data": [{"id": MODEL}]}).encode()
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if outer.error:
                    self._event({"error": {"message": "boom", "code": 500}})
                    return
                outer.printed.clear()
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                self.wfile.write(b": keep-alive\r\n\r\n")
                for i, piece in enumerate(outer.PIECES):
                    self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
                    if i == 0 and outer.gate:
                        outer.streamed.append(outer.printed.wait(10))
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, obj):
                self.wfile.write(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Out(io.StringIO):
    """A terminal that tells the server when the first piece of a reply has been printed."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    def write(self, s):
        if s == _Server.PIECES[0]:
            self.server.printed.set()
        return super().write(s)


def _args(**kw):
    return SimpleNamespace(**{"system": "Svar kort.", "temperature": 0.0, "max_new_tokens": 8, "seed": 3, **kw})


def test_sse_events_are_parsed_as_the_spec_says():
    raw = [b": comment\n", b"data: a\n", b"data:  b\n", b"\n", b"event: x\r\n", b"data:c\r\n", b"\r\n",
           b"data: [DONE]\n", b"\n", b"data: after\n", b"\n"]
    assert list(chat_remote.sse_data(iter(raw))) == ["a\n b", "c"]  # one leading space dropped; [DONE] ends it
    assert list(chat_remote.sse_data(iter([b"data: tail"]))) == ["tail"]  # a last event without its blank line


def test_replies_stream_piece_by_piece_and_reset_starts_over(tmp_path):
    with _Server(gate=True) as srv:
        out = _Out(srv)
        saved = tmp_path / "t.jsonl"
        rc = chat_remote.chat_loop(srv.url, MODEL, "run/sft", _args(), stdin=io.StringIO(
            "Hvad er Danmarks hovedstad?\nOg Sveriges?\n/reset\nHej\n"), out=out, transcript=saved)
    assert rc == 0 and srv.streamed == [True, True, True], "each reply's first piece reached the terminal first"
    assert out.getvalue().count("model> København.\n") == 3 and "(new conversation)" in out.getvalue()
    first, second, third = srv.bodies
    assert first["stream"] is True and first["model"] == MODEL and first["max_tokens"] == 8 and first["seed"] == 3
    assert first["temperature"] == 0.0 and "top_p" not in first  # greedy
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][2]["content"] == "København."
    assert third["messages"] == [{"role": "system", "content": "Svar kort."}, {"role": "user", "content": "Hej"}]
    turns = [json.loads(x) for x in saved.read_text().splitlines()]
    assert [(t["user"], t["assistant"]) for t in turns] == [("Hvad er Danmarks hovedstad?", "København."),
                                                             ("Og Sveriges?", "København."), ("Hej", "København.")]


def test_an_error_event_stops_the_chat_with_the_servers_words():
    with _Server(error=True) as srv:
        with pytest.raises(chat_remote.ChatError, match="boom"):
            chat_remote.chat_loop(srv.url, MODEL, "x", _args(), stdin=io.StringIO("hej\n"), out=io.StringIO())


# ---------------------------------------------------------------------------- the job's life around the chat

@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """sbatch answers job 4242; squeue lists it RUNNING until scancel (or never, with `gone` present)."""
    bin_dir = tmp_path / "bin"
    flag = tmp_path / "cancelled"
    slurm_stubs.install(bin_dir, names=("sbatch", "squeue", "scancel", "sacct"), bodies={
        "sbatch": "echo 4242",
        "squeue": f'[ -e "{flag}" ] || [ -e "{tmp_path}/gone" ] || echo "RUNNING|None|0:07"',
        "scancel": f'touch "{flag}"',
        "sacct": "echo FAILED",
    })
    monkeypatch.setenv("PATH", slurm_stubs.env(bin_dir)["PATH"])
    return SimpleNamespace(bin=bin_dir, dir=tmp_path, address=tmp_path / "server.4242", log=tmp_path / "4242.log")


def _run(slurm, monkeypatch, stdin, **kw):
    monkeypatch.setattr("sys.stdin", stdin)
    return chat_remote.run_chat(slurm.dir / "sbatch.sh", lambda j: slurm.dir / f"{j}.log",
                                lambda j: slurm.dir / f"server.{j}", "run/sft", _args(), None, **kw)


def _address(slurm, port):
    slurm.address.write_text(json.dumps({"host": "127.0.0.1", "port": port, "model": MODEL, "startup_s": 1.0}))


def test_exit_and_end_of_input_cancel_the_job_and_only_ours(slurm, monkeypatch, capsys):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a login node's proxy is not asked for the node
    with _Server() as srv:
        _address(slurm, srv.port)
        assert _run(slurm, monkeypatch, io.StringIO("hej\n/exit\nnot sent\n")) == 0
        assert len(srv.bodies) == 1
        _address(slurm, srv.port)
        (slurm.dir / "cancelled").unlink()
        assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 0  # end of input
    assert slurm_stubs.calls(slurm.bin, "scancel") == ["scancel [--] [4242]"] * 2
    assert slurm_stubs.calls(slurm.bin, "sbatch")[0].endswith(f"[--parsable] [{slurm.dir / 'sbatch.sh'}]")
    assert not slurm.address.exists()
    err = capsys.readouterr().err
    assert "job 4242: RUNNING" not in err  # the address was there at once: no wait shown
    assert "cancelled the serving job 4242" in err and "still lists it" not in err


class _CtrlC(io.StringIO):
    def readline(self, *a):
        raise KeyboardInterrupt


def test_ctrl_c_and_a_server_error_cancel_the_job(slurm, monkeypatch):
    with _Server() as srv:
        _address(slurm, srv.port)
        assert _run(slurm, monkeypatch, _CtrlC()) == 130
    with _Server(error=True) as srv:
        _address(slurm, srv.port)
        (slurm.dir / "cancelled").unlink()
        assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 1
    assert slurm_stubs.calls(slurm.bin, "scancel") == ["scancel [--] [4242]"] * 2


def test_a_job_that_ends_before_its_server_is_up_says_why(slurm, monkeypatch, capsys):
    (slurm.dir / "gone").touch()
    (slurm.dir / "4242.log").write_text("loading\nRuntimeError: model server exited with 1\n")
    assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 1
    err = capsys.readouterr().err
    assert "ended (FAILED) before its server was up" in err and "model server exited with 1" in err, err
    assert slurm_stubs.calls(slurm.bin, "scancel") == ["scancel [--] [4242]"]


def test_a_wait_shows_the_queue_state_and_gives_up_at_its_limit(slurm, monkeypatch, capsys):
    assert _run(slurm, monkeypatch, io.StringIO("hej\n"), wait_s=1.5) == 1
    err = capsys.readouterr().err
    assert "job 4242: RUNNING, waited 0 s, elapsed in Slurm 0:07, loading the model" in err, err
    assert "no server from job 4242 after 1 s" in err
    assert slurm_stubs.calls(slurm.bin, "scancel") == ["scancel [--] [4242]"]


def test_an_unreachable_node_is_told_the_ssh_tunnel_and_the_job_cancelled(slurm, monkeypatch, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _address(slurm, port)
    assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 1
    err = capsys.readouterr().err
    assert f"ssh -L {port}:127.0.0.1:{port} " in err and "cannot reach it" in err, err
    assert slurm_stubs.calls(slurm.bin, "scancel") == ["scancel [--] [4242]"]


def test_a_server_that_does_not_list_our_name_is_asked_nothing(slurm, monkeypatch, capsys):
    with _Server() as srv:
        slurm.address.write_text(json.dumps({"host": "127.0.0.1", "port": srv.port, "model": "other-name"}))
        assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 1
        assert srv.bodies == []
    assert "not this job's other-name" in capsys.readouterr().err
    assert not Path(slurm.address).exists()


def test_a_refused_sbatch_says_why_and_queues_nothing(slurm, monkeypatch, capsys):
    (slurm.bin / "sbatch").write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: small-g' >&2\n"
                                      "exit 1\n")
    assert _run(slurm, monkeypatch, io.StringIO("hej\n")) == 1
    assert "sbatch refused the serving job: sbatch: error: invalid partition" in capsys.readouterr().err
    assert slurm_stubs.calls(slurm.bin, "scancel") == []  # no job id: nothing of ours to cancel
