"""Everything GPU-specific, measured in one run (a few minutes on one H100/H200).

``python bench/gpu_bench.py [--out results.json]``

1. The flash-attention path: the model's attention runs under the flash kernel alone.
2. Training throughput and MFU of the ``1B`` preset at sequence 2048, bf16-mixed, FSDP2 (one
   shard unit per block) and ``torch.compile``, through ``pajama pretrain`` itself, on random
   tokens in a prepared directory (throughput does not depend on the text).
3. Memory: measured peak of that run against ``pajama.memory.estimate``, and the activation
   memory of one 7B-shaped block against the per-layer estimate.
4. The same run in ``16-mixed`` (fp16 autocast, dynamic loss scaling, FSDP2 with the sharded
   scaler): throughput against bf16, and the loss scale it settled at.
5. ``--micro_batch_size auto`` on the 1B preset at sequence 2048: the micro-batch found by
   trying steps and backing off on out-of-memory, and the run's peak memory with it.
6. Grouped-query attention: key/value heads shared by ``enable_gqa`` against expanded first
   (bf16, forward + backward, TinyLlama's 32/4 heads), and the ``tinyllama-1.1b`` preset's
   training throughput and MFU (compiled), without and with ``--document_mask`` (its cost).
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
from pajama.model import LLaMA, rope_cache
from pajama.model_config import preset
from pajama.train import TrainConfig, pretrain


def random_prepared_dir(directory: Path, tokens: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    chunks = []
    for subset in ("arxiv", "c4", "common_crawl"):
        writer = ChunkWriter(directory, f"{subset}_random-0000", 2049 * 1024, np.dtype(np.uint16), filler=2)
        ids = rng.integers(3, vocab, tokens, dtype=np.uint16)
        ids[::800] = 1  # a document starts every 800 tokens (BOS), for --document_mask
        writer.add(ids)
        chunks += [{"file": name, "subset": subset, "tokens": n} for name, n in writer.close()]
    manifest = {"tokenizer": {"sha256": "random", "vocab_size": vocab, "bos_id": 1, "eos_id": 2}, "chunks": chunks}
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


def gqa_attention_check(batch: int = 4, seq: int = 2048, heads: int = 32, kv_heads: int = 4, head_size: int = 64) -> dict:
    """ms per forward + backward of causal attention, key/value heads shared vs expanded first."""
    q = torch.randn(batch, heads, seq, head_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, seq, head_size, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))

    def run(expand: bool) -> float:
        def step():
            if expand:
                kk, vv = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
                y = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            else:
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            y.float().sum().backward()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / 20 * 1e3

    shared, expanded = run(False), run(True)
    return {"gqa_enable_gqa_ms": shared, "gqa_expand_ms": expanded, "gqa_ratio_expand_over_shared": expanded / shared}


def training_run(
    root: Path, steps: int, micro_batch: int | str, compile: bool, precision: str = "bf16-mixed", batch_size: int | None = None,
    model_name: str = "1B", document_mask: bool = False,
) -> dict:
    config = TrainConfig(
        train_data_dir=root / "data", out_dir=root / f"run-{model_name}-{compile}-{precision}-{micro_batch}-{document_mask}", model_name=model_name,
        devices=1, strategy="fsdp", precision=precision, compile=compile, batch_size=batch_size or micro_batch, micro_batch_size=micro_batch,
        max_iters=steps, eval_interval=10**9, save_interval=10**9, eval_iters=1, log_interval=1, warmup_iters=10, resume="none",
        document_mask=document_mask, block_size=2048,
    )  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    pretrain(config)
    with open(config.out_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["step_time"]][steps // 3 :]
    chosen = json.loads((config.out_dir / "config.json").read_text())["train"]["micro_batch_size"]
    model = preset(model_name).replace(vocab_size=32000, block_size=2048)
    plan = estimate(model, 1, chosen, 2048, "fsdp", False, precision)
    return {
        "model": model_name,
        "compile": compile,
        "precision": precision,
        "document_mask": document_mask,
        "micro_batch_size": chosen,
        "loss_scale": float(rows[-1]["loss_scale"]) if rows[-1].get("loss_scale") else None,
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
    results |= gqa_attention_check()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        random_prepared_dir(root / "data", 8 * 2049 * 1024, 32000)
        for compile in (False, True):
            started = time.time()
            results[f"train_compile_{compile}"] = training_run(root, args.steps, args.micro_batch_size, compile) | {"seconds": time.time() - started}
        started = time.time()
        results["train_fp16"] = training_run(root, args.steps, args.micro_batch_size, True, "16-mixed") | {"seconds": time.time() - started}
        for mask in (False, True):
            started = time.time()
            results[f"train_tinyllama_document_mask_{mask}"] = training_run(
                root, args.steps, args.micro_batch_size, True, model_name="tinyllama-1.1b", document_mask=mask
            ) | {"seconds": time.time() - started}
        started = time.time()
        results["train_micro_batch_auto"] = training_run(root, 10, "auto", False, batch_size=64) | {"seconds": time.time() - started}
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
