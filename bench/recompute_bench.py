"""Activation recompute on a CPU: step time and memory of each --activation_checkpointing mode,
as ratios to ``none`` measured in the same run.

Run by hand: ``python bench/recompute_bench.py [--model_name small --micro_batch_size 8 --block_size 512 --steps 6]``.

Each mode trains the same model (pajama's model, chunked loss, AdamW, fp32) on random tokens for
``steps`` steps, alternating modes round by round; the median step time after the first is kept.
Memory is the traced peak of the same step (pajama.training.trace, within 10 % of the CPU
allocator's measured peak in the tests).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pajama.hardware import cpu_info
from pajama.model import RECOMPUTE, LLaMA
from pajama.model_config import preset
from pajama.training.trace import trace_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default="small")
    parser.add_argument("--micro_batch_size", type=int, default=8)
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(cpu_info().describe(), f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    config = preset(args.model_name).replace(vocab_size=args.vocab_size, block_size=args.block_size)
    peaks = {m: trace_step(config, 1, args.micro_batch_size, args.block_size, "32-true", "single", m, device="cpu") for m in RECOMPUTE}
    torch.manual_seed(0)
    model = LLaMA(config)
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (args.micro_batch_size, args.block_size + 1))
    times: dict[str, list[float]] = {m: [] for m in RECOMPUTE}
    for _ in range(args.rounds):
        for mode in RECOMPUTE:
            model.activation_checkpointing = mode
            for step in range(args.steps):
                started = time.perf_counter()
                model(tokens[:, :-1], targets=tokens[:, 1:]).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:
                    times[mode].append(time.perf_counter() - started)
    base_time, base_peak = statistics.median(times["none"]), peaks["none"].peak_bytes["total"]
    print(f"{config.name}, micro-batch {args.micro_batch_size} x {args.block_size} tokens, vocab {config.vocab_size}, fp32")
    print(f"{'mode':<11}{'step s':>9}{'time/none':>11}{'peak MiB':>10}{'peak/none':>11}{'FLOPs/none':>12}")
    for mode in RECOMPUTE:
        t, p = statistics.median(times[mode]), peaks[mode]
        print(f"{mode:<11}{t:>9.3f}{t / base_time:>11.2f}{p.peak_bytes['total'] / 2**20:>10.0f}{p.peak_bytes['total'] / base_peak:>11.2f}{p.flops / peaks['none'].flops:>12.2f}")


if __name__ == "__main__":
    main()
