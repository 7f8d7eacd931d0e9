#!/bin/bash
# Pre-train on 2 nodes x 8 GPUs with MPI (Open MPI's mpirun shown; MPICH's mpiexec is alike).
# Needs mpi4py built against the cluster's MPI: pip install 'pajama[mpi]'. One process per GPU;
# pajama takes ranks and the main address from MPI. Rerun the same command to resume.
set -euo pipefail

mpirun -np 16 --map-by ppr:8:node --hostfile "${HOSTFILE:?set HOSTFILE (two hosts)}" \
    -x MASTER_PORT=29500 \
    pajama pretrain \
    --devices 8 --num_nodes 2 \
    --model_name 7B \
    --train_data_dir data/lit-redpajama \
    --out_dir out/7b \
    --batch_size 128 --micro_batch_size 8 \
    --activation_checkpointing full  # 8 x 2048 tokens of 7B activations need it on 80 GB (pajama pretrain ... --dry_run true)
