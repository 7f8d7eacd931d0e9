"""Memory and speed of the loss part of a training step (output projection + cross-entropy,
forward and backward): on the full logits, as before (``full``), and chunk by chunk
(``chunked``, :func:`pajama.loss.linear_cross_entropy`).

Run by hand, each run within a couple of minutes on a small CPU:

    python bench/loss_bench.py memory [--vocab 128256 --tokens 8192 --dim 256 --precision 32-true]
    python bench/loss_bench.py speed [--vocab 8000 32000 128256 --tokens 2048 --dim 256 --runs 3]
    python bench/loss_bench.py chunks [--vocab 8000 128256 --chunk_tokens 64 128 256 512 1024 2048 4096]

Every mode takes ``--device cuda`` to measure on the GPU instead (e.g. ``--vocab 128256 --tokens
16384 --dim 2048 --precision bf16-mixed`` for Llama 3.2 1B's output layer).

``memory``: each path runs once in a fresh process; what it adds is the peak resident set size
(getrusage's ru_maxrss: the kernel's count, whatever allocated it) less the resident size once
the inputs (hidden states, weight, targets) exist; on a GPU, the peak of
``torch.cuda.max_memory_allocated`` less what the inputs hold. The weight's gradient is part of both.
``speed``: median seconds of forward + backward after one warm-up, the paths taking turns so
that a change in the machine's load touches both alike; tokens/s and chunked / full.
``chunks``: the same for the chunked path alone, by chunk size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pajama.loss import CHUNK_LOGITS, linear_cross_entropy

PRECISIONS = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


def inputs(vocab: int, tokens: int, dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final hidden states (1, tokens, dim), output weight (vocab, dim), targets (1, tokens), on ``device``."""
    generator = torch.Generator().manual_seed(0)  # on the CPU: the same numbers on every device
    hidden = torch.randn(1, tokens, dim, generator=generator).to(device).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=generator) * 0.02).to(device).requires_grad_()
    return hidden, weight, torch.randint(0, vocab, (1, tokens), generator=generator).to(device)


def step(path: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, precision: str, chunk_tokens: int | None) -> None:
    """Forward and backward of the loss; gradients into hidden.grad and weight.grad."""
    hidden.grad = weight.grad = None
    with torch.autocast(hidden.device.type, dtype=PRECISIONS[precision], enabled=precision != "32-true"):
        if path == "full":
            loss = F.cross_entropy(F.linear(hidden, weight).flatten(0, 1).float(), targets.flatten())
        else:
            loss = linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk_tokens)
    loss.backward()


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> None:
    """One path, once, in this fresh process: the memory it added, as JSON."""
    hidden, weight, targets = inputs(args.vocab[0], args.tokens, args.dim, args.device)
    cuda = args.device == "cuda"
    before = torch.cuda.memory_allocated() / 2**20 if cuda else resident_mb()
    start = time.perf_counter()
    step(args.path, hidden, weight, targets, args.precision, args.chunk_tokens[0])
    synchronize(args.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"added_mb": peak - before, "inputs_mb": before, "seconds": seconds}))


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so that a time counts it."""
    if device == "cuda":
        torch.cuda.synchronize()


def memory(args) -> None:
    vocab = args.vocab[0]
    logits_mb = args.tokens * vocab * 4 / 2**20
    print(f"vocabulary {vocab:,}, {args.tokens:,} tokens, d {args.dim}, {args.precision}, {args.device}: fp32 logits {logits_mb:,.0f} MiB, chunk {chunk_label(args.chunk_tokens[0], vocab, args.dim)}")
    added = "added peak allocated (MiB)" if args.device == "cuda" else "added peak RSS (MiB)"
    print(f"| path | {added} | x fp32 logits | seconds |\n|---|---|---|---|")
    for path in ("chunked", "full"):
        command = [sys.executable, __file__, "child", "--path", path, "--vocab", str(vocab), "--tokens", str(args.tokens), "--dim", str(args.dim), "--precision", args.precision]
        command += ["--device", args.device]
        command += ["--chunk_tokens", str(args.chunk_tokens[0])] if args.chunk_tokens[0] else []
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"| {path} | {result['added_mb']:,.0f} | {result['added_mb'] / logits_mb:.2f} | {result['seconds']:.1f} |", flush=True)


def chunk_label(chunk_tokens: int | None, vocab: int, dim: int) -> str:
    return f"{chunk_tokens} tokens" if chunk_tokens else f"{max(CHUNK_LOGITS // vocab, dim)} tokens (the default here)"


def timed(path: str, tensors, precision: str, chunk_tokens: int | None) -> float:
    device = tensors[0].device.type
    synchronize(device)
    start = time.perf_counter()
    step(path, *tensors, precision, chunk_tokens)
    synchronize(device)
    return time.perf_counter() - start


def speed(args) -> None:
    chunk = f"{args.chunk_tokens[0]} tokens" if args.chunk_tokens[0] else "the default"
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    print(f"{args.tokens:,} tokens, d {args.dim}, {args.precision}, chunk {chunk}, {where}")
    print("| vocabulary | full tokens/s | chunked tokens/s | chunked / full |\n|---|---|---|---|")
    for vocab in args.vocab:
        tensors = inputs(vocab, args.tokens, args.dim, args.device)
        times: dict[str, list[float]] = {"full": [], "chunked": []}
        for run in range(args.runs + 1):
            for path, seconds in times.items():
                took = timed(path, tensors, args.precision, args.chunk_tokens[0])
                if run:  # the first is a warm-up
                    seconds.append(took)
        rate = {path: args.tokens / statistics.median(t) for path, t in times.items()}
        print(f"| {vocab:,} | {rate['full']:,.0f} | {rate['chunked']:,.0f} | {rate['chunked'] / rate['full']:.2f} |", flush=True)


def chunks(args) -> None:
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"load {os.getloadavg()[0]:.1f}"
    print(f"{args.tokens:,} tokens, d {args.dim}, {args.precision}, chunked path by chunk size, {where}")
    print("| vocabulary | " + " | ".join(f"{c} tokens/chunk" for c in args.chunk_tokens) + " |\n|---|" + "---|" * len(args.chunk_tokens))
    for vocab in args.vocab:
        tensors = inputs(vocab, args.tokens, args.dim, args.device)
        times: dict[int, list[float]] = {c: [] for c in args.chunk_tokens}
        for run in range(args.runs + 1):
            for c in args.chunk_tokens:
                seconds = timed("chunked", tensors, args.precision, c)
                if run:
                    times[c].append(seconds)
        print(f"| {vocab:,} | " + " | ".join(f"{args.tokens / statistics.median(times[c]):,.0f}" for c in args.chunk_tokens) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["memory", "speed", "chunks", "child"])
    parser.add_argument("--vocab", type=int, nargs="+", default=None, help="vocabulary sizes (default: memory 128256; speed 8000 32000 128256)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per micro-batch (default: memory 8192 = 4 x 2048; speed 2048)")
    parser.add_argument("--dim", type=int, default=256, help="model width d")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="32-true")
    parser.add_argument("--chunk_tokens", type=int, nargs="+", default=None, help="chunk sizes (default: linear_cross_entropy's; chunks: 64 128 256 512 1024 2048 4096)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each path (speed, chunks)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the loss runs (cuda: memory is the allocator's peak, times wait for the GPU)")
    parser.add_argument("--path", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    big = args.mode in ("memory", "child")
    args.vocab = args.vocab or ([128256] if big else [8000, 128256] if args.mode == "chunks" else [8000, 32000, 128256])
    args.tokens = args.tokens or (8192 if big else 2048)
    args.chunk_tokens = args.chunk_tokens or ([64, 128, 256, 512, 1024, 2048, 4096] if args.mode == "chunks" else [None])
    {"memory": memory, "speed": speed, "chunks": chunks, "child": child}[args.mode](args)


if __name__ == "__main__":
    main()
