"""The hang watchdog and bad nodes on the two-node Slurm cluster (issue #22 item 5): a rank that hangs
is found, its node is marked bad, the job requeues without it and resumes, the chain's waiting job
avoids it too; a stage that cannot resume fails with the reason instead."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from helpers import dfm, run_dirs, wait_for
from helpers.slurm_jobs import history, nodes, rank_pid

pytestmark = pytest.mark.slurm
HANG = ["cluster=slurm", "cluster.hang_minutes=0.5"]  # 30 s without progress is a hang here


def _gone(pid: int) -> bool:
    """Ended: no such process, or only its exit status left (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_rank_that_hangs_is_ended_its_node_avoided_and_the_stage_resumes(slurm_cluster, tmp_path):
    """Two ranks translate on one node; rank 1 freezes (SIGSTOP) after its first chunk. The watchdog
    ends the step, records the node in bad_nodes, excludes it from the waiting merge job, and requeues
    the translation without it: it resumes on the other node and the chain completes there (old main:
    the frozen rank held the job until its 12-hour walltime)."""
    p = dfm("+experiment=oasst2_translate_tiny", *HANG, "translate.nodes=1", "translate.tasks_per_node=2",
            "translate.chunk_size=3", "translate.max_messages=48", "stages=[translate,merge]", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    t, m = run / "stages" / "translate", run / "stages" / "merge"
    job, merge_job = (t / "job_id").read_text().strip(), (m / "job_id").read_text().strip()
    pid = rank_pid(t / "logs" / "rank-1.log")
    shard = t / "shards" / "shard-00001.jsonl"  # rank 1 owns the odd shards
    wait_for(lambda: shard.exists() and shard.stat().st_size > 0, every=0.02, timeout=300, what="rank 1's first chunk")
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: "REQUEUED" in history(job), timeout=180, what="the watchdog to requeue the hung job")
    wait_for(lambda: _gone(pid), timeout=30, what="the frozen rank to be killed with its step")
    (bad_line,) = (run / "bad_nodes").read_text().splitlines()
    bad = bad_line.split()[0]
    assert bad == nodes(job)[0] and "translate" in bad_line, bad_line
    assert int(re.search(r"no progress for (\d+) s", bad_line).group(1)) >= 30, bad_line  # not before the limit
    err = "".join(f.read_text() for f in (t / "submitit").glob(f"{job}_*log.err"))
    assert f"waiting job {merge_job} now excludes {bad}" in err, err[-3000:]
    wait_for(lambda: (m / "DONE").exists() or (m / "FAILED").exists() or (t / "FAILED").exists(),
             timeout=400, what="the resumed translation and the merge")
    assert (m / "DONE").exists(), [f.read_text() for f in (t / "FAILED", m / "FAILED") if f.exists()]
    assert history(job)[-1] == "COMPLETED" and nodes(job)[-1] != bad, (history(job), nodes(job))
    assert nodes(merge_job)[-1] != bad, nodes(merge_job)
    assert "resuming after" in (t / "logs" / "rank-1.log").read_text()
    ids = [json.loads(x)["message_id"] for f in sorted((t / "shards").glob("*.jsonl"))
           for x in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == json.loads((t / "plan.json").read_text())["messages"]
    s = dfm("status", str(run), cwd=tmp_path)
    assert bad in s.stdout and "bad node" in s.stdout, s.stdout
