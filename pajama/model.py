"""The LLaMA decoder: pre-norm blocks of rotary grouped-query attention and a SwiGLU MLP.

One module for the whole family (LLaMA v1, Llama 2/3, TinyLlama): what differs between them
is data in ``ModelConfig`` (key/value heads, tied embeddings, rotary base and scaling, MLP
width). Kept deliberately small (nanoGPT-style): the modules only; the shape and the named
presets are in :mod:`pajama.model_config`. Weights stay in the dtype they are created in (fp32
by default); bf16 comes only from autocast / mixed precision.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts, noop_context_fn

from pajama import PajamaError
from pajama.loss import linear_cross_entropy
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


def rope_frequencies(config: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """The head_size // 2 rotary frequencies, with Llama 3.1's scaling when the config has it:
    wavelengths longer than original_context / low_freq_factor are stretched by the factor,
    those shorter than original_context / high_freq_factor kept, those between blended."""
    half = config.head_size // 2
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    if config.rope_scaling_factor is not None:
        wavelength = 2 * math.pi / inv_freq
        smooth = (config.rope_original_context / wavelength - config.rope_low_freq_factor) / (config.rope_high_freq_factor - config.rope_low_freq_factor)
        smooth = smooth.clamp(0.0, 1.0)  # 0: long wavelengths, scaled; 1: short ones, kept
        inv_freq = (1 - smooth) * inv_freq / config.rope_scaling_factor + smooth * inv_freq
    return inv_freq


def rope_cache(config: ModelConfig, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (block_size, head_size // 2), Meta's interleaved-pair convention."""
    inv_freq = rope_frequencies(config, device)
    angles = torch.outer(torch.arange(config.block_size, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1), (x2, x3), ... of the last dim; x is (B, H, T, hs)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


# scaled_dot_product_attention shares key/value heads between query heads itself from torch
# 2.5 (enable_gqa): 10-15 % faster than expanding them first on CPU, and no expanded copies.
_SDPA_GQA = torch.__version__ >= "2.5"


def shares_kv_heads(device_type: str, dtype: torch.dtype, masked: bool, flash_capable: bool = True) -> bool:
    """Whether attention hands scaled_dot_product_attention the key/value heads as they are
    (``enable_gqa``) rather than expanded to the query heads: only where a fused kernel then
    takes the call, since SDPA falls back to its math kernel otherwise (B x H x T x S scores in
    memory). On CUDA the flash kernel alone takes shared heads, and neither an explicit mask,
    nor fp32, nor GPUs before compute capability 8.0 (``flash_capable``); the memory-efficient
    kernel takes those, but not shared heads. On CPU the flash kernel takes them all."""
    if not _SDPA_GQA:
        return False
    if device_type == "cuda":
        return flash_capable and not masked and dtype in (torch.float16, torch.bfloat16)
    return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
    """Attention of q (B, H, T, hs) over k, v (B, KV, S, hs), H a multiple of KV: where the
    boolean ``mask`` (broadcast to B, H, T, S) holds; without one, causal or over everything."""
    extra = {}
    if k.size(1) != q.size(1):
        # get_device_properties: cached by torch, and a constant under torch.compile.
        flash_capable = q.device.type != "cuda" or torch.cuda.get_device_properties(q.device).major >= 8
        if shares_kv_heads(q.device.type, q.dtype, mask is not None, flash_capable):
            extra["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.size(1) // t.size(1), dim=1) for t in (k, v))
    if mask is None:
        # is_causal and no explicit mask, so the flash / memory-efficient kernels stay eligible.
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **extra)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, config.head_size
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, config.kv_size, bias=False)
        self.wv = nn.Linear(d, config.kv_size, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: "KVCache | None" = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        causal = True
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
            if T == 1:
                causal = False  # the one new token sees everything before it
            elif mask is None and k.size(2) > T:  # a prompt after an earlier prefix: causal within the new tokens, full over the prefix
                mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
        y = attention(q, k, v, mask, causal)
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

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: "KVCache | None" = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, kv_cache, mask)
        return x + self.mlp(self.mlp_norm(x))


class KVCache:
    """Keys and values of the tokens seen so far, for incremental decoding (only the n_kv_head
    key/value heads: grouped-query attention's saving in memory is the point of it).

    ``capacity``: the most tokens it will hold, prompt and generated ones (default, and at most:
    the model's context). Size it to the request: a Llama 3.2 1B cache for 131,072 tokens (the
    context its rotary scaling reaches) takes 8.6 GB in fp32, one for a 200-token sample 13 MB."""

    def __init__(self, batch: int, config: ModelConfig, device: torch.device, dtype: torch.dtype, capacity: int | None = None) -> None:
        self.capacity = config.block_size if capacity is None else min(capacity, config.block_size)
        if self.capacity < 1:
            raise PajamaError(f"a KV cache must hold at least one token, asked for {capacity}")
        shape = (batch, config.n_kv_head, self.capacity, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        if end > self.capacity:
            raise PajamaError(f"the KV cache holds {self.capacity} tokens; {end} were given")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


# What a block keeps for backward (``LLaMA.activation_checkpointing``): everything (none), only its
# input, recomputing the rest in the backward pass (full), or torchtitan's per-operator policy
# (selective): the attention's outputs and every second matrix product are kept, the other
# products and the cheap element-wise work between them (norms, rotary, SwiGLU's gate, casts)
# recomputed. Keeping every product would hold the MLP's H-wide outputs too: more memory than
# the recompute it saves is worth.
RECOMPUTE = ("none", "selective", "full")  # from the least recompute to the most
_aten = torch.ops.aten
_KEPT_BY_SELECTIVE = {
    _aten.mm.default,
    _aten._scaled_dot_product_flash_attention.default, _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default, _aten._scaled_dot_product_flash_attention_for_cpu.default,
}  # fmt: skip


def _selective_contexts():
    """A block's checkpoint contexts under the selective policy; each call counts its own
    matrix products (the forward and the recompute each in order), so the same ones are kept."""
    counts = {False: 0, True: 0}

    def policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
        if op is _aten.mm.default:
            counts[ctx.is_recompute] += 1
            if counts[ctx.is_recompute] % 2 == 0:
                return CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if op in _KEPT_BY_SELECTIVE else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


class LLaMA(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        # Tied: no second matrix; the forward uses the embedding table, so there is one parameter
        # to shard, initialise, checkpoint and export, and nothing can untie it.
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.activation_checkpointing = "none"  # one of RECOMPUTE: what each block recomputes in backward
        # Not persistent: derived from the config, so checkpoints hold weights only.
        cos, sin = rope_cache(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self,
        idx: torch.Tensor,
        kv_caches: list[KVCache] | None = None,
        doc_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        reduction: str = "mean",
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T).

        ``doc_ids`` (B, T), non-decreasing along T, restricts attention to earlier tokens of the
        same document (packed sequences; see :func:`document_ids`).

        With ``targets`` (B, T) (``pajama.loss.IGNORE_INDEX`` where not scored), the fp32
        cross-entropy instead, by ``reduction``: ``mean``, ``sum`` or ``none`` ((B, T), each
        token's), computed chunk by chunk without the logits (:func:`pajama.loss.linear_cross_entropy`).
        With ``positions`` (B, K), the logits at those positions only (B, K, vocab). Both happen
        here, in forward, so that under FSDP the output weight is gathered for them."""
        T = idx.size(1)
        start = kv_caches[0].length if kv_caches else 0
        if start + T > self.config.block_size:
            raise PajamaError(f"sequence of {start + T} tokens exceeds the model's context of {self.config.block_size}")
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]
        mask = document_mask(doc_ids) if doc_ids is not None else None
        x = self.tok_embeddings(idx)
        for i, block in enumerate(self.layers):
            if self.activation_checkpointing != "none" and self.training:
                context = _selective_contexts if self.activation_checkpointing == "selective" else noop_context_fn
                x = checkpoint(block, x, cos, sin, None, mask, use_reentrant=False, context_fn=context)
            else:
                x = block(x, cos, sin, kv_caches[i] if kv_caches else None, mask)
        if kv_caches:
            for cache in kv_caches:
                cache.length += T
        x = self.norm(x)
        weight = self.lm_head.weight if self.lm_head is not None else self.tok_embeddings.weight
        if targets is not None:
            return linear_cross_entropy(x, weight, targets, reduction=reduction)
        if positions is not None:
            x = x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        return F.linear(x, weight)

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


def document_ids(idx: torch.Tensor, bos_id: int) -> torch.Tensor:
    """For packed token ids (B, T), the document each token belongs to: a new one starts at
    every BOS (tokens before the first BOS continue an earlier document, numbered 0)."""
    return torch.cumsum(idx == bos_id, dim=1)


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean mask: causal, and within the same document only."""
    T = doc_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1)).unsqueeze(1) & causal


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
