"""`chat` on the login side (login/chat.py): which model a run offers, clear refusals, and the serving job a
cluster gets (`--dry-run`). The chat itself, with a real tiny model: tests/e2e/test_chat_local.py and
test_chat_slurm.py; the cluster chat's client: test_chat_remote.py."""

from __future__ import annotations

import subprocess

import pytest

from helpers import LUMI, dfm, run_dirs


@pytest.fixture(scope="module")
def lumi_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("chat")
    p = dfm("+experiment=munin_sft", *LUMI, "dry_run=true", cwd=cwd)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(cwd)
    return cwd, run


def test_a_run_without_a_trained_model_is_refused_with_the_way_out(lumi_run):
    cwd, run = lumi_run
    p = dfm("chat", str(run), cwd=cwd)
    assert p.returncode == 2 and "no trained model yet" in p.stderr and "--stage base" in p.stderr, p.stderr


def test_on_lumi_the_dry_run_renders_a_one_gcd_serving_job_and_its_cost(lumi_run):
    cwd, run = lumi_run
    model = run / "stages" / "sft" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    p = dfm("chat", str(run), "cluster=lumi", f"cluster.account={LUMI[1].split('=')[1]}", "--dry-run", cwd=cwd)
    assert p.returncode == 0, p.stderr
    assert "1 GPU, partition small-g, walltime 60 min" in p.stdout and "billing units" in p.stdout, p.stdout
    script = (run / "chat" / "sbatch.sh").read_text()
    for line in ("#SBATCH --partition=small-g", "#SBATCH --gpus-per-node=1", "#SBATCH --time=60",
                 "TORCH_COMPILE_DISABLE=1", "MAP_HIP_TO_ROCR_VISIBLE_DEVICES=1", "--backend vllm",
                 "VLLM_NO_USAGE_STATS=1", "HF_HUB_OFFLINE"):
        assert line in script, line
    assert f'-m dfm_hpc.job.chat_server "{model}" --name "{run.name}-sft" --run-dir "{run}"' in script
    assert "served by vllm" in p.stdout and "nothing was submitted" in p.stdout
    assert "--requeue" not in script and "--dependency" not in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_off_lumi_the_server_follows_evaluate_server_and_its_arguments_reach_it(lumi_run):
    cwd, run = lumi_run
    p = dfm("chat", str(run), "--stage", "base", "cluster=slurm", "evaluate.server=transformers",
            "evaluate.server_args=[--foo, 'a b']", "--dry-run", cwd=cwd)
    assert p.returncode == 0, p.stderr
    script = (run / "chat" / "sbatch.sh").read_text()
    assert "--backend transformers" in script and "served by transformers" in p.stdout
    assert '"--server-arg=--foo" "--server-arg=a b"' in script, script
    p = dfm("chat", str(run), "--stage", "base", "cluster=slurm", "--dry-run", cwd=cwd)
    assert p.returncode == 0 and "--backend vllm" in (run / "chat" / "sbatch.sh").read_text()  # server: none


def test_an_unknown_stage_and_a_missing_stage_model_are_refused(lumi_run):
    cwd, run = lumi_run
    assert dfm("chat", str(run), "--stage", "merge", cwd=cwd).returncode == 2
    p = dfm("chat", str(run), "--stage", "dpo", cwd=cwd)
    assert p.returncode == 2 and "no dpo model yet" in p.stderr, p.stderr
