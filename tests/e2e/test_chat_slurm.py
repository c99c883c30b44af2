"""`python -m dfm_hpc chat RUN cluster=slurm` on the two-node Slurm cluster: the plan line first, a serving job
(the tiny base model behind `transformers serve`, the stand-in for LUMI's vLLM), questions on stdin answered
as streamed replies in this process, and nothing left afterwards: no job in squeue, no server process, no
address file. About 15 s on 2 CPU cores when a node is free."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers import dfm, run_dirs, wait_for
from helpers.slurm_jobs import history


def _left(pattern: str) -> list:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


@pytest.mark.e2e
@pytest.mark.slurm
def test_a_scripted_chat_with_the_model_a_slurm_job_serves(tmp_path, slurm_cluster):
    p = dfm("+experiment=pipeline_tiny", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    p = subprocess.run([sys.executable, "-m", "dfm_hpc", "chat", str(run), "--stage", "base", "cluster=slurm",
                        "evaluate.server=transformers", "--system", "Svar kort.", "--temperature", "0",
                        "--max-new-tokens", "4", "--save"],
                       input="Hvad hedder du?\n/reset\nHvor ligger Aarhus?\n", capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"chat with {run.name}/base (tiny:llama) on cluster=slurm: one job, 1 node, 1 GPU"), \
        p.stdout
    assert "walltime 60 min, served by transformers" in p.stdout
    job = re.search(r"queued the serving job (\d+)", p.stderr).group(1)
    served = re.search(rf"served at http://node\d:(\d+)/v1 as ({re.escape(run.name)}-base-[0-9a-f]{{8}})", p.stdout)
    assert served, p.stdout  # the job's node, its own port and the nonce'd name
    assert p.stdout.count("model> ") == 2 and "(new conversation)" in p.stdout
    (transcript,) = (run / "chat").glob("*_base.jsonl")
    turns = [json.loads(x) for x in transcript.read_text().splitlines()]
    assert [t["user"] for t in turns] == ["Hvad hedder du?", "Hvor ligger Aarhus?"]
    assert all(t["assistant"] for t in turns) and f":{served.group(1)}/v1" in turns[0]["served_by"]
    # the chat's end ended the job: out of the queue, cancelled (not run to its walltime), nothing left
    assert f"cancelled the serving job {job}" in p.stderr and "still lists it" not in p.stderr
    assert wait_for(lambda: history(job) and history(job)[-1] == "CANCELLED", timeout=30, what="sacct's record")
    assert not _left(f"transformers serve {served.group(2)}") and not _left(f"chat_server .*{run}")
    assert not (run / "chat" / f"server.{job}").exists()
    assert "model server healthy" in (run / "chat" / "submitit" / f"{job}_0_log.out").read_text()
