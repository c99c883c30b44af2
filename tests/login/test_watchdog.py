"""The hang watchdog's host-side lines (login/watchdog.sh, rendered by login/watchdog.py): which node it names,
what it ends, and what it does after a hang (bad_nodes, waiting jobs, requeue or fail), run in bash with
recording stand-ins for Slurm's commands; and the batch script's Slurm options (wckey, mail, exclude)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from dfm_hpc import predict, rundir
from dfm_hpc.login import watchdog
from dfm_hpc.plan import plan

from helpers import LUMI, dfm, make_cfg, run_dirs, slurm_stubs


def _bash(tmp_path, body: str, squeue: str = "", scontrol: str = "exit 0", **values):
    """`body` run after watchdog.sh's functions, with stand-ins for squeue/scancel/scontrol."""
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir, names=("squeue", "scancel", "scontrol"),
                        bodies={"squeue": f"printf '%s\\n' {squeue}" if squeue else "exit 0", "scontrol": scontrol})
    hb = tmp_path / "hb"
    hb.mkdir(exist_ok=True)
    env = {**os.environ, **slurm_stubs.env(bin_dir), "SLURM_JOB_ID": "7", rundir.HEARTBEATS_ENV: str(hb),
           "DFM_HPC_HUNG_MARKER": str(tmp_path / "hung"), "DFM_HPC_HANG_S": "2", "DFM_HPC_TICK_S": "1",
           "DFM_HPC_RESUMABLE": "1", "DFM_HPC_MAX_RESTARTS": "10", "DFM_HPC_STAGE": "sft",
           **{k: str(v) for k, v in values.items()}}
    script = watchdog.SCRIPT.read_text() + "\n" + body
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    return r, bin_dir


def _beat(hb: Path, worker: int, host: str, state: str, progress_age: float, file_age: float = 0) -> None:
    f = hb / f"worker-{worker}"
    f.write_text(f"{time.time() - progress_age:.0f} {host} {state} step 3\n")
    t = time.time() - file_age
    os.utime(f, (t, t))


def test_a_frozen_rank_is_named_and_only_the_steps_are_killed(tmp_path):
    hb = tmp_path / "hb"
    hb.mkdir()
    _beat(hb, 0, "nid1", "waiting", 60)
    _beat(hb, 1, "nid2", "working", 60, file_age=60)  # its process stopped rewriting the file
    r, bin_dir = _bash(tmp_path, "dfm_hpc_watchdog", squeue="7.0 7.batch 7.extern")
    assert r.returncode == 0, r.stderr
    why, bad = (tmp_path / "hung").read_text().splitlines()
    assert bad == "nid2" and why.startswith("no progress for"), why
    assert slurm_stubs.calls(bin_dir, "scancel") == ["scancel [--signal=KILL] [7.0]"]  # not the batch script


def test_the_rank_that_works_while_the_others_wait_is_named(tmp_path):
    hb = tmp_path / "hb"
    hb.mkdir()
    _beat(hb, 0, "nid1", "waiting", 60)
    _beat(hb, 1, "nid1", "waiting", 60)
    _beat(hb, 2, "nid3", "working", 60)
    _bash(tmp_path, "dfm_hpc_watchdog")
    assert (tmp_path / "hung").read_text().splitlines()[1] == "nid3"


def test_no_single_suspect_ends_the_step_but_names_no_node(tmp_path):
    hb = tmp_path / "hb"
    hb.mkdir()
    _beat(hb, 0, "nid1", "working", 60)
    _beat(hb, 1, "nid2", "working", 60)
    _bash(tmp_path, "dfm_hpc_watchdog")
    assert (tmp_path / "hung").read_text().splitlines()[1:] in ([], [""])


def test_progress_within_the_limit_is_not_a_hang(tmp_path):
    hb = tmp_path / "hb"
    hb.mkdir()
    _beat(hb, 0, "nid1", "working", 0)
    r, bin_dir = _bash(tmp_path, "timeout 4 bash -c \"$(declare -f dfm_hpc_watchdog); dfm_hpc_watchdog\" "
                                 "& while sleep 0.5; do touch $DFM_HPC_HEARTBEATS/worker-0; "
                                 "echo \"$(date +%s) nid1 working x\" > $DFM_HPC_HEARTBEATS/worker-0; done & "
                                 "sleep 4.5; kill %2")
    assert not (tmp_path / "hung").exists() and not slurm_stubs.calls(bin_dir, "scancel"), r.stderr


def _hung(tmp_path, bad="nid2"):
    run = tmp_path / "run"
    sdir = run / "stages" / "sft"
    sdir.mkdir(parents=True)
    (tmp_path / "hb").mkdir()
    (tmp_path / "hb" / "stage_dir").write_text(f"{sdir}\n")
    (tmp_path / "hung").write_text(f"no progress for 40 s (limit 30 s; frozen: {bad})\n{bad}\n")
    return run, sdir


def test_after_a_hang_the_node_is_recorded_excluded_from_waiting_jobs_and_the_job_requeued(tmp_path):
    run, sdir = _hung(tmp_path)
    (run / rundir.BAD_NODES).write_text("nid9 2026-12-01T00:00:00 cpt job 3: hung, earlier\n")
    # 8 waits for 7, 9 for 8 (through it), 10 for another job: only 8 and 9 are the chain's
    waiting = "'8 afterok:7(unfulfilled)' '9_[0-3] aftercorr:8_*(unfulfilled)' '10 afterok:5(unfulfilled)'"
    r, bin_dir = _bash(tmp_path, "dfm_hpc_after_hang; echo not-reached", squeue=waiting)
    assert r.returncode == 0 and "not-reached" not in r.stdout, r.stderr
    assert rundir.bad_nodes(run) == ["nid9", "nid2"]
    assert "sft job 7: hung, no progress for 40 s" in (run / rundir.BAD_NODES).read_text()
    sc = slurm_stubs.calls(bin_dir, "scontrol")
    assert sc == ["scontrol [update] [JobId=8] [ExcNodeList=nid2,nid9]",
                  "scontrol [update] [JobId=9] [ExcNodeList=nid2,nid9]",
                  "scontrol [requeue] [7]", "scontrol [update] [JobId=7] [ExcNodeList=nid2,nid9]"], sc
    assert not (sdir / rundir.FAILED).exists()


@pytest.mark.parametrize("values, why", [({"DFM_HPC_RESUMABLE": 0}, "sft cannot resume"),
                                         ({"SLURM_RESTART_COUNT": 10}, "restarted 10 times")])
def test_a_hang_that_cannot_be_requeued_fails_with_the_reason(tmp_path, values, why):
    run, sdir = _hung(tmp_path)
    r, bin_dir = _bash(tmp_path, "dfm_hpc_after_hang", **values)
    assert r.returncode == 1
    assert not [c for c in slurm_stubs.calls(bin_dir, "scontrol") if "requeue" in c]
    failed = (sdir / rundir.FAILED).read_text()
    assert why in failed and "no progress for 40 s" in failed and "rerun" in failed, failed


def test_a_failing_requeue_after_a_hang_fails_the_job(tmp_path):
    run, sdir = _hung(tmp_path)
    r, _ = _bash(tmp_path, "dfm_hpc_after_hang", scontrol='[ "$1" = requeue ] && exit 1; exit 0')
    assert r.returncode == 1 and "scontrol requeue failed" in (sdir / rundir.FAILED).read_text()


# ------------------------------------------------------------------ the limit and the rendered script

def test_the_limit_is_auto_from_the_prediction_a_set_value_or_off():
    def limits(*overrides):
        cfg = make_cfg(*overrides)
        return {r["stage"]: r["hang_minutes"] for r in predict.records(cfg, plan(cfg))}

    auto = limits("+experiment=munin_cpt", *LUMI)
    assert auto["cpt"] >= predict.HANG_FLOOR_MIN and auto["evaluate"] is None  # whole benchmarks apart: unwatched
    set_ = limits("+experiment=munin_cpt", *LUMI, "cluster.hang_minutes=12.5")
    assert set_ == {**auto, "cpt": 12.5, "tokenize": 12.5}
    assert set(limits("+experiment=munin_cpt", *LUMI, "cluster.hang_minutes=0").values()) == {None}
    assert set(limits("+experiment=pipeline_tiny").values()) == {None}  # local: there is no batch script


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    def render(*extra):
        cwd = tmp_path_factory.mktemp("render")
        p = dfm("+experiment=munin_sft", *LUMI, "dry_run=true", *extra, cwd=cwd)
        assert p.returncode == 0, p.stdout + p.stderr
        (run,) = run_dirs(cwd)
        return (run / "stages" / "sft" / "sbatch.sh").read_text()
    return render


def test_the_rendered_script_runs_the_watchdog_and_asks_no_wckey(scripts):
    text = scripts()
    assert "dfm_hpc_watchdog & dfm_hpc_watchdog_pid=$!" in text and "dfm_hpc_after_hang" in text
    assert "--wckey" not in text and "--mail-type" not in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_slurm_options_from_the_cluster_profile(scripts):
    text = scripts("cluster.hang_minutes=0", "cluster.wckey=dfm", "cluster.mail_type=[FAIL,REQUEUE]",
                   "cluster.mail_user=a@b.dk")
    assert "dfm_hpc_watchdog" not in text
    for line in ("#SBATCH --wckey=dfm", "#SBATCH --mail-type=FAIL,REQUEUE", "#SBATCH --mail-user=a@b.dk"):
        assert line in text


def test_an_unknown_mail_type_exits_2(tmp_path):
    p = dfm("+experiment=munin_sft", *LUMI, "dry_run=true", "cluster.mail_type=[FAILED]", cwd=tmp_path)
    assert p.returncode == 2 and "FAILED" in p.stdout + p.stderr and "REQUEUE" in p.stdout + p.stderr
    assert not run_dirs(tmp_path)


def test_a_rerun_keeps_avoiding_the_bad_nodes(tmp_path):
    p = dfm("+experiment=munin_sft", *LUMI, "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    (run / rundir.BAD_NODES).write_text("nid007 2026-12-06T10:00:00 sft job 9: hung, no progress for 1900 s\n")
    p = dfm("rerun", str(run), "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    new = [d for d in run_dirs(tmp_path) if d != run]
    assert new and rundir.bad_nodes(new[0]) == ["nid007"]
    assert "#SBATCH --exclude=nid007" in (new[0] / "stages" / "sft" / "sbatch.sh").read_text()
    s = dfm("status", str(new[0]), cwd=tmp_path)
    assert "bad nodes of" in s.stdout and "nid007" in s.stdout, s.stdout
