#!/bin/bash
# Pre-train on 2 nodes x 8 GPUs with torchrun. Run this on every node, with NODE_RANK set to
# 0 on the first node and 1 on the second, and MASTER_ADDR set to the first node's address.
# Rerunning the same command after an interruption resumes from the newest checkpoint.
#
# A rank that dies or hangs ends every rank within --collective_timeout (exit 76, the rank named;
# tracebacks in out/7b/failures, and torchrun's summary names the root cause). torchrun then
# restarts every process, up to --max-restarts times, and each restart resumes from the newest
# complete checkpoint. (pajama's --max_restarts is for its own launcher, not under torchrun.)
set -euo pipefail

torchrun \
    --nnodes 2 --nproc_per_node 8 --node_rank "${NODE_RANK:?set NODE_RANK}" \
    --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port 29500 \
    --max-restarts 3 \
    -m pajama.cli pretrain \
    --devices 8 --num_nodes 2 \
    --model_name 7B \
    --train_data_dir data/lit-redpajama \
    --out_dir out/7b \
    --batch_size 128 --micro_batch_size 8 \
    --activation_checkpointing full  # 8 x 2048 tokens of 7B activations need it on 80 GB (pajama pretrain ... --dry_run true)
