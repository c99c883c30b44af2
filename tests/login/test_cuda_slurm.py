"""cluster=cuda_slurm, the generic NVIDIA Slurm profile (Leonardo-like): its dry run renders an NVIDIA job
(--nv, NCCL, one rank per GPU, requeue), the keys left to fill in and a GPU count its nodes cannot give are
refused before anything is written, and the plan predicts from the device the profile names."""

from __future__ import annotations

import json
import re

import pytest

from helpers import dfm, run_dirs

SITE = ["cluster=cuda_slurm", "cluster.partition=boost_usr_prod", "cluster.account=X"]


@pytest.fixture(autouse=True)
def _no_site_account(monkeypatch):
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)  # the profile's account falls back to it


def _dry(tmp_path, *extra):
    p = dfm("+experiment=munin_sft", *SITE, "dry_run=true", *extra, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    (run,) = run_dirs(tmp_path)
    return p, run


def test_the_dry_run_renders_an_nvidia_job(tmp_path):
    p, run = _dry(tmp_path)
    s = (run / "stages" / "sft" / "sbatch.sh").read_text()
    for line in ("#SBATCH --account=X", "#SBATCH --partition=boost_usr_prod", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --exclusive",
                 "#SBATCH --requeue", "#SBATCH --kill-on-invalid-dep=yes",
                 'export NCCL_SOCKET_IFNAME="^lo,docker0"', 'export NCCL_NET_GDR_LEVEL="PHB"',
                 'export TORCH_NCCL_ASYNC_ERROR_HANDLING="1"', 'export HF_HUB_OFFLINE="1"',
                 'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                 'scontrol requeue "$DFM_HPC_JOB" && exit 0'):  # requeue as on LUMI: the shared host side
        assert line in s, line
    assert re.search(r"#SBATCH --signal=USR2@300", s)
    # RCCL's and LUMI's settings stay on LUMI: no Slingshot/CXI, MIOpen, LAIF module or hsn NICs
    for lumi in ("FI_CXI", "CXI_FORK_SAFE", "MIOPEN", "module load", "hsn0", "/appl/", "ROCR"):
        assert lumi not in s, lumi
    srun = next(line for line in s.splitlines() if line.startswith("srun "))
    # one rank per GPU: each task sees the node's 4 GPUs and takes its local rank's (NCCL keeps CUDA IPC)
    assert "--gpu-bind=none" in srun and "--cpu-bind=cores" in srun and "--gpus-per-task" not in srun
    assert re.search(r" singularity exec --nv \S+\.sif python -u -m submitit\.core\._submit ", srun), srun
    # evaluate is one process: one GPU of a shared node, not a whole exclusive node
    ev = (run / "stages" / "evaluate" / "sbatch.sh").read_text()
    assert "#SBATCH --gpus-per-node=1" in ev and "#SBATCH --ntasks-per-node=1" in ev
    assert "#SBATCH --exclusive" not in ev and "--mem=0" not in ev and " exec --nv " in ev
    # the plan names the hardware it predicts for, and says GPU where LUMI says GCD
    assert "predicted for h100 (989 TF bf16 per GPU)" in p.stdout
    assert re.search(r"memory: ~\d+ GB per GPU of 80 ", p.stdout)  # an H100's memory, not LUMI's 64 GB GCD


def test_the_plan_predicts_from_the_device_the_profile_names(tmp_path):
    _, run = _dry(tmp_path)
    sft = {r["stage"]: r for r in json.loads((run / "plan.json").read_text())["stages"]}["sft"]["prediction"]
    assert sft["device"] == "h100" and "MFU of 989 TF" in sft["rate"], sft
    b200 = tmp_path / "b200"
    b200.mkdir()
    p, run = _dry(b200, "cluster.device=b200")
    assert "predicted for b200 (2250 TF bf16 per GPU)" in p.stdout and " GB per GPU of 180 " in p.stdout
    fast = {r["stage"]: r for r in json.loads((run / "plan.json").read_text())["stages"]}["sft"]["prediction"]
    assert fast["device"] == "b200" and "of 2250 TF" in fast["rate"] and fast["hours"] < sft["hours"], fast


@pytest.mark.parametrize("extra, says", [
    (["sft.gpus_per_node=16"], "sft.gpus_per_node=16: cluster=cuda_slurm's nodes have 4 GPUs (cluster.gpus_per_node)"),
    (["cluster.device=h999"], "cluster.device='h999': no such throughput entry; known: mi250x_gcd, mi300x, a100, h100"),
])
def test_what_the_profile_cannot_give_exits_2_before_writing(tmp_path, extra, says):
    p = dfm("+experiment=munin_sft", *SITE, "dry_run=true", *extra, cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr
    assert says in p.stdout + p.stderr
    assert not (tmp_path / "runs").exists()


def test_the_keys_to_fill_in_are_refused_by_name(tmp_path):
    p = dfm("+experiment=munin_sft", "cluster=cuda_slurm", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr
    out = p.stdout + p.stderr
    assert "cluster.account is not set (<your project account, or export SBATCH_ACCOUNT>): give " \
           "cluster.account=..." in out, out
    assert "cluster.partition is not set (<the GPU partition, e.g. boost_usr_prod on Leonardo>)" in out, out
    assert not (tmp_path / "runs").exists()
    # the account may come from the environment, as on LUMI
    p = dfm("+experiment=munin_sft", "cluster=cuda_slurm", "cluster.partition=p", "dry_run=true", cwd=tmp_path,
            env={"SBATCH_ACCOUNT": "proj1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "#SBATCH --account=proj1" in p.stdout
