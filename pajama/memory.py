"""Per-device memory estimate of a training run, before renting the devices.

What is counted, in bytes per device (N parameters, W data-parallel devices, b micro-batch,
T sequence length, L layers, d width, H MLP hidden, V vocabulary):

* weights, gradients: fp32, 4N each, divided by W under FSDP;
* AdamW state: two fp32 moments, 8N, divided by W under FSDP;
* FSDP working set: two blocks gathered in bf16 (the one computing and the one prefetched)
  and one block's gradients before their reduce-scatter; without FSDP, autocast's bf16 copy
  of every weight (2N), held until the backward pass;
* activations kept for backward under bf16 autocast, per token and layer (36d + 8H bytes, as
  measured on the saved tensors): four d-wide fp32 tensors (residual stream and RMSNorm
  internals), six bf16 casts of the linear layers' inputs (autocast casts per layer), bf16 q, k,
  v and attention output, and the four H-wide SwiGLU tensors (flash attention keeps no T x T
  scores). With activation
  checkpointing only each block's input is kept, plus one block's activations while it is
  recomputed;
* logits: bf16 logits, their fp32 copy for the loss and its gradient, 10V per token.

CUDA context, allocator fragmentation and communication buffers are not modelled: keep ~10-15 %
of the device free.
"""

from __future__ import annotations

from pajama.model import ModelConfig

GB = 2**30


def activation_bytes_per_token_layer(config: ModelConfig) -> int:
    d, h = config.n_embd, config.intermediate_size
    fp32 = 4 * (4 * d)  # residual stream and RMSNorm internals
    casts = 2 * (6 * d)  # bf16 inputs of wq, wk, wv, wo, gate, up
    attention = 2 * (4 * d)  # q, k, v, attention output
    mlp = 2 * (4 * h)  # gate, up, silu(gate), their product
    return fp32 + casts + attention + mlp


def estimate(config: ModelConfig, world_size: int, micro_batch_size: int, seq_len: int, strategy: str, activation_checkpointing: bool) -> dict[str, float]:
    """Bytes per device of each part of a training step, and their total."""
    n = config.num_parameters()
    shards = world_size if strategy == "fsdp" else 1
    tokens = micro_batch_size * seq_len
    block_params = config.num_parameters(embeddings=False) // max(1, config.n_layer)
    parts = {
        "weights (fp32)": 4 * n / shards,
        "gradients (fp32)": 4 * n / shards,
        "AdamW state (fp32)": 8 * n / shards,
        # two blocks gathered in bf16 (computing, prefetched), one block's gradients before reduction
        "FSDP gathered blocks": (2 * 2 + 4) * block_params if shards > 1 else 0,
        # without FSDP's bf16 gathering, autocast keeps a bf16 copy of every weight until backward
        "bf16 weight copies": 2 * n if shards == 1 else 0,
    }
    per_layer = activation_bytes_per_token_layer(config) * tokens
    if activation_checkpointing:
        parts["activations"] = config.n_layer * 4 * config.n_embd * tokens + per_layer
    else:
        parts["activations"] = config.n_layer * per_layer
    parts["logits and loss"] = 10 * config.vocab_size * tokens
    parts["total"] = sum(parts.values())
    return parts


def format_plan(config: ModelConfig, world_size: int, micro_batch_size: int, seq_len: int, strategy: str, activation_checkpointing: bool | None) -> str:
    """The estimate as a table; ``activation_checkpointing`` None: one table without it, one with."""
    both = activation_checkpointing is None
    rows = [f"memory per device: {config.name}, {world_size} device(s), {strategy}, micro-batch {micro_batch_size} x {seq_len} tokens, "
            + ("" if both else f"activation checkpointing {'on' if activation_checkpointing else 'off'}, ") + "bf16-mixed"]  # fmt: skip
    for checkpointing in (False, True) if both else (activation_checkpointing,):
        parts = estimate(config, world_size, micro_batch_size, seq_len, strategy, checkpointing)
        if both:
            rows.append(f"  -- activation checkpointing {'on' if checkpointing else 'off'}")
        rows += [f"  {name:<22}{value / GB:>10.2f} GiB" for name, value in parts.items()]
    rows.append("  (plus CUDA context and allocator slack: keep ~10-15 % free)")
    return "\n".join(rows)
