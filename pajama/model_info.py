"""``pajama model``: a preset's shape, exact parameter count and memory plan, computed, never allocated."""

from __future__ import annotations

from pajama import PajamaError
from pajama.memory import PRECISIONS
from pajama.model_config import ALIASES, PRESETS, preset


def model(
    name: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    micro_batch_size: int | None = None,
    block_size: int | None = None,
    strategy: str = "auto",
    activation_checkpointing: str | None = None,
    precision: str = "bf16-mixed",
    gpu: str | None = None,
) -> None:
    """Show a model preset's shape and exact parameter count (no weights are allocated).

    Without a name, list every preset with its parameter count. With --micro_batch_size (or
    any other flag of a planned run: a micro-batch of 1 then), also trace one training step
    of that run on CUDA with fake tensors (no memory, no GPU needed) and print the memory
    each device needs, by part, for each recompute mode; with --gpu, also the largest
    micro-batch that fits that GPU.

    Args:
        name: preset name, e.g. 7B, or litgpt's name for it, e.g. Llama-3.2-1B (case-insensitive).
        devices: devices per node of the planned run.
        num_nodes: nodes of the planned run.
        micro_batch_size: sequences per device per step; given, a memory plan is printed.
        block_size: sequence length (default: the preset's context).
        strategy: auto (fsdp for more than one device), fsdp, ddp or single.
        activation_checkpointing: plan with this recompute mode only: none, full or selective (default: each).
        precision: the planned run's precision: bf16-mixed, 16-mixed, bf16-true or 32-true.
        gpu: h100, h200, a100-80g or a100-40g: the largest micro-batch that fits it, per recompute mode.
    """
    if precision not in PRECISIONS:
        raise PajamaError(f"--precision must be {', '.join(PRECISIONS)}, got {precision!r}")
    if name is None:
        for config in PRESETS.values():
            print(f"{config.name:<16}{config.num_parameters():>15,}  {config.family:<10} {_shape(config)}")
        print("\nalso accepted: litgpt's names for these shapes, and every name in any case")
        for target in dict.fromkeys(ALIASES.values()):
            print(f"  {target:<16}{', '.join(a for a, t in ALIASES.items() if t == target)}")
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
    planned = devices > 1 or num_nodes > 1 or block_size is not None or strategy != "auto" or activation_checkpointing is not None or precision != "bf16-mixed" or gpu is not None
    if micro_batch_size is None and planned:
        micro_batch_size = 1
    if micro_batch_size:
        _plan(config.replace(block_size=block_size or config.block_size), devices * num_nodes, micro_batch_size, strategy, activation_checkpointing, precision, gpu)


def _plan(config, world: int, micro_batch_size: int, strategy: str, activation_checkpointing: str | None, precision: str, gpu: str | None) -> None:
    """Each recompute mode's traced step (pajama.training.trace), and what fits ``gpu``."""
    from pajama.training.config import recompute_mode
    from pajama.training.plan import GPU_MEMORY_SHARE, largest_micro_batch
    from pajama.training.trace import GPUS, format_trace, trace_step

    if gpu is not None and gpu not in GPUS:
        raise PajamaError(f"--gpu must be one of {', '.join(GPUS)}, got {gpu!r}")
    modes = (recompute_mode(activation_checkpointing),) if activation_checkpointing is not None else ("none", "selective", "full")
    if "auto" in modes:
        raise PajamaError("--activation_checkpointing: give none, full or selective (or leave it out for each)")
    chosen = strategy if strategy != "auto" else ("fsdp" if world > 1 else "single")
    for mode in modes:
        trace = trace_step(config, world, micro_batch_size, config.block_size, precision, chosen, mode, device="cuda")
        print(format_trace(trace))
        if gpu is not None:
            budget = GPUS[gpu].memory_gb * 1e9 * GPU_MEMORY_SHARE
            fits = largest_micro_batch(trace, budget, limit=4096)
            print(f"  largest micro-batch that fits {GPUS[gpu].name} ({GPU_MEMORY_SHARE:.0%} of its memory): {fits or 'none'}")
    print("  (plus the CUDA context, NCCL's buffers and allocator slack: plans keep 10 % of a GPU free)")


def _kv(config) -> str:
    if config.n_kv_head == config.n_head:
        return "multi-head attention"
    if config.n_kv_head == 1:
        return "multi-query attention"
    return f"{config.n_kv_head} key/value heads (grouped-query attention)"


def _shape(config) -> str:
    kv = f", {config.n_kv_head} KV heads" if config.n_kv_head != config.n_head else ""
    return f"{config.n_layer} layers, d {config.n_embd}, {config.n_head} heads{kv}, vocab {config.vocab_size}" + (", tied" if config.tie_embeddings else "")
