"""``pajama model``: a preset's shape and exact parameter count, computed, never allocated."""

from __future__ import annotations

from pajama.model import PRESETS, preset


def model(name: str | None = None) -> None:
    """Show a model preset's shape and exact parameter count (no weights are allocated).

    Without a name, list every preset with its parameter count.

    Args:
        name: preset name, e.g. 7B.
    """
    if name is None:
        for config in PRESETS.values():
            print(f"{config.name:<8}{config.num_parameters():>17,}  ({config.n_layer} layers, d {config.n_embd}, {config.n_head} heads)")
        return
    config = preset(name)
    print(f"model {config.name}")
    print(f"  parameters      {config.num_parameters():,}")
    print(f"  non-embedding   {config.num_parameters(embeddings=False):,}")
    print(f"  layers          {config.n_layer}")
    print(f"  heads           {config.n_head} (head size {config.head_size})")
    print(f"  d_model         {config.n_embd}")
    print(f"  MLP hidden      {config.intermediate_size}")
    print(f"  vocab           {config.vocab_size}")
    print(f"  context         {config.block_size}")
    print(f"  norm eps        {config.norm_eps}")
    print(f"  train FLOPs/tok {config.flops_per_token(config.block_size):,} (6N + 12LdT, N without the embedding table, with lm_head)")
