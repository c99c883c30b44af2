"""A foreign OpenAI-compatible server squatting on an address (issue #22): a stdlib HTTP server in a
thread of the test process that answers /health and /v1/models with the generic names a job's server
used to have (`base`, `sft`, `dpo`) and every completion with a made-up answer, and counts each request."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from typing import List

GENERIC = ["base", "sft", "dpo"]


class Foreign:
    """`with Foreign(port) as f:` ... `f.hits`: the paths it was asked for. `reuseport`: bind as vLLM does
    (SO_REUSEPORT), so a second such server of the same user shares the port."""

    def __init__(self, port: int, reuseport: bool = False, host: str = "127.0.0.1"):
        self.hits: List[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hits.append(self.path)
                self._answer({"object": "list", "data": [{"id": n, "object": "model"} for n in GENERIC]}
                             if self.path == "/v1/models" else {"status": "ok"})

            def do_POST(self):
                hits.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer({"choices": [{"text": "A", "index": 0, "message": {"role": "assistant", "content": "A"},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def log_message(self, *a):
                pass

        class Srv(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self):
                if reuseport:
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                super().server_bind()

        self.server = Srv((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Foreign":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
