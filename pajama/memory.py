"""Per-device memory of a training run, before renting the devices; and the largest
micro-batch that fits a memory budget (``--micro_batch_size auto`` on a CPU).

What is counted, in bytes per device (N parameters, W data-parallel devices, b micro-batch,
T sequence length, L layers, d width, H MLP hidden, V vocabulary):

* weights, gradients: 4N each (fp32 master weights; 2N under bf16-true), divided by W under FSDP;
* AdamW state: two moments, 8N (4N under bf16-true), divided by W under FSDP;
* FSDP working set: two blocks gathered (the one computing and the one prefetched; in 16 bits
  under mixed precision) and one block's gradients before their reduce-scatter; without FSDP,
  under mixed precision, autocast's 16-bit copy of every weight (2N), held until backward;
* activations kept for backward, per token and layer, as measured on the saved tensors:
  under mixed precision 32d + 4K + 8H bytes, K the key/value width (four d-wide fp32 tensors:
  residual stream and RMSNorm internals; six 16-bit casts of the linear layers' inputs; 16-bit
  q, k, v and attention output; the four H-wide SwiGLU tensors); in fp32 36d + 8K + 16H (no
  casts, everything 4 bytes);
  half that under bf16-true. Flash attention keeps no T x T scores. With activation
  checkpointing only each block's input is kept, plus one block's activations while it is
  recomputed;
* logits: 16-bit logits, their fp32 copy for the loss and its gradient, 10V per token (12V in
  fp32: logits, log-softmax and gradient).

CUDA context, allocator fragmentation and communication buffers are not modelled: keep ~10-15 %
of the device free.
"""

from __future__ import annotations

from pajama.model_config import ModelConfig

GB = 2**30


PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "32-true")  # what pajama trains in
MIXED = ("bf16-mixed", "16-mixed")


def activation_bytes_per_token_layer(config: ModelConfig, precision: str = "bf16-mixed") -> int:
    d, h, kv = config.n_embd, config.intermediate_size, config.kv_size
    if precision in MIXED:
        fp32 = 4 * (4 * d)  # residual stream and RMSNorm internals
        casts = 2 * (6 * d)  # 16-bit inputs of wq, wk, wv, wo, gate, up
        attention = 2 * (2 * d + 2 * kv)  # q, k, v (kv wide: grouped-query attention), attention output
        mlp = 2 * (4 * h)  # gate, up, silu(gate), their product
        return fp32 + casts + attention + mlp
    width = 2 if precision == "bf16-true" else 4
    return width * (9 * d + 2 * kv + 4 * h)  # the same tensors, none cast, plus rotary's fp32 temporaries


def estimate(
    config: ModelConfig, world_size: int, micro_batch_size: int, seq_len: int, strategy: str, activation_checkpointing: bool, precision: str = "bf16-mixed"
) -> dict[str, float]:
    """Bytes per device of each part of a training step, and their total."""
    n = config.num_parameters()
    shards = world_size if strategy == "fsdp" else 1
    tokens = micro_batch_size * seq_len
    block_params = config.num_parameters(embeddings=False) // max(1, config.n_layer)
    mixed = precision in MIXED
    width = 2 if precision == "bf16-true" else 4  # bytes of a weight, a gradient, a moment
    parts = {
        "weights": width * n / shards,
        "gradients": width * n / shards,
        "AdamW state": 2 * width * n / shards,
        # two blocks gathered (computing, prefetched), one block's gradients before reduction
        "FSDP gathered blocks": (2 * (2 if mixed else width) + width) * block_params if shards > 1 else 0,
        # without FSDP's 16-bit gathering, autocast keeps a 16-bit copy of every weight until backward
        "16-bit weight copies": 2 * n if shards == 1 and mixed else 0,
    }
    per_layer = activation_bytes_per_token_layer(config, precision) * tokens
    if activation_checkpointing:
        parts["activations"] = config.n_layer * (4 if mixed else width) * config.n_embd * tokens + per_layer
    else:
        parts["activations"] = config.n_layer * per_layer
    parts["logits and loss"] = (10 if mixed else 3 * width) * config.vocab_size * tokens
    parts["total"] = sum(parts.values())
    return parts


def largest_micro_batch(
    config: ModelConfig, budget_bytes: float, limit: int, world_size: int, seq_len: int, strategy: str, activation_checkpointing: bool, precision: str
) -> int:
    """The largest micro-batch (at most ``limit``) whose planned total fits ``budget_bytes``; 0 if none."""
    fits = [b for b in range(1, limit + 1) if estimate(config, world_size, b, seq_len, strategy, activation_checkpointing, precision)["total"] <= budget_bytes]
    return fits[-1] if fits else 0


def fit_batch(batch_size: int, world_size: int, largest: int) -> tuple[int, int, str | None]:
    """(micro-batch, global batch, note): the largest micro-batch up to ``largest`` that divides
    the global batch into whole accumulation steps on ``world_size`` devices. A global batch
    whose divisors are all far below ``largest`` (or that does not split over the devices) is
    moved to the nearest multiple of ``largest * world_size`` that does, and the note says so."""
    largest = max(1, largest)
    if batch_size % world_size == 0:
        per_device = batch_size // world_size
        micro = max(b for b in range(1, min(largest, per_device) + 1) if per_device % b == 0)
        # Half the largest or more: a few more accumulation steps cost little; keep the batch.
        if 2 * micro >= min(largest, per_device):
            return micro, batch_size, None
    unit = largest * world_size
    changed = max(1, round(batch_size / unit)) * unit
    return largest, changed, f"global batch {batch_size} -> {changed} sequences, so that micro-batches of {largest} on {world_size} device(s) divide it"


def format_plan(
    config: ModelConfig, world_size: int, micro_batch_size: int, seq_len: int, strategy: str, activation_checkpointing: bool | None, precision: str = "bf16-mixed"
) -> str:
    """The estimate as a table; ``activation_checkpointing`` None: one table without it, one with."""
    both = activation_checkpointing is None
    rows = [f"memory per device: {config.name}, {world_size} device(s), {strategy}, micro-batch {micro_batch_size} x {seq_len} tokens, "
            + ("" if both else f"activation checkpointing {'on' if activation_checkpointing else 'off'}, ") + precision]  # fmt: skip
    for checkpointing in (False, True) if both else (activation_checkpointing,):
        parts = estimate(config, world_size, micro_batch_size, seq_len, strategy, checkpointing, precision)
        if both:
            rows.append(f"  -- activation checkpointing {'on' if checkpointing else 'off'}")
        rows += [f"  {name:<22}{value / GB:>10.2f} GiB" for name, value in parts.items()]
    rows.append("  (plus CUDA context and allocator slack: keep ~10-15 % free)")
    return "\n".join(rows)


def largest_that_fits(candidates: list[int], fits) -> int:
    """The first of ``candidates`` (largest first) for which ``fits(candidate)`` holds, trying
    them in turn (on a GPU: a real step, backing off on out-of-memory); 0 if none does."""
    return next((c for c in candidates if fits(c)), 0)
