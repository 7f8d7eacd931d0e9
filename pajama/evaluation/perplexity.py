"""Perplexity of a checkpoint on prepared data: loss and perplexity per subset and overall.

The sequences are fixed: the first ``N`` non-overlapping blocks of ``block_size + 1`` tokens
of each subset's stream (input and shifted target, as in training), with the same ``N`` for
every subset, chosen so that at most ``max_tokens`` predicted tokens are scored in all. So two
evaluations of the same checkpoint on the same data score the same tokens, whatever the
batch size, and two checkpoints are compared on identical text.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

import pajama.checkpoint as ckpt
from pajama import PajamaError
from pajama.generate import load_model
from pajama.hardware import device_type
from pajama.loader import load_prepared
from pajama.loader import mixture as mixture_weights
from pajama.model import document_ids
from pajama.precision import choose_precision, compute_dtype
from pajama.progress import progress_bar


@torch.no_grad()
def evaluate(
    checkpoint: Path,
    data_dir: Path,
    max_tokens: int = 1_000_000,
    micro_batch_size: int = 4,
    block_size: int | None = None,
    mixture: dict[str, float] | None = None,
    accelerator: str = "auto",
    precision: str | None = None,
    document_mask: bool | None = None,
) -> dict:
    """Loss and perplexity of a checkpoint per subset and overall, on prepared data.

    Scores the first sequences of each subset (the same number for every subset, at most
    max_tokens predicted tokens in all), so results are deterministic and comparable between
    checkpoints. Use held-out data (a directory prepared from files not trained on): on the
    training directory the first sequences are training text. The overall loss weights the
    subsets by the mixture the checkpoint was trained with (renormalised over those present);
    the token-weighted loss is also reported. The forward pass runs in the precision training would pick here (autocast).

    Args:
        checkpoint: checkpoint directory, or a training out_dir (its newest checkpoint).
        data_dir: directory written by pajama prepare (same tokenizer as the checkpoint's data).
        max_tokens: at most this many predicted tokens are scored, shared equally by the subsets.
        micro_batch_size: sequences per forward pass.
        block_size: tokens per sequence (default: the model's context length).
        mixture: subset weights of the overall loss (default: the checkpoint's training mixture, else LLaMA's).
        accelerator: auto, cpu, cuda or mps.
        precision: bf16-mixed, bf16-true, 16-mixed (autocast in that dtype) or 32-true; default: the fastest here (CPUs: measured).
        document_mask: each token sees only its own document (see pretrain --document_mask); default: as the checkpoint was trained.
    """
    if max_tokens < 1:
        raise PajamaError(f"--max_tokens must be >= 1, got {max_tokens}")
    if micro_batch_size < 1:
        raise PajamaError(f"--micro_batch_size must be >= 1, got {micro_batch_size}")
    device = torch.device(device_type(accelerator))

    path = ckpt.resolve(Path(checkpoint))
    meta = ckpt.read_meta(path)
    data = load_prepared(data_dir)
    expected = meta.get("tokenizer_sha256")
    if expected and data.tokenizer_sha256 and expected != data.tokenizer_sha256:
        raise PajamaError(f"{data.directory} was prepared with another tokenizer than the data {path} was trained on (checksums differ)")
    model, meta = load_model(path, device)
    config = model.config
    if data.vocab_size and data.vocab_size > config.vocab_size:
        raise PajamaError(f"{data.directory}: tokenizer of {data.vocab_size} tokens, more than the model's vocabulary of {config.vocab_size}")
    if document_mask is None:
        document_mask = bool(meta.get("train", {}).get("document_mask"))
    seq = block_size or config.block_size
    if not 1 <= seq <= config.block_size:
        raise PajamaError(f"--block_size must be between 1 and the model's context of {config.block_size}, got {seq}")
    block = seq + 1

    names = sorted(data.streams)
    per_subset = (max_tokens // len(names)) // seq
    if per_subset == 0:
        raise PajamaError(f"--max_tokens {max_tokens} leaves no sequence of {seq} tokens for each of the {len(names)} subsets; use at least {seq * len(names)}")
    counts = {n: min(data.streams[n].tokens // block, per_subset) for n in names}
    too_short = [n for n in names if counts[n] == 0]
    names = [n for n in names if counts[n] > 0]
    if not names:
        raise PajamaError(f"{data.directory}: no subset holds one sequence of {block} tokens; use a smaller --block_size")
    if too_short:
        print(f"note: skipping {', '.join(too_short)}: fewer than {block} tokens")

    choice = choose_precision(precision, device.type, config, tokens=micro_batch_size * seq, backward=False)
    print(choice.reason + (f"\nwarning: {choice.warning}" if choice.warning else ""), file=sys.stderr)
    dtype = compute_dtype(choice.precision)
    sums = {n: 0.0 for n in names}
    batches = [(n, start) for n in names for start in range(0, counts[n], micro_batch_size)]
    for name, start in progress_bar(iterable=batches, desc="evaluate", unit="batch", dynamic_ncols=True, leave=False):
        stream = data.streams[name]
        rows = np.stack([stream.read(i * block, block) for i in range(start, min(start + micro_batch_size, counts[name]))])
        if rows.max() >= config.vocab_size:
            raise PajamaError(f"{data.directory}: subset {name} holds token id {int(rows.max())}, outside the model's vocabulary of {config.vocab_size}")
        batch = torch.from_numpy(rows).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            # Each token's fp32 loss, the logits never held whole (see pajama.loss).
            losses = model(batch[:, :-1], doc_ids=document_ids(batch[:, :-1], data.bos_id) if document_mask else None, targets=batch[:, 1:], reduction="none")
        sums[name] += float(losses.double().sum())

    subsets = {}
    for n in names:
        tokens = counts[n] * seq
        loss = sums[n] / tokens
        subsets[n] = {"sequences": counts[n], "tokens": tokens, "loss": loss, "perplexity": _perplexity(loss)}
    weights = mixture_weights(names, mixture if mixture is not None else meta.get("train", {}).get("mixture"), [data.streams[n].tokens for n in names])
    mixed = float(sum(w * subsets[n]["loss"] for w, n in zip(weights, names)))
    total = sum(s["tokens"] for s in subsets.values())
    token_weighted = sum(sums.values()) / total
    result = {
        "checkpoint": str(path),
        "step": meta.get("step"),
        "data_dir": str(data.directory),
        "block_size": seq,
        "document_mask": document_mask,
        "tokens": total,
        "loss": mixed,
        "perplexity": _perplexity(mixed),
        "token_weighted_loss": token_weighted,
        "token_weighted_perplexity": _perplexity(token_weighted),
        "mixture": {n: float(w) for n, w in zip(names, weights)},
        "subsets": subsets,
    }
    print(format_table(result))
    return result


def format_table(result: dict) -> str:
    """The console table of an :func:`evaluate` result."""
    lines = [
        f"{result['checkpoint']} (step {result['step']}) on {result['data_dir']}, sequences of {result['block_size']} tokens"
        + (", each document on its own (document mask)" if result["document_mask"] else ""),
        f"{'subset':<22}{'weight':>8}{'sequences':>11}{'tokens':>13}{'loss':>9}{'perplexity':>13}",
    ]
    for name, s in result["subsets"].items():
        lines.append(f"{name:<22}{result['mixture'][name]:>8.3f}{s['sequences']:>11,}{s['tokens']:>13,}{s['loss']:>9.4f}{s['perplexity']:>13.2f}")
    lines.append(f"{'overall (mixture)':<22}{1.0:>8.3f}{'':>11}{result['tokens']:>13,}{result['loss']:>9.4f}{result['perplexity']:>13.2f}")
    lines.append(f"{'overall (per token)':<22}{'':>8}{'':>11}{result['tokens']:>13,}{result['token_weighted_loss']:>9.4f}{result['token_weighted_perplexity']:>13.2f}")
    return "\n".join(lines)


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
