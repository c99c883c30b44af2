"""A rank's heartbeat (job/heartbeat.py): the line the watchdog reads, progress at safe points, a file kept
fresh while the process runs, `waiting` inside a collective, and no file once the rank is done."""

from __future__ import annotations

import threading
import time

from dfm_hpc import rundir
from dfm_hpc.job import heartbeat
from dfm_hpc.job.rank import StageContext


def _line(f):
    last, host, state, what = f.read_text().split(" ", 3)
    return int(last), host, state, what.strip()


def test_the_line_and_progress_at_safe_points(tmp_path):
    beat = heartbeat.Heartbeat(tmp_path, 3, host="nid5", tick_s=0.05)
    try:
        last, host, state, what = _line(tmp_path / "worker-3")
        assert host == "nid5" and state == "working" and what == "started" and abs(last - time.time()) < 2
        ctx = StageContext(tmp_path, tmp_path, env=None, beat=beat)
        ctx.should_stop()
        ctx.should_stop("step 7")
        time.sleep(0.3)
        assert _line(tmp_path / "worker-3")[3] == "step 7"
    finally:
        beat.stop()
    assert not (tmp_path / "worker-3").exists()


def test_the_file_stays_fresh_while_the_process_runs_without_progress(tmp_path):
    beat = heartbeat.Heartbeat(tmp_path, 0, host="h", tick_s=0.05)
    try:
        first = (tmp_path / "worker-0").stat().st_mtime_ns
        progress = _line(tmp_path / "worker-0")[0]
        time.sleep(0.4)
        assert (tmp_path / "worker-0").stat().st_mtime_ns > first  # alive
        assert _line(tmp_path / "worker-0")[0] == progress  # but no progress
    finally:
        beat.stop()


def test_a_main_thread_inside_a_collective_is_waiting():
    release = threading.Event()
    # a frame whose code lives where torch's collectives do, as when all_reduce blocks
    code = compile("release.wait()", "/site-packages/torch/distributed/distributed_c10d.py", "exec")
    t = threading.Thread(target=lambda: exec(code, {"release": release}))
    t.start()
    try:
        time.sleep(0.05)
        frame = __import__("sys")._current_frames()[t.ident]
        assert heartbeat._waiting(frame)
        assert not heartbeat._waiting(__import__("sys")._getframe())
    finally:
        release.set()
        t.join()


def test_started_only_under_a_watching_batch_script(tmp_path, monkeypatch):
    monkeypatch.delenv(rundir.HEARTBEATS_ENV, raising=False)
    assert heartbeat.start(tmp_path / "sdir", 0, "h", first=True) is None
    monkeypatch.setenv(rundir.HEARTBEATS_ENV, str(tmp_path / "hb"))
    beat = heartbeat.start(tmp_path / "sdir", 0, "h", first=True)
    try:
        assert (tmp_path / "hb" / "worker-0").exists()
        assert (tmp_path / "hb" / heartbeat.STAGE_DIR).read_text().strip() == str(tmp_path / "sdir")
    finally:
        beat.stop()
