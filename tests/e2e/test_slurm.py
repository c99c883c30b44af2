"""Against the real two-node Slurm cluster that slurm/start.sh starts (required in CI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from helpers import dfm, run_dirs, wait_for

pytestmark = pytest.mark.slurm
SLURM = ["cluster=slurm"]


def _states(run, cwd) -> str:
    p = dfm("status", str(run), cwd=cwd)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _all_completed(run, cwd, n):
    out = _states(run, cwd)
    if "FAILED" in out:  # no point in waiting: show why
        logs = "\n".join(f.read_text()[-3000:] for f in sorted(run.rglob("FAILED")))
        raise AssertionError(f"a stage failed:\n{out}\n{logs}")
    return out if out.count("COMPLETED") == n else None


def _wait_completed(run, cwd, n, timeout=180, what="the stages"):
    """Wait for n COMPLETED stages under run (a run or a sweep dir). The stages' DONE/FAILED files are polled
    first: each `dfm status` is a Python process, ~0.5 s of one of the 2 cores the jobs themselves run on."""
    try:
        wait_for(lambda: len(list(run.glob("**/stages/*/DONE"))) >= n or any(run.glob("**/stages/*/FAILED")),
                 timeout=timeout, every=0.5, what=what)
    except AssertionError:
        _all_completed(run, cwd, n)  # a stage failed without its file: show why
        raise
    return wait_for(lambda: _all_completed(run, cwd, n), timeout=60, what=what)


def _squeue_ids() -> set:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    return set(out.split())


def test_two_node_all_reduce(slurm_cluster, tmp_path):
    p = dfm("+experiment=demo", *SLURM, "demo.nodes=2", "demo.value=1.5", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "queued; follow with" in p.stdout
    (run,) = run_dirs(tmp_path)
    job_id = (run / "stages" / "demo" / "job_id").read_text().strip()
    assert job_id in p.stdout
    _wait_completed(run, tmp_path, 2, what="demo and demo_check to complete")
    result = json.loads((run / "stages" / "demo" / "result.json").read_text())
    assert result["sum"] == 1.5 * 3 == result["expected"]
    assert sorted(result["hosts"]) == ["node1", "node2"]  # one rank on each node
    log1 = (run / "stages" / "demo" / "logs" / "rank-1.log").read_text()
    assert "on node2" in log1 and f"job {job_id}" in log1 and "master node1:" in log1
    lg = dfm("logs", str(run), "--stage", "demo", "--rank", "1", cwd=tmp_path)
    assert lg.returncode == 0 and "all_reduce sum = 4.5" in lg.stdout
    assert "00:00:0" in _states(run, tmp_path)  # elapsed from sacct


def test_sweep_is_one_array_and_the_cli_does_not_wait(slurm_cluster, tmp_path):
    p = dfm("-m", "+experiment=demo", *SLURM, "demo.nodes=2", "demo.sleep_s=4", "demo.value=1,2,3,4", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (sweep,) = run_dirs(tmp_path)
    points = [sweep / str(i) for i in range(4)]
    ids = [(pt / "stages" / "demo" / "job_id").read_text().strip() for pt in points]
    # the CLI is back while the jobs are still queued or running (each sleeps 4 s)
    assert _states(sweep, tmp_path).count("COMPLETED") < 8
    assert len({i.split("_")[0] for i in ids}) == 1, ids  # one array
    assert sorted(i.split("_")[1] for i in ids) == ["0", "1", "2", "3"]
    summary = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert len(summary["points"]) == 4
    _wait_completed(sweep, tmp_path, 8, timeout=300, what="4 sweep points x 2 stages")
    sums = [json.loads((pt / "stages" / "demo" / "result.json").read_text())["sum"] for pt in points]
    assert sums == [3.0, 6.0, 9.0, 12.0]
    assert all((pt / "stages" / "demo_check" / "DONE").exists() for pt in points)


def test_cancel_shows_cancelled_and_rerun_reproduces_the_config(slurm_cluster, tmp_path):
    p = dfm("+experiment=demo", *SLURM, "demo.sleep_s=300", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    wait_for(lambda: "RUNNING" in _states(run, tmp_path), what="the demo job to run")
    c = dfm("cancel", str(run), cwd=tmp_path)
    assert c.returncode == 0 and "cancelled" in c.stdout
    out = wait_for(lambda: (lambda s: s if s.count("CANCELLED") == 2 else None)(_states(run, tmp_path)),
                   what="both stages to show CANCELLED")
    assert "COMPLETED" not in out
    r = dfm("rerun", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    new = next(d for d in run_dirs(tmp_path) if d != run)
    assert (new / "config.yaml").read_text() == (run / "config.yaml").read_text()
    assert json.loads((new / "provenance.json").read_text())["rerun_of"] == str(run.resolve())
    assert dfm("cancel", str(new), cwd=tmp_path).returncode == 0


def test_failed_stage_stops_its_dependents_and_rerun_continues(slurm_cluster, tmp_path):
    p = dfm("+experiment=demo", *SLURM, "demo.nodes=2", "demo_check.fail=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    wait_for(lambda: "FAILED" in _states(run, tmp_path), what="demo_check to fail")
    assert (run / "stages" / "demo" / "DONE").exists()
    r = dfm("rerun", str(run), "demo_check.fail=false", cwd=tmp_path)
    assert r.returncode == 0 and "reusing finished stages: demo" in r.stderr, r.stderr
    new = next(d for d in run_dirs(tmp_path) if d != run)
    assert not (new / "stages" / "demo" / "job_id").exists() or (new / "stages" / "demo").is_symlink()
    wait_for(lambda: (new / "stages" / "demo_check" / "DONE").exists(), what="the rerun's demo_check")
    assert "--dependency" not in (new / "stages" / "demo_check" / "sbatch.sh").read_text()


def test_dependent_is_cancelled_when_its_parent_fails(slurm_cluster, tmp_path):
    p = dfm("+experiment=demo", *SLURM, "demo.fail=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    sb = (run / "stages" / "demo_check" / "sbatch.sh").read_text()
    parent = (run / "stages" / "demo" / "job_id").read_text().strip()
    assert f"#SBATCH --dependency=afterok:{parent}" in sb
    out = wait_for(lambda: (lambda s: s if "FAILED" in s and "CANCELLED" in s else None)(_states(run, tmp_path)),
                   what="demo FAILED and demo_check CANCELLED")
    assert not (run / "stages" / "demo_check" / "logs").exists()  # it never started
    assert "demo.fail=true" in (run / "stages" / "demo" / "logs" / "rank-0.log").read_text()
    assert out


def test_bad_input_queues_nothing(slurm_cluster, tmp_path):
    before = _squeue_ids()
    last = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1hours"], capture_output=True,
                          text=True).stdout.split()
    p = dfm("-m", "+experiment=demo", *SLURM, "demo.nodes=1,abc", cwd=tmp_path)
    assert p.returncode == 2
    p = dfm("+experiment=demo", *SLURM, "demo.time=99-00:00:00x", cwd=tmp_path)
    assert p.returncode == 2
    after = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1hours"], capture_output=True,
                           text=True).stdout.split()
    assert after == last and _squeue_ids() <= before
    assert run_dirs(tmp_path) == []


def test_torchrun_launcher_two_nodes_two_ranks_each(slurm_cluster, tmp_path):
    p = dfm("+experiment=demo", *SLURM, "cluster.launcher=torchrun", "demo.nodes=2", "demo.tasks_per_node=2",
            "stages=[demo]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    assert "#SBATCH --ntasks-per-node=1" in (run / "stages" / "demo" / "sbatch.sh").read_text()
    wait_for(lambda: (run / "stages" / "demo" / "DONE").exists() or (run / "stages" / "demo" / "FAILED").exists(),
             what="the torchrun demo")
    result = json.loads((run / "stages" / "demo" / "result.json").read_text())
    assert result["world_size"] == 4 and result["sum"] == 10.0
    assert sorted(result["hosts"]) == ["node1", "node1", "node2", "node2"]


def _translate(cwd, *extra):
    p = dfm("+experiment=oasst2_translate_tiny", *SLURM, "translate.nodes=2", "translate.chunk_size=3",
            "translate.max_messages=48", "stages=[translate]", *extra, cwd=cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(cwd)
    return run


def test_translation_survives_a_killed_worker(slurm_cluster, tmp_path):
    """4 shards on 2 nodes; one worker is SIGKILLed mid-chunk; the rerun's output equals an uninterrupted run's."""
    import os
    import re
    import signal

    (tmp_path / "clean").mkdir()
    (tmp_path / "killed").mkdir()
    clean = _translate(tmp_path / "clean")
    killed = _translate(tmp_path / "killed")
    t = killed / "stages" / "translate"
    log = t / "logs" / "rank-1.log"
    pid = wait_for(lambda: log.exists() and (m := re.search(r"pid (\d+)", log.read_text())) and int(m.group(1)),
                   timeout=300, what="rank 1 to start")
    # rank 1 owns shards 1 and 3: kill it once its first chunk is on disk
    wait_for(lambda: (t / "shards" / "shard-00001.jsonl").exists()
             and (t / "shards" / "shard-00001.jsonl").stat().st_size > 0, every=0.02, timeout=300,
             what="a first chunk")
    os.kill(pid, signal.SIGKILL)
    assert not (t / "shards" / "shard-00003.done").exists(), "rank 1 finished before it could be killed"
    wait_for(lambda: any(w in _states(killed, tmp_path / "killed") for w in ("FAILED", "CANCELLED")),
             what="the killed translation to fail")
    r = dfm("rerun", str(killed), cwd=tmp_path / "killed")
    assert r.returncode == 0 and "continuing unfinished stages" in r.stderr, r.stdout + r.stderr
    new = next(d for d in run_dirs(tmp_path / "killed") if d != killed)
    assert (new / "stages" / "translate").resolve() == t.resolve()
    wait_for(lambda: (t / "DONE").exists(), timeout=300, what="the resumed translation")
    wait_for(lambda: (clean / "stages" / "translate" / "DONE").exists(), timeout=300, what="the clean translation")
    assert "resuming after" in (t / "logs" / "rank-1.log").read_text()
    for s in range(4):
        a = (clean / "stages" / "translate" / "shards" / f"shard-{s:05d}.jsonl").read_text()
        b = (t / "shards" / f"shard-{s:05d}.jsonl").read_text()
        assert a == b, f"shard {s} differs after the kill and resume"
    ids = [json.loads(x)["message_id"] for s in range(4)
           for x in (t / "shards" / f"shard-{s:05d}.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == json.loads((t / "plan.json").read_text())["messages"]


def test_translation_as_array_requeues_on_the_pretimeout_signal(slurm_cluster, tmp_path):
    """translate.array=2: two array tasks share the shards; USR2 (what Slurm sends before the time
    limit) makes a worker stop after its chunk and requeue its job, which then finishes the shards."""
    run = _translate(tmp_path, "translate.array=2", "translate.nodes=1")
    t = run / "stages" / "translate"
    assert "#SBATCH --array=0-1%2" in (t / "sbatch.sh").read_text()
    array_id = (t / "job_id").read_text().strip()
    wait_for(lambda: (t / "shards" / "shard-00001.jsonl").exists()
             and (t / "shards" / "shard-00001.jsonl").stat().st_size > 0, every=0.05, what="array task 1's first chunk")
    subprocess.run(["scancel", "--signal=USR2", f"{array_id}_1"], check=True)
    wait_for(lambda: (t / "DONE").exists(), timeout=400, what="the requeued translation")
    log = (t / "logs" / "array-1-rank-0.log").read_text()
    assert "stopping for the time limit" in log and "requeue of job" in log
    assert "resuming after" in log
    def history():
        return subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", f"{array_id}_1", "-o", "State"],
                              capture_output=True, text=True).stdout.split()

    wait_for(lambda: history()[-1:] == ["COMPLETED"], what="the requeued job to complete")
    assert "REQUEUED" in history(), history()
    plan = json.loads((t / "plan.json").read_text())
    ids = [json.loads(x)["message_id"] for f in sorted((t / "shards").glob("*.jsonl"))
           for x in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == plan["messages"]


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_cpt_on_two_nodes(zero, slurm_cluster, tmp_path):
    from helpers.outputs import check_cpt

    p = dfm("+experiment=cpt_tiny", *SLURM, f"deepspeed={zero}", "cpt.nodes=2", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    _wait_completed(run, tmp_path, 1, timeout=400, what=f"CPT with {zero} on 2 nodes")
    check_cpt(run)
    assert "on node2" in (run / "stages" / "cpt" / "logs" / "rank-1.log").read_text()


def test_cpt_resumes_after_the_pretimeout_signal_with_the_same_loss_curve(slurm_cluster, tmp_path):
    """USR2 mid-run: checkpoint, requeue, resume; the loss curve equals an uninterrupted run's."""
    args = ["+experiment=cpt_tiny", *SLURM, "cpt.seq_len=128", "cpt.global_batch_size=32", "cpt.max_steps=60",
            "cpt.save_every_steps=1000"]
    (tmp_path / "clean").mkdir()
    (tmp_path / "stopped").mkdir()
    assert dfm(*args, cwd=tmp_path / "clean").returncode == 0
    assert dfm(*args, cwd=tmp_path / "stopped").returncode == 0
    (clean,) = run_dirs(tmp_path / "clean")
    (stopped,) = run_dirs(tmp_path / "stopped")
    s = stopped / "stages" / "cpt"
    job = (s / "job_id").read_text().strip()
    wait_for(lambda: (s / "metrics.jsonl").exists() and len((s / "metrics.jsonl").read_text().splitlines()) >= 5,
             every=0.05, timeout=300, what="5 logged steps")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: (s / "DONE").exists(), timeout=400, what="the requeued CPT")
    wait_for(lambda: (clean / "stages" / "cpt" / "DONE").exists(), timeout=400, what="the clean CPT")
    log = (s / "logs" / "rank-0.log").read_text()
    assert "stopping for the time limit" in log and "resuming from" in log, log[-2000:]
    a = [json.loads(x) for x in (clean / "stages" / "cpt" / "metrics.jsonl").read_text().splitlines()]
    b = {}
    for x in (s / "metrics.jsonl").read_text().splitlines():
        r = json.loads(x)
        b[r["step"]] = r  # steps after the checkpoint are logged again by the resumed job
    assert [r["step"] for r in a] == sorted(b) == list(range(1, 61))
    for r in a:
        assert r["loss"] == pytest.approx(b[r["step"]]["loss"], rel=1e-4, abs=1e-5), r["step"]


def test_sft_and_dpo_with_lora_under_zero3_on_two_nodes(slurm_cluster, tmp_path):
    from helpers.outputs import check_finetune

    p = dfm("+experiment=sft_tiny", *SLURM, "sft.nodes=2", "dpo.nodes=2", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    _wait_completed(run, tmp_path, 2, timeout=500, what="SFT then DPO on 2 nodes")
    check_finetune(run)
    assert "on node2" in (run / "stages" / "sft" / "logs" / "rank-1.log").read_text()


def test_the_cluster_is_lumi_like_fake_gpus_and_no_slurm_tools_for_the_ranks(slurm_cluster, tmp_path):
    """As on LUMI: every task of a node sees all of the node's GPUs (Slurm's GRES env), and a rank
    runs where scontrol, sacct, squeue, sbatch and scancel do not exist (slurm/sandbox.sh)."""
    from dfm_hpc.login.slurm import SANDBOX

    probe = ("import os, shutil; print(os.environ['SLURMD_NODENAME'], os.environ['SLURM_LOCALID'], "
             "os.environ.get('ROCR_VISIBLE_DEVICES'), [t for t in ('scontrol', 'sacct', 'squeue', 'sbatch', "
             "'scancel', 'srun') if shutil.which(t) or os.path.exists('/usr/bin/' + t)])")
    out = subprocess.run(["srun", "-N2", "--ntasks-per-node=2", "--gpus-per-node=2", "-t", "2", str(SANDBOX),
                          sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = sorted(out.stdout.splitlines())
    assert seen == ["node1 0 0,1 []", "node1 1 0,1 []", "node2 0 0,1 []", "node2 1 0,1 []"], out.stdout
    # and cluster=slurm renders its ranks into that sandbox, asking for the node's GPUs
    p = dfm("+experiment=demo", *SLURM, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    s = (run / "stages" / "demo" / "sbatch.sh").read_text()
    srun = next(line for line in s.splitlines() if line.startswith("srun "))
    assert f" {SANDBOX} {sys.executable} -u -m submitit.core._submit " in srun
    assert "#SBATCH --gpus-per-node=2" in s


def test_each_translation_rank_takes_the_gpu_of_its_local_rank(slurm_cluster, tmp_path):
    """2 nodes x 2 ranks, each task seeing its node's 2 fake GPUs: local rank r chooses GPU r (every
    stage logs the choice dist.gpu_index makes; the translators, evaluate and QLoRA place their
    models with it, tests/job/test_devices.py)."""
    run = _translate(tmp_path, "translate.tasks_per_node=2", "translate.shards=4", "translate.max_messages=8")
    t = run / "stages" / "translate"
    _wait_completed(run, tmp_path, 1, timeout=400, what="the translation")
    for rank, (node, local) in enumerate([("node1", 0), ("node1", 1), ("node2", 0), ("node2", 1)]):
        log = (t / "logs" / f"rank-{rank}.log").read_text()
        assert f"on {node} (local rank {local}, GPU {local} of 2 (ROCR_VISIBLE_DEVICES=0,1)" in log, log[:500]


def test_cpt_checkpoint_from_four_ranks_continues_on_two_nodes(slurm_cluster, tmp_path):
    """4 ranks (2 per node) write checkpoint-10; a job of 2 ranks (1 per node) continues it."""
    from helpers.outputs import check_resharded

    args = ["+experiment=cpt_tiny", *SLURM, "cpt.nodes=2", "cpt.max_steps=20", "cpt.save_every_steps=10"]
    assert dfm(*args, "cpt.tasks_per_node=2", cwd=tmp_path).returncode == 0
    (first,) = run_dirs(tmp_path)
    _wait_completed(first, tmp_path, 1, timeout=500, what="CPT on 4 ranks")
    ckpt = first / "stages" / "cpt" / "checkpoints" / "checkpoint-10"
    p = dfm(*args, f"cpt.resume_from={ckpt}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (second,) = [r for r in run_dirs(tmp_path) if r != first]
    _wait_completed(second, tmp_path, 1, timeout=500, what="CPT continued on 2 ranks")
    check_resharded(first, second, 4, 2)


def test_lumi_check_runs_on_two_nodes_and_gives_a_verdict(slurm_cluster, tmp_path):
    p = dfm("+experiment=lumi_check", *SLURM, "lumi_check.tasks_per_node=2", "lumi_check.sizes_mb=[1,4]",
            cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "lumi_check"
    assert 'export NCCL_DEBUG="INFO"' in (s / "sbatch.sh").read_text()
    _wait_completed(run, tmp_path, 1, timeout=300, what="lumi_check")
    result = json.loads((s / "result.json").read_text())
    assert result["verdict"] == "OK" and result["backend"] == "gloo"
    assert [r["size_mb"] for r in result["bandwidth"]] == [1, 4] and all(r["bus_gbps"] > 0 for r in result["bandwidth"])
    checks = {c["check"]: c["passed"] for c in result["checks"]}
    assert checks == {"own GPU": True, "bound to its GCD's cores": None, "RCCL on Slingshot (cxi)": None}
    assert sorted((r["host"], r["local_rank"], r["gpu"]) for r in result["ranks"]) == [
        ("node1", 0, 0), ("node1", 1, 1), ("node2", 0, 0), ("node2", 1, 1)]
    assert "lumi_check: OK (4 ranks on 2 nodes, gloo)" in (s / "logs" / "rank-0.log").read_text()
