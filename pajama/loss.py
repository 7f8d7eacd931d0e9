"""The output projection and its cross-entropy, chunk by chunk over the tokens: the (tokens,
vocabulary) logits are never held whole.

With Llama 3's 128,256-entry vocabulary, the logits of a micro-batch of 4 x 2048 tokens take
4 GiB in fp32, and the plain path (project, cast to fp32, cross-entropy) holds them, their fp32
copy and their gradient at once: most of a training step's memory at small model widths. Here
each chunk of tokens is projected, its loss taken in fp32 and, when a gradient is wanted, its
gradients with respect to the hidden states and the output weight computed at once, before the
next chunk is projected. The gradients are kept (hidden-sized and weight-sized, no
vocabulary-by-token tensor) and only scaled by the incoming gradient in backward, so the
projection runs once and the work is the plain path's three matmuls.

Precision is the plain path's: the projection in autocast's dtype when autocast is on (else the
weight's), the log-softmax and the loss in fp32, the logits' gradient cast back to the
projection's dtype for the two gradient matmuls. The output weight's gradient is summed over the
chunks in fp32.

The weight must be the full matrix: under FSDP call this inside the root module's forward
(:meth:`pajama.model.LLaMA.forward` with ``targets``), where FSDP has gathered it and reduces
its gradient as usual.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from pajama import PajamaError

IGNORE_INDEX = -100  # targets of this value are not scored (as torch.nn.functional.cross_entropy)
# Default chunk: CHUNK_LOGITS logits (64 MiB in fp32: 2,097 tokens at a vocabulary of 8,000, 524
# at 32,000), but at least as many tokens as the model width d: every chunk passes over the whole
# output weight three times and updates its whole fp32 gradient, which then costs no more than
# the chunk's own logits (so 256 tokens at d 256 and 128,256 entries, 128 MiB; 4,096 at Llama 3
# 8B's d). On CPU (bench/loss_bench.py chunks) throughput is flat, within the noise, from about
# these sizes up; larger chunks only take more memory.
CHUNK_LOGITS = 2**24
REDUCTIONS = ("mean", "sum", "none")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T, targets)`` without ever holding more than one chunk of
    ``chunk_tokens`` tokens' logits, forward and backward.

    Args:
        hidden: final hidden states (..., d), after the final norm.
        weight: output weight (vocab, d): the output layer's, or the tied embedding table.
        targets: token ids (...), the shape of ``hidden`` without its last dimension;
            ``ignore_index`` where a position is not scored.
        ignore_index: target value of positions not scored (loss 0, no gradient).
        reduction: ``mean`` over the scored positions (NaN if none is), ``sum``, or ``none``:
            the fp32 loss of every position, the shape of ``targets``.
        chunk_tokens: tokens projected at a time (default: ``CHUNK_LOGITS // vocab``, at least d).

    Returns the fp32 loss; differentiable with respect to ``hidden`` and ``weight``.
    """
    if reduction not in REDUCTIONS:
        raise PajamaError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if chunk_tokens is None:
        chunk_tokens = max(CHUNK_LOGITS // weight.size(0), weight.size(1))
    if chunk_tokens < 1:
        raise PajamaError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if isinstance(weight, DTensor):
        raise PajamaError("the output weight is sharded: compute the loss inside the model's forward, where FSDP gathers it (LLaMA.forward(..., targets=...))")
    if weight.dim() != 2 or hidden.size(-1) != weight.size(1) or hidden.shape[:-1] != targets.shape:
        raise PajamaError(f"hidden states {tuple(hidden.shape)}, output weight {tuple(weight.shape)} and targets {tuple(targets.shape)} do not fit: expected (..., d), (vocab, d) and (...)")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)  # the projection in 16 bits, as autocast runs a linear layer
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    # Casts outside the Function: autograd casts their gradients back to the inputs' dtypes.
    flat_hidden, weight, flat_targets = hidden.reshape(-1, hidden.size(-1)).to(dtype), weight.to(dtype), targets.reshape(-1)
    if torch.is_grad_enabled() and (flat_hidden.requires_grad or weight.requires_grad):
        loss = _LinearCrossEntropy.apply(flat_hidden, weight, flat_targets, ignore_index, reduction, chunk_tokens)
    else:
        with torch.autocast(device_type, enabled=False):
            losses = _chunked(flat_hidden, weight, flat_targets, ignore_index, chunk_tokens)
        loss = _reduce(losses, flat_targets != ignore_index, reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-token losses of (N, d) hidden states against the (V, d) weight, reduced. For ``mean``
    and ``sum`` the gradients are computed in forward, chunk by chunk, for a unit incoming
    gradient, and scaled in backward; for ``none`` (each position its own incoming gradient,
    which the weight's gradient cannot take afterwards) backward projects the chunks again."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, chunk_tokens):
        ctx.ignore_index, ctx.reduction, ctx.chunk_tokens = ignore_index, reduction, chunk_tokens
        valid = targets != ignore_index
        with torch.autocast(hidden.device.type, enabled=False):
            if reduction == "none":
                ctx.save_for_backward(hidden, weight, targets)
                return _chunked(hidden, weight, targets, ignore_index, chunk_tokens)
            grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            losses = _chunked(hidden, weight, targets, ignore_index, chunk_tokens, valid.float(), grad_hidden, grad_weight)
            loss = _reduce(losses, valid, reduction)
            scale = 1.0 / valid.sum() if reduction == "mean" else torch.ones((), device=hidden.device)
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight, scale)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        with torch.autocast(grad_loss.device.type, enabled=False):
            if ctx.reduction == "none":
                hidden, weight, targets = ctx.saved_tensors
                grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
                grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
                row_scale = grad_loss.float() * (targets != ctx.ignore_index)
                _chunked(hidden, weight, targets, ctx.ignore_index, ctx.chunk_tokens, row_scale, grad_hidden, grad_weight)
                return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None, None
            grad_hidden, grad_weight, scale = ctx.saved_tensors
            scale = scale * grad_loss.float()
            grad_hidden = None if grad_hidden is None else (grad_hidden.float() * scale).to(grad_hidden.dtype)
            grad_weight = None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype)
            return grad_hidden, grad_weight, None, None, None, None


def _chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    chunk_tokens: int,
    row_scale: torch.Tensor | None = None,
    grad_hidden: torch.Tensor | None = None,
    grad_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 loss of each of the N tokens (0 where ignored). Given ``row_scale`` (N,), also the
    gradients of ``sum(row_scale * losses)``: written into ``grad_hidden`` (N, d) and added to
    ``grad_weight`` (V, d, fp32), those that are given."""
    losses = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.size(0), chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        losses[rows] = _chunk(
            hidden[rows], weight, targets[rows], ignore_index, None if row_scale is None else row_scale[rows], None if grad_hidden is None else grad_hidden[rows], grad_weight
        )
    return losses


def _chunk(h, weight, targets, ignore_index, row_scale, grad_hidden, grad_weight) -> torch.Tensor:
    """:func:`_chunked` on one chunk of rows. A function of its own so that the chunk's logits
    are freed on return, before the next chunk's are made."""
    valid = targets != ignore_index
    targets = targets.where(valid, 0)
    logits = (h @ weight.T).float()  # the one (chunk, vocab) tensor; its 16-bit original is freed here
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    top = logits.amax(1, keepdim=True)
    probs = logits.sub_(top).exp_()  # in place: unnormalised softmax
    total = probs.sum(1)
    # log_softmax's own order of operations, so fp32 results agree with cross_entropy's.
    losses = torch.where(valid, total.log() - (target_logit - top.squeeze(1)), 0.0)
    if row_scale is None:
        return losses
    # d loss / d logits = softmax - one_hot(target), times each row's scale.
    grad_logits = probs.mul_((row_scale / total)[:, None])
    grad_logits.scatter_add_(1, targets[:, None], -row_scale[:, None])
    grad_logits = grad_logits.to(weight.dtype)
    if grad_hidden is not None:
        torch.mm(grad_logits, weight, out=grad_hidden)
    if grad_weight is not None:
        if grad_weight.dtype == grad_logits.dtype:
            grad_weight.addmm_(grad_logits.T, h)
        else:  # 16-bit products, summed over the chunks in fp32
            grad_weight.add_(grad_logits.T @ h)
    return losses


def _reduce(losses: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.sum() / valid.sum()
    return losses.sum() if reduction == "sum" else losses
