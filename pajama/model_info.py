"""``pajama model``: a preset's shape, exact parameter count and memory plan, computed, never allocated."""

from __future__ import annotations

from pajama import PajamaError
from pajama.memory import PRECISIONS, format_plan
from pajama.model_config import PRESETS, preset


def model(
    name: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    micro_batch_size: int | None = None,
    block_size: int | None = None,
    strategy: str = "auto",
    activation_checkpointing: bool | None = None,
    precision: str = "bf16-mixed",
) -> None:
    """Show a model preset's shape and exact parameter count (no weights are allocated).

    Without a name, list every preset with its parameter count. With --micro_batch_size (or
    any other flag of a planned run: a micro-batch of 1 then), also estimate the memory each
    device needs to train it.

    Args:
        name: preset name, e.g. 7B.
        devices: devices per node of the planned run.
        num_nodes: nodes of the planned run.
        micro_batch_size: sequences per device per step; given, a memory plan is printed.
        block_size: sequence length (default: the preset's context).
        strategy: auto (fsdp for more than one device), fsdp, ddp or single.
        activation_checkpointing: plan with (true) or without (false) activation checkpointing (default: show both).
        precision: the planned run's precision: bf16-mixed, 16-mixed, bf16-true or 32-true.
    """
    if precision not in PRECISIONS:
        raise PajamaError(f"--precision must be {', '.join(PRECISIONS)}, got {precision!r}")
    if name is None:
        for config in PRESETS.values():
            print(f"{config.name:<16}{config.num_parameters():>15,}  {config.family:<10} {_shape(config)}")
        return
    config = preset(name)
    print(f"model {config.name} ({config.family})")
    print(f"  parameters      {config.num_parameters():,}")
    print(f"  non-embedding   {config.num_parameters(embeddings=False):,}")
    print(f"  layers          {config.n_layer}")
    print(f"  heads           {config.n_head} (head size {config.head_size}), {_kv(config)}")
    print(f"  d_model         {config.n_embd}")
    print(f"  MLP hidden      {config.intermediate_size}")
    print(f"  vocab           {config.vocab_size}" + (", output tied to the embeddings" if config.tie_embeddings else ""))
    print(f"  context         {config.block_size}")
    print(f"  rotary          base {config.rope_base:g}" + (
        f", Llama 3 scaling (factor {config.rope_scaling_factor:g}, low/high frequency factors "
        f"{config.rope_low_freq_factor:g}/{config.rope_high_freq_factor:g}, original context {config.rope_original_context})"
        if config.rope_scaling_factor else ""))  # fmt: skip
    print(f"  norm eps        {config.norm_eps}")
    print(f"  train FLOPs/tok {config.flops_per_token(config.block_size):,} (6N + 12LdT, N without the embedding table, with lm_head)")
    planned = devices > 1 or num_nodes > 1 or block_size is not None or strategy != "auto" or activation_checkpointing is not None or precision != "bf16-mixed"
    if micro_batch_size is None and planned:
        micro_batch_size = 1
    if micro_batch_size:
        world = devices * num_nodes
        chosen = strategy if strategy != "auto" else ("fsdp" if world > 1 else "single")
        print(format_plan(config, world, micro_batch_size, block_size or config.block_size, chosen, activation_checkpointing, precision))


def _kv(config) -> str:
    if config.n_kv_head == config.n_head:
        return "multi-head attention"
    if config.n_kv_head == 1:
        return "multi-query attention"
    return f"{config.n_kv_head} key/value heads (grouped-query attention)"


def _shape(config) -> str:
    kv = f", {config.n_kv_head} KV heads" if config.n_kv_head != config.n_head else ""
    return f"{config.n_layer} layers, d {config.n_embd}, {config.n_head} heads{kv}, vocab {config.vocab_size}" + (", tied" if config.tie_embeddings else "")
