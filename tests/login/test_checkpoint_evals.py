"""The checkpoint evaluations' login side (login/checkpoint_evals.py + .sh): the training job's host-side lines, the
evaluate job's script rendered at plan time (LUMI: one small-g GCD), the queue pass run in bash with a recording
sbatch, and the plan-time refusals."""

from __future__ import annotations

import os
import subprocess

from dfm_hpc import rundir
from dfm_hpc.login import checkpoint_evals, checks, slurm
from dfm_hpc.plan import plan

from helpers import LUMI, dfm, make_cfg, run_dirs, slurm_stubs


def _render(tmp_path, *overrides):
    cfg = make_cfg("+experiment=munin_sft", *LUMI, *overrides)
    (job,) = [j for j in plan(cfg) if j.stage == "sft"]
    folder = tmp_path / "stages" / "sft" / "submitit"
    params = slurm.executor_params(job, job.cluster, "dfm-munin_sft-sft")
    return job, folder, slurm.render(params, folder, slurm.python_command(cfg.cluster), 1, job)


def test_the_training_job_queues_each_kept_checkpoint_from_the_host_side(tmp_path):
    job, folder, text = _render(tmp_path, "sft.eval_checkpoints=2", "sft.eval_checkpoints_time=01:30:00")
    assert job.eval_checkpoints == 2 and job.eval_minutes == 90
    lines = text.splitlines()
    queue = f'export {rundir.CHECKPOINT_QUEUE_ENV}={folder}/checkpoint_queue."$SLURM_JOB_ID"'
    start = "dfm_hpc_checkpoint_evals & dfm_hpc_checkpoint_evals_pid=$!"
    assert queue in lines and start in lines
    assert f"# checkpoint evaluations: one saved checkpoint in 2 (counted in order) is scored by its own job " \
           f"({folder}/checkpoint_eval.sh: 1 task, 1 GPU, 90 min)" in text
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert lines.index(start) < srun  # beside the step: started before it, never waited for
    stop, last = lines.index('kill "$dfm_hpc_checkpoint_evals_pid" 2>/dev/null'), lines.index(
        "dfm_hpc_queue_checkpoint_evals")
    # after the step (the final save's checkpoint), before the end-state rule can exit or requeue
    assert srun < stop < last < lines.index('if [ -e "$DFM_HPC_REQUEUE_MARKER" ] && [ "$dfm_hpc_rc" -eq 0 ]; then')
    ev = (folder / checkpoint_evals.EVAL_SCRIPT).read_text()  # rendered now, beside the training job's
    for want in ("#SBATCH --partition=small-g", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=7", "#SBATCH --mem-per-gpu=60G", "#SBATCH --time=90",
                 "#SBATCH --account=project_465000670", "#SBATCH --job-name=dfm-munin_sft-sft-ckpt-eval",
                 "module load lumi-aif-singularity-bindings", 'python -u -m dfm_hpc.job.checkpoint_eval "$@"'):
        assert want in ev, want
    assert "--requeue" not in ev and "--exclusive" not in ev and "singularity run" in ev


def test_the_plan_says_how_many_saves_are_scored():
    from dfm_hpc import predict

    cfg = make_cfg("+experiment=munin_sft", *LUMI, "sft.eval_checkpoints=2", "sft.max_steps=2100")
    (job,) = [j for j in plan(cfg) if j.stage == "sft"]
    # saves at 500, 1000, 1500, 2000 and the last step: every 2nd of them
    assert "; checkpoint evaluations: 2 of its 5 saves, each by its own one-device job (at most 04:00:00); data:" \
        in predict.summary(cfg, "sft", job)


def test_off_renders_nothing(tmp_path):
    job, folder, text = _render(tmp_path, "sft.eval_checkpoints=0")
    assert job.eval_checkpoints == 0 and "checkpoint_evals" not in text
    assert not (folder / checkpoint_evals.EVAL_SCRIPT).exists()


def _queue_pass(tmp_path, steps):
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir, names=("sbatch",), bodies={
        "sbatch": f'echo "${{SLURM_JOB_ID:-unset}} ${{SLURM_CONF:-}}" >> "{tmp_path}/env"; echo "4242;cluster"'})
    queue, run = tmp_path / "queue", tmp_path / "run"
    (run / "stages" / "sft" / "checkpoint_evals" / "logs").mkdir(parents=True)
    queue.mkdir()
    for s in steps:
        (queue / f"step-{s}").write_text(f"{run}\nsft\n{s}\n")
    (queue / ".step-9").write_text("half")  # being written: never read
    env = {**os.environ, **slurm_stubs.env(bin_dir), "SLURM_JOB_ID": "77", "SLURM_CONF": "/etc/slurm.conf",
           rundir.CHECKPOINT_QUEUE_ENV: str(queue), "DFM_HPC_CHECKPOINT_SCRIPT": "/x/checkpoint_eval.sh",
           "DFM_HPC_CHECKPOINT_TICK_S": "1"}
    script = checkpoint_evals.SCRIPT.read_text() + "\ndfm_hpc_queue_checkpoint_evals"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    return r, bin_dir, queue, run / "stages" / "sft" / "checkpoint_evals"


def test_the_queue_pass_sbatches_each_named_checkpoint_once_without_the_jobs_slurm_values(tmp_path):
    r, bin_dir, queue, d = _queue_pass(tmp_path, [2, 4])
    assert r.returncode == 0, r.stderr
    calls = slurm_stubs.calls(bin_dir, "sbatch")
    assert calls == [f"sbatch [--parsable] [--output={d}/logs/step-{s}.sbatch.log] "
                     f"[--error={d}/logs/step-{s}.sbatch.log] [/x/checkpoint_eval.sh] "
                     f"[{d.parents[2]}] [sft] [{s}]" for s in (2, 4)], calls
    assert [(d / f"step-{s}.job_id").read_text() for s in (2, 4)] == ["4242\n", "4242\n"]
    assert sorted(p.name for p in queue.iterdir()) == [".step-9"]  # done requests gone; the half one left
    # a job of its own: this job's SLURM_* do not reach sbatch (they would shape the new job), SLURM_CONF does
    assert (tmp_path / "env").read_text().split("\n")[:2] == ["unset /etc/slurm.conf"] * 2
    assert "evaluation queued as job 4242" in r.stderr


def test_a_failed_sbatch_keeps_the_request_for_the_next_pass(tmp_path):
    bin_dir = tmp_path / "bin"
    r, _, queue, d = _queue_pass(tmp_path, [3])
    slurm_stubs.install(bin_dir, names=("sbatch",), bodies={"sbatch": "exit 1"})
    env = {**os.environ, **slurm_stubs.env(bin_dir), rundir.CHECKPOINT_QUEUE_ENV: str(queue),
           "DFM_HPC_CHECKPOINT_SCRIPT": "/x/s.sh"}
    (queue / "step-5").write_text(f"{d.parents[2]}\nsft\n5\n")
    r = subprocess.run(["bash", "-c", checkpoint_evals.SCRIPT.read_text() + "\ndfm_hpc_queue_checkpoint_evals"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert (queue / "step-5").exists() and not (d / "step-5.job_id").exists()
    assert "sbatch of the step-5 evaluation failed" in r.stderr


def test_bad_values_are_refused_at_plan_time(tmp_path):
    base = ("+experiment=sft_tiny", "sft.eval_checkpoints=1")
    assert any("sft.eval_checkpoints_time: cannot read walltime 'soon'" in p
               for p in checks.check_stages(make_cfg(*base, "sft.eval_checkpoints_time=soon")))
    problems = checks.check_config(make_cfg(*base, "sft.eval_checkpoints_time=1:99:00", "sft.save_every_steps=20"))
    assert any(p.startswith("sft.eval_checkpoints_time='1:99:00': minutes and seconds") for p in problems), problems
    assert not any("sft.eval_checkpoints=" in p for p in problems), problems  # a trial's single save: no curve
    assert not checks.check_config(make_cfg(*base))  # sft_tiny: 20 steps, a checkpoint every 10
    p = dfm("+experiment=sft_tiny", "sft.eval_checkpoints=-1", f"runs_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert p.returncode == 2 and "sft.eval_checkpoints" in p.stdout + p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_cancel_reaches_the_queued_checkpoint_evaluations_and_only_them(tmp_path):
    p = dfm("+experiment=demo", "cluster=slurm", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(tmp_path)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("dry_run: true", "dry_run: false"))  # as if it had been submitted
    d = run / "stages" / "demo" / rundir.CHECKPOINT_EVALS
    d.mkdir(parents=True)
    (d / "step-2.job_id").write_text("901\n")
    (d / "step-4.job_id").write_text("902\n")
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir)
    (bin_dir / "squeue.out").write_text("901|901|dfm-demo-demo-ckpt-eval\n902|902|someone-elses-job\n")
    p = dfm("cancel", str(run), cwd=tmp_path, env=slurm_stubs.env(bin_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert slurm_stubs.calls(bin_dir, "scancel") == ["scancel [--] [901]"]
    assert "job 902 is named 'someone-elses-job'" in p.stderr
