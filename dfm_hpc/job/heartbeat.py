"""A rank's heartbeat, for the host-side hang watchdog (login/watchdog.py renders it in the batch script).

One file per worker in the job's heartbeat folder (rundir.HEARTBEATS_ENV names it), one line:

    <last progress, epoch s> <host> <state> <what>

- progress: the last safe point the rank passed (a step end, a chunk, a shard, a benchmark);
  `StageContext.should_stop` records it, so every stage beats where it can stop.
- a daemon thread rewrites the file every rundir.HEARTBEAT_TICK_S while the process runs Python:
  a file whose mtime stops moving belongs to a frozen process (SIGSTOP, a call holding the GIL, a
  node gone). That is how the watchdog tells the rank that hung from the ranks that wait for it.
- state: `waiting` while the main thread is inside a torch.distributed or DeepSpeed collective
  (it waits for a slower rank), else `working`.

A rank that finishes, stops or fails removes its file: the step may go on for the others.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from dfm_hpc.rundir import HEARTBEAT_TICK_S, HEARTBEATS_ENV

STAGE_DIR = "stage_dir"  # the file in the heartbeat folder that names the stage dir (for the host side)
# where a main thread waits for the other ranks: a collective's Python frame
_COLLECTIVES = (f"torch{os.sep}distributed{os.sep}distributed_c10d.py", f"deepspeed{os.sep}comm{os.sep}")


def _waiting(frame) -> bool:
    while frame is not None:
        if any(p in frame.f_code.co_filename for p in _COLLECTIVES):
            return True
        frame = frame.f_back
    return False


class Heartbeat:
    """The rank's heartbeat file; `progress(what)` at each safe point, `stop()` when the rank is done."""

    def __init__(self, folder: Path, worker: int, host: Optional[str] = None, tick_s: float = HEARTBEAT_TICK_S):
        self.file = Path(folder) / f"worker-{worker}"
        self.host = host or socket.gethostname().split(".")[0]
        self.tick_s = tick_s
        self.last, self.what = time.time(), "started"
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._write()
        self._thread = threading.Thread(target=self._run, name="dfm_hpc-heartbeat", daemon=True)
        self._thread.start()

    def progress(self, what: str) -> None:
        self.last, self.what = time.time(), what

    def _state(self) -> str:
        return "waiting" if _waiting(sys._current_frames().get(self._main)) else "working"

    def _write(self) -> None:
        tmp = self.file.with_name(self.file.name + ".tmp")
        what = " ".join(str(self.what).split()) or "-"
        try:
            tmp.write_text(f"{self.last:.0f} {self.host} {self._state()} {what}\n")
            os.replace(tmp, self.file)
        except OSError:  # a full or flaky file system must not kill the rank; the watchdog sees a stale file
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self.file.unlink(missing_ok=True)


def start(stage_dir: Path, worker: int, host: str, first: bool) -> Optional[Heartbeat]:
    """The rank's heartbeat when its batch script watches for hangs ($DFM_HPC_HEARTBEATS), else None.
    `first`: the job's rank 0."""
    folder = os.environ.get(HEARTBEATS_ENV)
    if not folder:
        return None
    beat = Heartbeat(Path(folder), worker, host)
    if first:  # the host side writes a failure's reason there, and finds the run dir from it
        (Path(folder) / STAGE_DIR).write_text(f"{stage_dir}\n")
    return beat
