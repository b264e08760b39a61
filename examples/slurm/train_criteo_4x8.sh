#!/usr/bin/env bash
# Submit a 4-node x 8-GPU DLF training job on Criteo through TorchX's slurm scheduler (run on a login node).
# Adapt the variables; everything in SHARED must be visible from all nodes. See docs/launching.md.
# Dry run (prints the sbatch script, submits nothing): DRYRUN=--dryrun bash examples/slurm/train_criteo_4x8.sh
set -euo pipefail

REPO=${REPO:-/shared/$USER/dlf_torchrec}          # checkout on the shared filesystem
VENV=${VENV:-$REPO/.venv-gpu}                     # venv built from requirements-gpu.txt (CUDA trio)
SHARED=${SHARED:-/shared/$USER/dlf}               # processed data + runs
RUN=${RUN:-criteo_dlf_$(date +%Y%m%d_%H%M%S)}
PARTITION=${PARTITION:-gpu}
CPU_PARTITION=${CPU_PARTITION:-cpu}
TIME=${TIME:-1-00:00:00}
IFNAME=${IFNAME:-ib0}                             # NCCL bootstrap/socket interface reachable between nodes
DRYRUN=${DRYRUN:-}

cd "$REPO"
# shellcheck disable=SC1091
source "$VENV/bin/activate"                       # srun --export=ALL hands PATH (torchrun, python) to every node

# 1. Preprocess once into shared storage (skipped by the trainer later if already done).
torchx run $DRYRUN -s slurm -cfg "partition=$CPU_PARTITION,time=04:00:00" \
    torchx_components/components.py:preprocess --cpu 16 --memMB 64000 \
    --config configs/criteo/dlf.yaml "dataset.output_dir=$SHARED/criteo"

# 2. Train: c10d rendezvous on the first node (port 29500), 32 NCCL ranks.
torchx run $DRYRUN -s slurm -cfg "partition=$PARTITION,time=$TIME" \
    torchx_components/components.py:train -j 4x8 --gpu 8 --cpu 64 --memMB 480000 --max_retries 1 \
    --name "dlf/$RUN" --env "NCCL_SOCKET_IFNAME=$IFNAME" \
    --config configs/criteo/dlf.yaml "dataset.output_dir=$SHARED/criteo" "training.output_dir=$SHARED/runs/$RUN"
