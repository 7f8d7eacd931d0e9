"""Validation during training: the loss on held-out sequences per stream, and harness tasks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from pajama.training.step import sequence_loss

if TYPE_CHECKING:
    from pajama.training.setup import Training


@torch.no_grad()
def validation_loss(fabric, run: Training) -> dict[str, float]:
    """Mean loss per subset and overall (mixture-weighted) on the fixed validation sequences,
    shared out over the ranks and summed across them. Every rank runs the same number of
    forward passes (FSDP needs it); padding entries carry zero weight."""
    config, model, val_splits, val_samples, block = run.config, run.model, run.val_splits, run.val_samples, run.block
    if not val_samples:
        return {}
    model.eval()
    world, rank, mbs = fabric.world_size, fabric.global_rank, config.micro_batch_size
    names = sorted(val_splits)
    per_rank = math.ceil(len(val_samples) / world)
    per_rank = math.ceil(per_rank / mbs) * mbs
    mine = val_samples[rank * per_rank : (rank + 1) * per_rank]
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine = mine + [val_samples[0]] * (per_rank - len(mine))
    sums = torch.zeros(len(names), device=fabric.device, dtype=torch.float64)
    counts = torch.zeros(len(names), device=fabric.device, dtype=torch.float64)
    for start in range(0, per_rank, mbs):
        batch_samples = mine[start : start + mbs]
        batch = np.stack([val_splits[n].stream.read(b * block, block) for n, b in batch_samples])
        batch = torch.from_numpy(batch).to(fabric.device)
        losses = sequence_loss(model, batch, run.doc_bos, reduction="none").mean(1)
        for (name, _), loss, w in zip(batch_samples, losses, weights[start : start + mbs]):
            i = names.index(name)
            sums[i] += w * loss.double()
            counts[i] += w
    sums = fabric.all_reduce(sums, reduce_op="sum")
    counts = fabric.all_reduce(counts, reduce_op="sum")
    per_stream = {names[i]: float(sums[i] / counts[i]) for i in range(len(names)) if counts[i] > 0}
    model.train()
    overall = _weighted(per_stream, run.val_weights)
    out = {"val_loss": overall, "val_ppl": math.exp(min(overall, 50.0))}
    out.update({f"val_loss/{n}": v for n, v in per_stream.items()})
    directories = sorted({n.split("/", 1)[0] for n in per_stream if "/" in n})
    for d in directories:  # several training directories: each one's loss too
        out[f"val_loss/{d}"] = _weighted({n: v for n, v in per_stream.items() if n.startswith(d + "/")}, run.val_weights)
    return out


def _weighted(losses: dict[str, float], weights: dict[str, float]) -> float:
    """Mean of ``losses`` by ``weights``, renormalised over the streams present."""
    total = sum(weights[n] for n in losses)
    if total <= 0:  # only streams not trained on (weight 0) hold validation data
        return sum(losses.values()) / len(losses)
    return sum(weights[n] * v for n, v in losses.items()) / total


def evaluate_tasks(fabric, run: Training) -> dict[str, float]:
    """--eval_tasks: each task's metrics and the time they took (every rank takes part)."""
    return run.tasks.evaluate(fabric, run.model) if run.tasks is not None else {}
