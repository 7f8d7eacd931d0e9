"""The shape of a LLaMA model and the named presets: plain Python, no torch.

Kept apart from :mod:`pajama.model` so that commands that only reason about shapes
(``pajama model``, memory plans) start without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pajama import PajamaError


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a LLaMA model."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = 32000
    block_size: int = 2048
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    intermediate_size: int | None = None  # None: LLaMA's round-up-to-256(int(8*d/3))

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise PajamaError(f"model {self.name}: n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.head_size % 2:
            raise PajamaError(f"model {self.name}: head size {self.head_size} must be even for rotary embeddings")
        if self.intermediate_size is None:
            hidden = int(8 * self.n_embd / 3)
            object.__setattr__(self, "intermediate_size", 256 * math.ceil(hidden / 256))

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def replace(self, **changes) -> "ModelConfig":
        fields = asdict(self)
        fields.update(changes)
        if "n_embd" in changes and "intermediate_size" not in changes:
            fields["intermediate_size"] = None
        return ModelConfig(**fields)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Exact parameter count, computed from the shape (no weights allocated)."""
        d, h = self.n_embd, self.intermediate_size
        per_layer = 4 * d * d + 3 * d * h + 2 * d  # q k v o, gate up down, two RMSNorms
        body = self.n_layer * per_layer + d  # + final RMSNorm
        return body + 2 * self.vocab_size * d if embeddings else body

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, PaLM appendix B: 6*N + 12*L*d*T, with N the non-embedding
        parameters plus the lm_head (the output projection is a real matmul per token)."""
        n = self.num_parameters(embeddings=False) + self.vocab_size * self.n_embd
        return 6 * n + 12 * self.n_layer * self.n_embd * seq_len


PRESETS: dict[str, ModelConfig] = {
    c.name: c
    for c in [
        # Small shapes for CPUs, tests and quick experiments (head size 32-64, context 256-2048).
        ModelConfig("tiny", n_layer=2, n_head=2, n_embd=64, block_size=256),
        ModelConfig("small", n_layer=4, n_head=4, n_embd=256, block_size=512),
        ModelConfig("medium", n_layer=12, n_head=12, n_embd=768, block_size=2048),
        ModelConfig("1B", n_layer=18, n_head=16, n_embd=2048, block_size=2048),
        # Meta's LLaMA v1 shapes (head size 128).
        ModelConfig("7B", n_layer=32, n_head=32, n_embd=4096),
        ModelConfig("13B", n_layer=40, n_head=40, n_embd=5120),
        ModelConfig("30B", n_layer=60, n_head=52, n_embd=6656),
        ModelConfig("65B", n_layer=80, n_head=64, n_embd=8192),
    ]
}


def preset(name: str) -> ModelConfig:
    """The preset called ``name``; a clear error lists the known ones."""
    if name not in PRESETS:
        raise PajamaError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}")
    return PRESETS[name]
