"""Attention choices, measured on this machine: how grouped-query attention shares key/value
heads, and what document masking costs and buys.

Run by hand: ``python bench/attention_bench.py [--steps 300 --model_name small]``.

1. Key/value sharing: ``scaled_dot_product_attention(..., enable_gqa=True)`` (torch >= 2.5)
   against expanding the key/value heads with ``repeat_interleave`` first, forward + backward,
   for TinyLlama's head layout (32 query heads, 4 key/value heads, head size 64); ratio
   expand / enable_gqa time (> 1: enable_gqa is faster). pajama uses enable_gqa where torch has it.
2. Document masking (``--document_mask true``): two runs of ``pajama pretrain`` on the bundled
   sample with the same seed, data order and token budget, one with and one without the
   mask. Reported: tokens/s (median step time after warm-up) and the validation loss of each
   model computed both ways on the same held-out sequences: packed (tokens see earlier
   documents in the sequence) and per document (masked: as a document is scored on its own).

The CPU's model and features are printed first: numbers only describe the machine they ran on.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pajama.generate import load_model
from pajama.hardware import cpu_info, emulated_isa
from pajama.loader import load_prepared, split_blocks
from pajama.model import document_ids
from pajama.prepare import prepare
from pajama.quickstart import SAMPLE
from pajama.tokenizer import train_tokenizer
from pajama.training import TrainConfig, pretrain


def time_attention(expand: bool, batch: int, seq: int, heads: int = 32, kv_heads: int = 4, head_size: int = 64, repeats: int = 5) -> float:
    """Seconds per forward + backward of causal attention, best of ``repeats``."""
    q = torch.randn(batch, heads, seq, head_size, requires_grad=True)
    k = torch.randn(batch, kv_heads, seq, head_size, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq, head_size, requires_grad=True)

    def step() -> None:
        if expand:
            kk, vv = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
            y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        y.sum().backward()

    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def key_value_sharing() -> None:
    print("\n-- key/value sharing (32 heads, 4 key/value heads, head size 64), forward + backward, fp32")
    if torch.__version__ < "2.5":
        print(f"  torch {torch.__version__} has no enable_gqa: pajama expands the key/value heads")
        return
    for batch, seq in ((8, 256), (2, 1024), (1, 2048)):
        shared, expanded = time_attention(False, batch, seq), time_attention(True, batch, seq)
        print(f"  batch {batch} x {seq:>5} tokens: enable_gqa {shared * 1e3:8.1f} ms, expand {expanded * 1e3:8.1f} ms, ratio expand / enable_gqa {expanded / shared:.2f}")


def validation_losses(run: Path, data: Path, block: int, bos: int, sequences: int) -> tuple[float, float]:
    """Mean loss (packed, per document) of the run's model on the first held-out sequences."""
    model, _ = load_model(run, torch.device("cpu"))
    _, val = split_blocks(load_prepared(data), block, 0.005, holdout=True)
    batches = [np.stack([s.stream.read((s.first + i) * block, block) for i in range(min(sequences, s.count))]) for s in val.values()]
    packed, alone = [], []
    with torch.no_grad():
        for batch in batches:
            x = torch.from_numpy(batch.astype(np.int64))
            targets = x[:, 1:].flatten()
            packed.append(F.cross_entropy(model(x[:, :-1]).flatten(0, 1), targets).item())
            alone.append(F.cross_entropy(model(x[:, :-1], doc_ids=document_ids(x[:, :-1], bos)).flatten(0, 1), targets).item())
    return statistics.mean(packed), statistics.mean(alone)


def document_masking(root: Path, data: Path, args) -> None:
    print(f"\n-- document masking: {args.model_name}, {args.steps} steps of 8 x {args.block_size} tokens each run, the default precision")
    bos = load_prepared(data).bos_id
    results = {}
    for masked in (False, True):
        out = root / f"mask-{masked}"
        pretrain(TrainConfig(
            train_data_dir=data, out_dir=out, model_name=args.model_name, block_size=args.block_size, batch_size=8,
            micro_batch_size=8, max_iters=args.steps, warmup_iters=max(1, args.steps // 20), learning_rate=1e-3,
            eval_interval=args.steps, save_interval=args.steps, eval_iters=2, log_interval=1, accelerator="cpu",
            document_mask=masked, resume="none",
        ))  # fmt: skip
        with open(out / "metrics.csv", newline="") as f:
            times = [float(r["step_time"]) for r in csv.DictReader(f) if r["step_time"]]
        rate = 8 * args.block_size / statistics.median(times[len(times) // 4 :])
        results[masked] = (rate, *validation_losses(out, data, args.block_size + 1, bos, 32))
    print(f"  {'run':<26}{'tokens/s':>10}{'val packed':>12}{'val per doc':>13}")
    for masked, (rate, packed, alone) in results.items():
        print(f"  {'with --document_mask' if masked else 'without':<26}{rate:10,.0f}{packed:12.4f}{alone:13.4f}")
    print(f"  cost: masked / unmasked tokens/s {results[True][0] / results[False][0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="small")
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}" + (f" [{emulated_isa()}]" if emulated_isa() else "") + f"; torch {torch.__version__}, {torch.get_num_threads()} threads")
    key_value_sharing()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_tokenizer(SAMPLE, root / "tok", vocab_size=4096, sample=True)
        prepare(SAMPLE, root / "tok" / "tokenizer.model", root / "data", sample=True, chunk_size=257 * 1024, num_workers=1)
        document_masking(root, root / "data", args)


if __name__ == "__main__":
    main()
