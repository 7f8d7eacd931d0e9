"""The LLaMA (v1) decoder: pre-norm blocks of rotary multi-head attention and a SwiGLU MLP.

Kept deliberately small (nanoGPT-style): the modules only; the shape (``ModelConfig``) and
the named presets are in :mod:`pajama.model_config`. Weights stay in the dtype they are
created in (fp32 by default); bf16 comes only from autocast / mixed precision.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from pajama import PajamaError
from pajama.model_config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the activation dtype, as Meta's reference does.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_cache(config: ModelConfig, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (block_size, head_size // 2), Meta's interleaved-pair convention."""
    half = config.head_size // 2
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(config.block_size, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1), (x2, x3), ... of the last dim; x is (B, H, T, hs)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head, self.head_size = config.n_head, config.head_size
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: "KVCache | None" = None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is None:
            # is_causal and no explicit mask, so the flash / memory-efficient kernels stay eligible.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = kv_cache.update(k, v)
            if T == 1:
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # prompt after an earlier prefix: causal within the new tokens, full over the prefix
                mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.up = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: "KVCache | None" = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


class KVCache:
    """Keys and values of the tokens seen so far, for incremental decoding."""

    def __init__(self, batch: int, config: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, config.n_head, config.block_size, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class LLaMA(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.activation_checkpointing = False  # recompute each block in backward (saves memory)
        # Not persistent: derived from the config, so checkpoints hold weights only.
        cos, sin = rope_cache(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor, kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T)."""
        T = idx.size(1)
        start = kv_caches[0].length if kv_caches else 0
        if start + T > self.config.block_size:
            raise PajamaError(f"sequence of {start + T} tokens exceeds the model's context of {self.config.block_size}")
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]
        x = self.tok_embeddings(idx)
        for i, block in enumerate(self.layers):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin, kv_caches[i] if kv_caches else None)
        if kv_caches:
            for cache in kv_caches:
                cache.length += T
        return self.lm_head(self.norm(x))

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter and buffer (also after ``to_empty`` from the meta device).

        Normal(0, 0.02) for linear and embedding weights, output projections scaled by
        1/sqrt(2 * n_layer) (GPT-2 / nanoGPT), ones for RMSNorm, rotary tables recomputed.
        Each parameter draws from its own generator seeded by (seed, name) and is generated
        whole, then cut to the local shard: the same seed gives the same model on any number
        of devices, while only one full parameter exists at a time.
        """
        for name, param in self.named_parameters():
            local = _local(param)
            if name.endswith("norm.weight"):
                local.fill_(1.0)
                continue
            std = 0.02
            if name.endswith(("attn.wo.weight", "mlp.down.weight")):
                std /= math.sqrt(2 * self.config.n_layer)
            generator = torch.Generator(device=local.device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            full = torch.empty(param.shape, device=local.device, dtype=local.dtype).normal_(0.0, std, generator=generator)
            local.copy_(_shard_of(param, full))
        self.reset_rope()

    @torch.no_grad()
    def load_full_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy full (unsharded) weights in, each process keeping only its own shard."""
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        if missing or unexpected:
            raise PajamaError(f"weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for name, param in params.items():
            if tuple(weights[name].shape) != tuple(param.shape):
                raise PajamaError(f"weight {name} has shape {tuple(weights[name].shape)}, the model expects {tuple(param.shape)}")
            local = _local(param)
            local.copy_(_shard_of(param, weights[name].to(local.device, local.dtype)))

    @torch.no_grad()
    def reset_rope(self) -> None:
        """Recompute the rotary tables (they are not saved: e.g. after ``to_empty``)."""
        cos, sin = rope_cache(self.config, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)


def _local(param: torch.Tensor) -> torch.Tensor:
    """The part of ``param`` stored on this process (all of it unless sharded)."""
    return param.to_local() if isinstance(param, DTensor) else param


def _shard_of(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This process's piece of ``full`` under ``param``'s sharding (FSDP2: dim-0 torch.chunk)."""
    if not isinstance(param, DTensor):
        return full
    for mesh_dim, placement in enumerate(param.placements):
        if placement.is_shard():
            pieces = torch.chunk(full, param.device_mesh.size(mesh_dim), dim=placement.dim)
            rank = param.device_mesh.get_local_rank(mesh_dim)
            full = pieces[rank] if rank < len(pieces) else full.narrow(placement.dim, 0, 0)
    return full
