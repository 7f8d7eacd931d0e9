"""One optimizer step: forward and backward over the micro-batches, clip, update; and its metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pajama.metrics import peak_memory_gb
from pajama.model import document_ids

if TYPE_CHECKING:
    from pajama.training.setup import Training


@dataclass
class StepResult:
    """What one optimizer step did. ``loss``, ``grad_norm`` and ``finite`` stay on the device:
    reading one waits for the device to finish, which the loop does only on steps it logs."""

    loss: torch.Tensor  # mean over the global batch
    grad_norm: torch.Tensor  # before clipping
    finite: torch.Tensor  # loss and gradient norm both finite (a bool tensor)
    overflow: bool  # fp16: gradients overflowed at this loss scale, which the scaler handles (not a bad step)
    loss_scale: float | None  # fp16: the scale this step ran at
    data_time: float  # seconds spent reading batches


def train_step(fabric, run: Training, lr: float) -> StepResult:
    """One optimizer step on this rank's share of the next global batch: forward and backward
    over the micro-batches, clip, update (skipped when the loss or gradients are not finite)."""
    config, model, optimizer, scaler = run.config, run.model, run.optimizer, run.scaler
    for group in optimizer.param_groups:
        group["lr"] = lr
    samples = run.sampler.draw(config.batch_size)
    share = run.accum * config.micro_batch_size
    mine = samples[fabric.global_rank * share : (fabric.global_rank + 1) * share]
    loss_sum = torch.zeros((), device=fabric.device)
    data_time = 0.0
    model.train()
    for micro in range(run.accum):
        td = time.perf_counter()
        batch = run.sampler.read(mine[micro * config.micro_batch_size : (micro + 1) * config.micro_batch_size])
        batch = torch.from_numpy(batch).to(fabric.device, non_blocking=True)
        data_time += time.perf_counter() - td
        with fabric.no_backward_sync(model, enabled=micro < run.accum - 1 and not run.reduce_every_micro_batch):
            loss = sequence_loss(model, batch, run.doc_bos)
            fabric.backward(loss / run.accum)
        loss_sum += loss.detach()
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")  # inf: measure, don't clip
    grad_norm = _full(fabric.clip_gradients(model, optimizer, max_norm=max_norm, error_if_nonfinite=False))
    loss_avg = fabric.all_reduce(loss_sum / run.accum, reduce_op="mean")
    finite = torch.isfinite(loss_avg) & torch.isfinite(grad_norm)
    overflow, loss_scale = False, None
    if scaler is not None:
        # Under fp16, gradients that overflow at this loss scale are the scaler's to handle: it
        # skips the update and lowers the scale (it reads the overflow on the host itself). Not a
        # bad step: the model is fine. Once the scale has collapsed below 1, it is the model's fault.
        loss_scale = scaler.get_scale()
        overflow = not bool(finite) and bool(torch.isfinite(loss_avg)) and loss_scale >= 1
        optimizer.step()
    else:
        step_if_finite(optimizer, finite)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_avg, grad_norm, finite, overflow, loss_scale, data_time)


def step_if_finite(optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``finite`` is false. A fused AdamW decides on the device (its
    ``found_inf``, as loss scaling uses it), so a GPU is never waited for; other optimizers
    decide on the host, which costs nothing where the tensors are on the CPU."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Fabric wraps the optimizer
    if not all(group.get("fused") for group in inner.param_groups):
        if bool(finite):
            optimizer.step()
        return
    inner.found_inf = (~finite).float()
    try:
        optimizer.step()
    finally:
        del inner.found_inf


def step_metrics(fabric, run: Training, result: StepResult, lr: float, step_time: float) -> dict[str, float]:
    world = fabric.world_size
    metrics = {
        "loss": float(result.loss),
        "lr": lr,
        "grad_norm": float(result.grad_norm),
        "tokens_per_sec": run.tokens_per_step / step_time,
        "tokens_per_sec_per_device": run.tokens_per_step / step_time / world,
        "step_time": step_time,
        "data_wait": result.data_time / step_time,
        "peak_memory_gb": peak_memory_gb(fabric.device),
    }
    if result.loss_scale is not None:
        metrics["loss_scale"] = result.loss_scale
    if run.peak_flops:
        metrics["mfu"] = run.flops_per_token * run.tokens_per_step / step_time / (run.peak_flops * world)
    return metrics


def sequence_loss(model, batch: torch.Tensor, doc_bos: int | None, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over ``batch`` (B, T + 1), computed without the B x T x vocab
    logits (see pajama.loss); by ``reduction``: mean, sum, or none (each token's, B x T). With
    ``doc_bos``, attending only within documents (they start at that id)."""
    inputs = batch[:, :-1]
    doc_ids = document_ids(inputs, doc_bos) if doc_bos is not None else None
    return model(inputs, doc_ids=doc_ids, targets=batch[:, 1:], reduction=reduction)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p
