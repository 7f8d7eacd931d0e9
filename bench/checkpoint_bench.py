"""Training stall per checkpoint: ``--async_checkpoint false`` against ``true``, on one CPU process.

Run by hand: ``python bench/checkpoint_bench.py [--model medium] [--saves 3] [--directory DIR]``.

A model of the preset's shape with AdamW state (one optimizer step taken), saved the way
``pajama pretrain`` saves (pajama.checkpoint.start_save, then finish). The stall is the time the
training loop waits: for a synchronous save, the whole save (write, fsync, rename); for an
asynchronous one, the copy of the state to CPU memory, the write and rename happening while
training goes on (the write's own time is printed too). Median of ``--saves`` saves each, taking
turns. Under FSDP the asynchronous path is torch.distributed.checkpoint's async save instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pajama import checkpoint
from pajama.model import LLaMA
from pajama.model_config import preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medium", help="model preset (default medium, 124M parameters)")
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--directory", type=Path, default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()

    import lightning as L

    fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
    config = preset(args.model).replace(vocab_size=32000, block_size=256)
    model = fabric.setup(LLaMA(config))
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=1e-4))
    model(torch.randint(0, 32000, (1, 64))).float().mean().backward()
    optimizer.step()  # the moments exist: a checkpoint of the size training writes
    state = {"model": model, "optimizer": optimizer, "step": 1}
    size = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"{args.model}: {config.num_parameters() / 1e6:.0f}M parameters, checkpoint {size / 2**30:.2f} GiB")

    stalls: dict[bool, list[float]] = {False: [], True: []}
    writes: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.directory) as out:
        step = 0
        for _ in range(args.saves):
            for asynchronous in (False, True):
                step += 1
                started = time.perf_counter()
                pending = checkpoint.start_save(fabric, Path(out), step, state, {"step": step}, asynchronous=asynchronous)
                if not asynchronous:
                    pending.finish(fabric, keep_last=1)
                stalls[asynchronous].append(time.perf_counter() - started)
                if asynchronous:
                    pending.finish(fabric, keep_last=1)  # what the next step boundaries wait for, while training
                    writes.append(time.perf_counter() - started)
    sync, background = statistics.median(stalls[False]), statistics.median(stalls[True])
    print(f"stall per save: synchronous {sync:.2f} s, asynchronous {background:.2f} s ({sync / background:.1f}x less); the background write took {statistics.median(writes):.2f} s")


if __name__ == "__main__":
    main()
