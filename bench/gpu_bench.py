"""Everything GPU-specific, measured in one run (a few minutes on one H100/H200).

``python bench/gpu_bench.py [--out results.json]``

1. The flash-attention path: the model's attention runs under the flash kernel alone.
2. Training throughput and MFU of the ``1B`` preset at sequence 2048, bf16-mixed, FSDP2 (one
   shard unit per block) and ``torch.compile``, through ``pajama pretrain`` itself, on random
   tokens in a prepared directory (throughput does not depend on the text).
3. Memory: measured peak of that run against ``pajama.memory.estimate``, and the activation
   memory of one 7B-shaped block against the per-layer estimate.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pajama.chunks import ChunkWriter
from pajama.memory import activation_bytes_per_token_layer, estimate
from pajama.model import LLaMA, preset, rope_cache
from pajama.train import TrainConfig, pretrain


def random_prepared_dir(directory: Path, tokens: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    chunks = []
    for subset in ("arxiv", "c4", "common_crawl"):
        writer = ChunkWriter(directory, f"{subset}_random-0000", 2049 * 1024, np.dtype(np.uint16), filler=2)
        writer.add(rng.integers(3, vocab, tokens, dtype=np.uint16))
        chunks += [{"file": name, "subset": subset, "tokens": n} for name, n in writer.close()]
    manifest = {"tokenizer": {"sha256": "random", "vocab_size": vocab}, "chunks": chunks}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def flash_attention_check() -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = preset("1B").replace(n_layer=1)
    model = LLaMA(config).cuda()
    model.init_weights(0)
    idx = torch.randint(0, config.vocab_size, (2, 2048), device="cuda")
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            model(idx).float().sum().backward()
        return {"flash_attention": True}
    except RuntimeError as e:
        return {"flash_attention": False, "error": str(e)[:300]}


def block_activation_check(micro_batch: int = 1, seq: int = 2048) -> dict:
    """Memory held between forward and backward of one 7B-shaped block, against the estimate."""
    config = preset("7B")
    block = LLaMA(config.replace(n_layer=1)).layers[0].cuda()
    cos, sin = (t.cuda()[:seq] for t in rope_cache(config))
    x = torch.randn(micro_batch, seq, config.n_embd, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = block(x, cos, sin)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before - y.numel() * y.element_size()
    weight_copies = 2 * sum(p.numel() for p in block.parameters() if p.ndim == 2)  # autocast's bf16 casts
    expected = activation_bytes_per_token_layer(config) * micro_batch * seq
    return {"block_activation_bytes_measured": held - weight_copies, "block_activation_bytes_estimated": expected,
            "ratio": (held - weight_copies) / expected}  # fmt: skip


def training_run(root: Path, steps: int, micro_batch: int, compile: bool) -> dict:
    config = TrainConfig(
        train_data_dir=root / "data", out_dir=root / f"run-{compile}", model_name="1B", devices=1, strategy="fsdp",
        precision="bf16-mixed", compile=compile, batch_size=micro_batch, micro_batch_size=micro_batch, max_iters=steps,
        eval_interval=10**9, save_interval=10**9, eval_iters=1, log_interval=1, warmup_iters=10, resume="none",
    )  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    pretrain(config)
    with open(config.out_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["step_time"]][steps // 3 :]
    model = preset("1B").replace(vocab_size=32000)
    plan = estimate(model, 1, micro_batch, 2048, "fsdp", False)
    return {
        "compile": compile,
        "tokens_per_sec": statistics.median(float(r["tokens_per_sec"]) for r in rows),
        "mfu": statistics.median(float(r["mfu"]) for r in rows if r["mfu"]),
        "step_time": statistics.median(float(r["step_time"]) for r in rows),
        "data_wait": statistics.median(float(r["data_wait"]) for r in rows),
        "peak_memory_gib": max(float(r["peak_memory_gb"]) for r in rows),
        "planned_memory_gib": plan["total"] / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro_batch_size", type=int, default=8)
    args = parser.parse_args()
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results |= flash_attention_check()
    results |= block_activation_check()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        random_prepared_dir(root / "data", 8 * 2049 * 1024, 32000)
        for compile in (False, True):
            started = time.time()
            results[f"train_compile_{compile}"] = training_run(root, args.steps, args.micro_batch_size, compile) | {"seconds": time.time() - started}
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
