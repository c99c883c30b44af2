"""Issue #11: cancel acts only on what the run itself started; SIGINT/SIGTERM stop a local launch cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import dfm, run_dirs, slurm_stubs, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()[:1] \
        not in ("Z", "")


@pytest.fixture
def dry_run_dir(tmp_path):
    """A run dir made by the CLI; its config says dry_run=false, as if it had been submitted."""
    p = dfm("+experiment=demo", "cluster=slurm", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("dry_run: true", "dry_run: false"))
    return run


def test_cancel_never_signals_a_bystander_or_a_foreign_job(dry_run_dir, tmp_path):
    run = dry_run_dir
    from dfm_hpc.rundir import proc_start

    bystander = subprocess.Popen(["sleep", "120"])  # same user, not this run's
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              env={**os.environ, "DFM_HPC_RUN_DIR": str(run.resolve())})  # really this run's
    try:
        marker = f"DFM_HPC_RUN_DIR={run.resolve()}".encode()
        wait_for(lambda: marker in Path(f"/proc/{marked.pid}/environ").read_bytes(), timeout=30, every=0.05,
                 what="the marked process to exec")
        sdir = run / "stages" / "demo"
        (sdir / "pids").write_text(
            f"-1 1\n0 1\n1 {proc_start(1)}\n{bystander.pid} 12345\n"  # never -1, 0, 1; a reused pid
            f"{bystander.pid} {proc_start(bystander.pid)}\n"  # right start time, but not a rank of this run
            f"{os.getpid()}\nnot-a-pid\n{marked.pid} {proc_start(marked.pid)}\n")
        (sdir / "job_id").write_text("--user=victim\n")
        (run / "stages" / "demo_check" / "job_id").write_text("777\n")
        bin_dir = tmp_path / "bin"
        slurm_stubs.install(bin_dir)
        (bin_dir / "squeue.out").write_text("777|777|someone-elses-job\n")  # 777 is not this run's job now
        p = dfm("cancel", str(run), cwd=tmp_path, env=slurm_stubs.env(bin_dir))
        assert p.returncode == 0, p.stderr
        assert slurm_stubs.calls(bin_dir, "scancel") == []
        assert "'--user=victim' is not a Slurm job id" in p.stderr and "not this run's job" in p.stderr
        assert "is another process now" in p.stderr and "not a rank of this run" in p.stderr
        wait_for(lambda: not _alive(marked.pid), timeout=10, every=0.2, what="the run's own process to stop")
        assert _alive(bystander.pid) and _alive(os.getpid())
        assert f"local processes {marked.pid}" in p.stdout
        # the job is this run's again: it is cancelled, by its id only
        (bin_dir / "squeue.out").write_text("777|777|dfm-demo-demo_check\n")
        (sdir / "job_id").unlink()
        p = dfm("cancel", str(run), cwd=tmp_path, env=slurm_stubs.env(bin_dir))
        assert p.returncode == 0 and slurm_stubs.calls(bin_dir, "scancel") == ["scancel [--] [777]"], p.stderr
        assert _alive(bystander.pid)
    finally:
        for proc in (bystander, marked):
            proc.kill()
            proc.wait()


def test_cancel_of_a_dry_run_says_there_is_nothing_to_cancel(tmp_path):
    p = dfm("+experiment=demo", "cluster=slurm", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0
    (run,) = run_dirs(tmp_path)
    c = dfm("cancel", str(run), cwd=tmp_path)
    assert c.returncode == 2 and "dry run" in c.stderr and "cancelled" not in c.stdout
    assert not (run / "stages" / "demo" / "CANCELLED").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_stops_the_local_ranks(sig, tmp_path):
    from dfm_hpc.rundir import own_processes

    proc = subprocess.Popen([sys.executable, "-m", "dfm_hpc", "+experiment=demo", "demo.sleep_s=120"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids_file = wait_for(lambda: next(iter(tmp_path.glob("runs/demo/*/stages/demo/pids")), None), timeout=60,
                             every=0.2, what="the ranks to start")
        sdir = pids_file.parent
        # (until a rank has exec'd, /proc shows the launcher's environment, without the run's marker)
        pids = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(own_processes(sdir, sdir.parent.parent)[0]),
                        timeout=30, every=0.1, what="both ranks to carry the run's marker")
        time.sleep(1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, out + err
    assert "stopped the ranks of stage demo" in out
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=15, every=0.2, what="the ranks to exit")
    assert (sdir / "CANCELLED").exists() and not (sdir / "pids").exists()
    (run,) = run_dirs(tmp_path)
    st = dfm("status", str(run), cwd=tmp_path)
    assert "CANCELLED" in st.stdout and "RUNNING" not in st.stdout


def test_cancel_reaches_a_stage_resumed_in_place(dry_run_dir, tmp_path):
    """rerun links an unfinished stage of the old run and runs it there: its job is the new run's."""
    import shutil

    old = dry_run_dir
    new = old.parent / "2099-01-01_00-00-00_abcdef"
    shutil.copytree(old, new, ignore=shutil.ignore_patterns("stages"))
    (new / "stages").mkdir()
    (new / "stages" / "demo").symlink_to(old / "stages" / "demo", target_is_directory=True)
    (old / "stages" / "demo" / "job_id").write_text("888\n")
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir)
    (bin_dir / "squeue.out").write_text("888|888|dfm-demo-demo\n")
    p = dfm("cancel", str(new), cwd=tmp_path, env=slurm_stubs.env(bin_dir))
    assert p.returncode == 0 and slurm_stubs.calls(bin_dir, "scancel") == ["scancel [--] [888]"], p.stdout + p.stderr


def test_a_refused_submission_withdraws_what_this_launch_queued(tmp_path):
    bin_dir = tmp_path / "bin"
    log = slurm_stubs.install(bin_dir)
    (bin_dir / "sbatch").write_text(f"""#!/bin/bash
echo "sbatch $*" >> "{log}"
n=$(grep -c '^sbatch' "{log}")
if [ "$n" -ge 2 ]; then echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi
echo "Submitted batch job 4242"
""")
    p = dfm("+experiment=demo", "cluster=slurm", cwd=tmp_path, env=slurm_stubs.env(bin_dir))
    assert p.returncode == 1 and "QOSMaxSubmitJobPerUserLimit" in p.stdout, p.stdout + p.stderr
    assert slurm_stubs.calls(bin_dir, "scancel") == ["scancel [--] [4242]"]
    assert "cancelled the jobs this launch had queued: 4242" in p.stdout
