"""cluster=node on the login side: the GPUs found here in the plan and in the ranks' environment, the predictions
from their own throughput entry, and a stage asking more GPUs than there are. An `nvidia-smi` on PATH that prints
a published H100 node's output (tests/data/gpus) stands in for the driver the dev VM does not have."""

from __future__ import annotations

import os

from dfm_hpc.login.local import node_gpus
from dfm_hpc.plan import StageJob

from helpers import DATA, dfm, run_dirs


def _nvidia_smi(tmp_path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat {DATA / 'gpus' / 'nvidia-smi-8xh100.csv'}\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.endswith("VISIBLE_DEVICES")}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_an_h100_node_in_the_plan(tmp_path):
    env = _nvidia_smi(tmp_path)
    p = dfm("+experiment=pipeline_tiny", "cluster=node", "cluster.gpus_per_node=2", "dry_run=true", cwd=tmp_path,
            env=env)
    assert p.returncode == 0, p.stderr
    out = " ".join(p.stdout.split())
    assert "GPUs: 8 x NVIDIA H100 80GB HBM3, 80 GiB (CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7); the first 2 of 8 used, " \
           "one rank per GPU" in out, p.stdout
    assert "predicted for h100 (989 TF bf16 per GPU)" in out and "~2 GB per GPU of 86 (sequence_parallel" in out
    (run,) = run_dirs(tmp_path)
    sft = (run / "stages" / "sft" / "sbatch.sh").read_text()
    assert "# cluster=node: 2 processes of" in sft and "CUDA_VISIBLE_DEVICES=0,1 and LOCAL_RANK" in sft
    assert "CUDA_VISIBLE_DEVICES=0 and" in (run / "stages" / "evaluate" / "sbatch.sh").read_text()  # one process
    assert "CUDA_VISIBLE_DEVICES= and" in (run / "stages" / "card" / "sbatch.sh").read_text()  # needs no GPU
    recorded = (run / "config.yaml").read_text()  # what the run found, for the card and a rerun elsewhere
    assert "- '7: NVIDIA H100 80GB HBM3, 80 GiB'" in recorded and "device: h100" in recorded
    assert "device_memory_gb: 85.5" in recorded  # the driver's figure, not the datasheet's, holds the memory check

    more = dfm("+experiment=pipeline_tiny", "cluster=node", "sft.gpus_per_node=9", cwd=tmp_path, env=env)
    assert more.returncode == 2 and "sft: 9 GPUs asked for, 8 found on this machine" in more.stderr, more.stderr


def test_fake_gpus_and_none(tmp_path):
    p = dfm("+experiment=pipeline_tiny", "cluster=node", "dry_run=true", cwd=tmp_path,
            env={"CUDA_VISIBLE_DEVICES": "0,1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    out = " ".join(p.stdout.split())
    assert "GPUs: 2 x unknown GPU (CUDA_VISIBLE_DEVICES=0,1)" in out
    assert "neither nvidia-smi nor rocm-smi answered here" in out and "predicted as h100" in out
    (run,) = run_dirs(tmp_path)  # a rerun on a machine without the GPUs the run recorded is refused
    moved = dfm("rerun", str(run), cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0", "PATH": "/usr/bin:/bin"})
    assert moved.returncode == 2, moved.stdout + moved.stderr
    assert "the run's GPUs (CUDA_VISIBLE_DEVICES=0,1) are not all on this machine (found: 0)" in moved.stderr
    none = dfm("+experiment=sft_tiny", "cluster=node", "dry_run=true", cwd=tmp_path,
               env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert none.returncode == 0, none.stderr
    assert "GPUs: none found here" in none.stdout and "the ranks compute on the CPU, 2 per stage" in none.stdout


def test_each_rank_sees_the_stages_gpus(monkeypatch):
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")  # the launcher's own: would narrow the ranks' list again
    job = StageJob("sft", 1, 2, 2, 1, 10, None, None)
    env = {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "1"}
    node_gpus(env, "CUDA_VISIBLE_DEVICES=4,5,6", job)
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5" and "HIP_VISIBLE_DEVICES" not in env
    assert "ROCR_VISIBLE_DEVICES" not in env and int(env["OMP_NUM_THREADS"]) >= 1


def test_a_gpu_without_an_entry_says_what_it_is_predicted_as():
    from omegaconf import OmegaConf

    from dfm_hpc.login.node import plan_lines

    def lines(found, device=None):
        cluster = dict(tasks_per_node=2, gpus_per_node=2, device=device, gpus=found,
                       visible_devices="CUDA_VISIBLE_DEVICES=0,1")
        return plan_lines(OmegaConf.create(dict(cluster=cluster, throughput=dict(device="auto", devices={"h100": {}}))))

    l40s = ["0: NVIDIA L40S, 45 GiB", "1: NVIDIA L40S, 45 GiB"]
    assert lines(l40s)[1].startswith("  NVIDIA L40S has no entry in the peak and throughput tables: predicted as h100")
    assert "mixed GPUs (NVIDIA H100 80GB HBM3, NVIDIA L40S)" in lines(l40s[:1] + ["1: NVIDIA H100 80GB HBM3"])[1]
    assert lines(l40s, device="h100") == ["GPUs: 2 x NVIDIA L40S, 45 GiB (CUDA_VISIBLE_DEVICES=0,1); all used, "
                                          "one rank per GPU"]  # the user said which entry: nothing to add
    assert lines(None) == []  # a profile that does not look for GPUs (local, Slurm)
