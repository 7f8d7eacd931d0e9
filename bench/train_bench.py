"""Training on a CPU, in one run: loop overhead, and whether the default precision is the fastest.

Run by hand: ``python bench/train_bench.py [--model_name small --steps 40 --rounds 2]``.

1. Overhead: pajama's tokens/s against a bare PyTorch loop of the same preset on the same
   prepared data (the bundled sample, tokenized with a small tokenizer trained here), one
   device, the same precision (the one pajama picks here), AdamW, micro-batch and gradient
   accumulation. They run alternately, ``rounds`` times each, and the median step time after
   warm-up is compared: the ratio is pajama / bare (goal >= 0.98). The CPU's bf16 and fp32
   matmul rates give MFU against what this machine can actually do.
2. Precision choice (``--precision_steps N``, 0 to skip): ``pajama pretrain`` without
   ``--precision`` against ``--precision 32-true`` and ``--precision bf16-mixed``, each in a
   fresh process; then the same with the instruction set capped at AVX2
   (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), which makes bf16 emulated as on CPUs
   without AVX512-BF16 or AMX. Goal: the default within 10 % of the fastest explicit choice.

The CPU's model and features are printed first: numbers only describe the machine they ran on.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pajama.hardware import cpu_info, emulated_isa
from pajama.loader import MixtureSampler, load_prepared, split_blocks, stream_weights
from pajama.model import LLaMA
from pajama.model_config import preset
from pajama.precision import choose_precision, compute_dtype
from pajama.prepare import prepare
from pajama.quickstart import SAMPLE
from pajama.tokenizer import train_tokenizer
from pajama.training import TrainConfig, pretrain


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def bare_loop(data_dir: Path, model_name: str, block_size: int, micro: int, accum: int, steps: int, precision: str) -> list[float]:
    """The smallest honest training loop: sample, forward, backward, clip, step."""
    torch.manual_seed(0)
    data = load_prepared(data_dir)
    config = preset(model_name).replace(vocab_size=data.vocab_size, block_size=block_size)
    train, _ = split_blocks(data, block_size + 1, 0.005, holdout=True)
    weights = stream_weights({n: s.stream.tokens for n, s in train.items()}, None, None)
    sampler = MixtureSampler(train, weights, block_size + 1, seed=0)
    model = LLaMA(config)
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(accum):
            batch = torch.from_numpy(sampler.read(sampler.draw(micro)))
            with torch.autocast("cpu", dtype=compute_dtype(precision), enabled=compute_dtype(precision) != torch.float32):
                logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def pajama_loop(data_dir: Path, out_dir: Path, model_name: str, block_size: int, micro: int, accum: int, steps: int, precision: str) -> list[float]:
    config = TrainConfig(
        train_data_dir=data_dir, out_dir=out_dir, model_name=model_name, block_size=block_size, micro_batch_size=micro,
        batch_size=micro * accum, max_iters=steps, eval_interval=10**9, save_interval=10**9, eval_iters=1, log_interval=1,
        accelerator="cpu", precision=precision, resume="none", learning_rate=3e-4, warmup_iters=1,
    )  # fmt: skip
    pretrain(config)
    with open(out_dir / "metrics.csv", newline="") as f:
        return [float(r["step_time"]) for r in csv.DictReader(f) if r["step_time"]]


def pretrain_process(data_dir: Path, out_dir: Path, args, precision: str | None, env: dict) -> tuple[float, str]:
    """tokens/s of ``pajama pretrain`` in a fresh process (median step after the first two), and
    the precision it ran in."""
    command = [
        sys.executable, "-m", "pajama.cli", "pretrain", "--train_data_dir", str(data_dir), "--out_dir", str(out_dir),
        "--model_name", args.model_name, "--block_size", str(args.block_size), "--micro_batch_size", str(args.micro_batch_size),
        "--batch_size", str(args.micro_batch_size * args.accumulation), "--max_iters", str(args.precision_steps),
        "--eval_interval", "1000000", "--save_interval", "1000000", "--eval_iters", "1", "--log_interval", "1",
        "--accelerator", "cpu", "--resume", "none", "--warmup_iters", "1",
    ] + (["--precision", precision] if precision else [])  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=True)
    chosen = re.search(r"^precision ([\w-]+)", result.stdout, re.M)[1]
    with open(out_dir / "metrics.csv", newline="") as f:
        times = [float(r["step_time"]) for r in csv.DictReader(f) if r["step_time"]]
    return args.micro_batch_size * args.accumulation * args.block_size / statistics.median(times[2:]), chosen


def precision_choice(data_dir: Path, root: Path, args) -> None:
    for run, (label, env) in enumerate((("this CPU", {}), ("capped at AVX2 (bf16 emulated)", AVX2_ONLY))):
        print(f"\n-- precision choice, {label}: {args.precision_steps} steps each, tokens/s")
        rates: dict[str, float] = {}
        for precision in (None, "32-true", "bf16-mixed"):
            rate, chosen = pretrain_process(data_dir, root / f"choice-{run}-{precision}", args, precision, env)
            name = f"default ({chosen})" if precision is None else precision
            rates[name] = rate
            print(f"  {name:<24}{rate:10,.0f}")
        default = next(v for k, v in rates.items() if k.startswith("default"))
        best = max(v for k, v in rates.items() if not k.startswith("default"))
        print(f"  default / fastest explicit {default / best:.3f}   (goal >= 0.90)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="small")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--micro_batch_size", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision_steps", type=int, default=5, help="steps per precision-choice run (0: skip that part)")
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}" + (f" [{emulated_isa()}]" if emulated_isa() else "") + f"; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_tokenizer(SAMPLE, root / "tok", vocab_size=4096, sample=True)
        prepare(SAMPLE, root / "tok" / "tokenizer.model", root / "data", sample=True, chunk_size=257 * 1024, num_workers=1)
        vocab = load_prepared(root / "data").vocab_size
        config = preset(args.model_name).replace(vocab_size=vocab, block_size=args.block_size)
        precision = choose_precision(None, "cpu", config, args.micro_batch_size * args.block_size).precision
        warm = args.steps // 4
        bare, ours = [], []
        for r in range(args.rounds):
            shape = (args.model_name, args.block_size, args.micro_batch_size, args.accumulation, args.steps, precision)
            bare.append(statistics.median(bare_loop(root / "data", *shape)[warm:]))
            ours.append(statistics.median(pajama_loop(root / "data", root / f"run{r}", *shape)[warm:]))
        tokens = args.micro_batch_size * args.accumulation * args.block_size
        bare_tps, ours_tps = tokens / min(bare), tokens / min(ours)
        flops = config.flops_per_token(args.block_size)
        bf16, fp32 = matmul_flops(torch.bfloat16), matmul_flops(torch.float32)
        print(f"\nmodel {args.model_name} ({config.num_parameters():,} parameters, vocab {vocab}), {torch.get_num_threads()} threads, "
              f"{args.micro_batch_size} x {args.block_size} tokens x {args.accumulation} accumulation, {precision}")  # fmt: skip
        print(f"bare PyTorch loop   {bare_tps:10,.0f} tokens/s   step times {[f'{t * 1000:.0f} ms' for t in bare]}")
        print(f"pajama pretrain     {ours_tps:10,.0f} tokens/s   step times {[f'{t * 1000:.0f} ms' for t in ours]}")
        print(f"ratio pajama / bare {ours_tps / bare_tps:10.3f}   (goal >= 0.98)")
        print(f"matmul peak: bf16 {bf16 / 1e9:,.0f} GFLOP/s, fp32 {fp32 / 1e9:,.0f} GFLOP/s")
        peak = bf16 if precision.startswith("bf16") else fp32
        print(f"MFU against the {'bf16' if peak is bf16 else 'fp32'} matmul rate: pajama {flops * ours_tps / peak:.1%}, bare {flops * bare_tps / peak:.1%}")
        if args.precision_steps:
            precision_choice(root / "data", root, args)


if __name__ == "__main__":
    main()
