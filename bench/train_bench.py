"""Training loop overhead: pajama's tokens/s against a bare PyTorch loop, same model, batch and data.

Run by hand: ``python bench/train_bench.py [--model_name small --steps 40 --rounds 2]``.

Both loops train the same preset on the same prepared data (the bundled sample, tokenized with
a small tokenizer trained here), one device, bf16 autocast, AdamW, the same micro-batch and
gradient accumulation. They run alternately, ``rounds`` times each, and the median step time
after warm-up is compared: the ratio is pajama / bare (goal >= 0.98). The CPU's bf16 and fp32
matmul rates are measured too, giving MFU against what this machine can actually do.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pajama.loader import MixtureSampler, load_prepared, split_blocks
from pajama.model import LLaMA, preset
from pajama.prepare import prepare
from pajama.quickstart import SAMPLE
from pajama.tokenizer import train_tokenizer
from pajama.train import TrainConfig, pretrain


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def bare_loop(data_dir: Path, model_name: str, block_size: int, micro: int, accum: int, steps: int) -> list[float]:
    """The smallest honest training loop: sample, forward, backward, clip, step."""
    torch.manual_seed(0)
    data = load_prepared(data_dir)
    config = preset(model_name).replace(vocab_size=data.vocab_size, block_size=block_size)
    train, _ = split_blocks(data, block_size + 1, 0.005, holdout=True)
    sampler = MixtureSampler(train, None, block_size + 1, seed=0)
    model = LLaMA(config)
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(accum):
            batch = torch.from_numpy(sampler.read(sampler.draw(micro)))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def pajama_loop(data_dir: Path, out_dir: Path, model_name: str, block_size: int, micro: int, accum: int, steps: int) -> list[float]:
    config = TrainConfig(
        train_data_dir=data_dir, out_dir=out_dir, model_name=model_name, block_size=block_size, micro_batch_size=micro,
        batch_size=micro * accum, max_iters=steps, eval_interval=10**9, save_interval=10**9, eval_iters=1, log_interval=1,
        accelerator="cpu", precision="bf16-mixed", resume="none", learning_rate=3e-4, warmup_iters=1,
    )  # fmt: skip
    pretrain(config)
    with open(out_dir / "metrics.csv", newline="") as f:
        return [float(r["step_time"]) for r in csv.DictReader(f) if r["step_time"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="small")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--micro_batch_size", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_tokenizer(SAMPLE, root / "tok", vocab_size=4096, sample=True)
        prepare(SAMPLE, root / "tok" / "tokenizer.model", root / "data", sample=True, chunk_size=257 * 1024, num_workers=1)
        warm = args.steps // 4
        bare, ours = [], []
        for r in range(args.rounds):
            bare.append(statistics.median(bare_loop(root / "data", args.model_name, args.block_size, args.micro_batch_size, args.accumulation, args.steps)[warm:]))
            ours.append(statistics.median(pajama_loop(root / "data", root / f"run{r}", args.model_name, args.block_size, args.micro_batch_size, args.accumulation, args.steps)[warm:]))
        vocab = load_prepared(root / "data").vocab_size
    tokens = args.micro_batch_size * args.accumulation * args.block_size
    config = preset(args.model_name).replace(vocab_size=vocab, block_size=args.block_size)
    bare_tps, ours_tps = tokens / min(bare), tokens / min(ours)
    flops = config.flops_per_token(args.block_size)
    bf16, fp32 = matmul_flops(torch.bfloat16), matmul_flops(torch.float32)
    print(f"\nmodel {args.model_name} ({config.num_parameters():,} parameters, vocab {vocab}), {torch.get_num_threads()} threads, "
          f"{args.micro_batch_size} x {args.block_size} tokens x {args.accumulation} accumulation, bf16 autocast")  # fmt: skip
    print(f"bare PyTorch loop   {bare_tps:10,.0f} tokens/s   step times {[f'{t * 1000:.0f} ms' for t in bare]}")
    print(f"pajama pretrain     {ours_tps:10,.0f} tokens/s   step times {[f'{t * 1000:.0f} ms' for t in ours]}")
    print(f"ratio pajama / bare {ours_tps / bare_tps:10.3f}   (goal >= 0.98)")
    print(f"matmul peak: bf16 {bf16 / 1e9:,.0f} GFLOP/s, fp32 {fp32 / 1e9:,.0f} GFLOP/s")
    print(f"MFU against the bf16 matmul rate: pajama {flops * ours_tps / bf16:.1%}, bare {flops * bare_tps / bf16:.1%}")


if __name__ == "__main__":
    main()
