#!/bin/bash

# Parameters
#SBATCH --account=project_465000670
#SBATCH --cpus-per-task=7
#SBATCH --dependency='afterok:<job id of sft>'
#SBATCH --error=/tmp/oldrun/runs/munin_sft/2026-12-01_22-08-49_b2daf7/stages/evaluate/submitit/%j_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=dfm-munin_sft-evaluate
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --mem-per-gpu=60G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/tmp/oldrun/runs/munin_sft/2026-12-01_22-08-49_b2daf7/stages/evaluate/submitit/%j_0_log.out
#SBATCH --partition=small-g
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --time=120
#SBATCH --wckey=submitit

# setup
# dfm_hpc: environment of cluster=lumi
export NCCL_SOCKET_IFNAME="hsn0,hsn1,hsn2,hsn3"
export NCCL_NET_GDR_LEVEL="PHB"
export NCCL_CROSS_NIC="1"
export FI_CXI_DEFAULT_CQ_SIZE="131072"
export FI_CXI_DISABLE_CQ_HUGETLB="1"
export CXI_FORK_SAFE="1"
export CXI_FORK_SAFE_HP="1"
export OMP_NUM_THREADS="7"
export TOKENIZERS_PARALLELISM="false"
export MIOPEN_USER_DB_PATH="/tmp/$USER-miopen-$SLURM_JOB_ID"
export MIOPEN_CUSTOM_CACHE_DIR="/tmp/$USER-miopen-$SLURM_JOB_ID"
export HF_HOME="/scratch/project_465000670/hf-cache"
export TORCH_EXTENSIONS_DIR="/scratch/project_465000670/torch-extensions"
export HF_HUB_OFFLINE="1"
export HF_DATASETS_OFFLINE="1"
export TRANSFORMERS_OFFLINE="1"
export WANDB_MODE="offline"
export SINGULARITYENV_PREPEND_PATH="/user-software/bin"
# rendezvous: first host of the allocation, a port derived from the job id
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
export DFM_HPC_LAUNCHER=srun
export DFM_HPC_NPROC_PER_NODE=1

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /tmp/oldrun/runs/munin_sft/2026-12-01_22-08-49_b2daf7/stages/evaluate/submitit/%j_%t_log.out --error /tmp/oldrun/runs/munin_sft/2026-12-01_22-08-49_b2daf7/stages/evaluate/submitit/%j_%t_log.err --cpus-per-task=7 --kill-on-bad-exit=1 singularity exec -B /var/spool/slurmd,/opt/cray,/usr/lib64/libcxi.so.1,/usr/lib64/libjansson.so.4,/pfs,/scratch/project_465000670,/project/project_465000670,/flash/project_465000670,/appl,/project/project_465000670/dfm_hpc/dfm_hpc-venv.sqsh:/user-software:image-src=/ /appl/local/laifs/containers/lumi-multitorch-u24r70f21m50t210-20260415_130625/lumi-multitorch-full-u24r70f21m50t210-20260415_130625.sif python -u -m submitit.core._submit /tmp/oldrun/runs/munin_sft/2026-12-01_22-08-49_b2daf7/stages/evaluate/submitit
