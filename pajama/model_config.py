"""The shape of a LLaMA model and the named presets: plain Python, no torch.

Kept apart from :mod:`pajama.model` so that commands that only reason about shapes
(``pajama model``, memory plans) start without importing torch.
"""

from __future__ import annotations

import difflib
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
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None: n_head; 1: multi-query
    tie_embeddings: bool = False  # the output projection is the embedding table (Llama 3.2 1B/3B)
    # Llama 3.1's rotary frequency scaling ("llama3" in Hugging Face configs); factor None: none.
    rope_scaling_factor: float | None = None
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    family: str = "LLaMA"  # the published family the shape comes from, for listings

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise PajamaError(f"model {self.name}: n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.head_size % 2:
            raise PajamaError(f"model {self.name}: head size {self.head_size} must be even for rotary embeddings")
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)
        if not 1 <= self.n_kv_head <= self.n_head or self.n_head % self.n_kv_head:
            raise PajamaError(f"model {self.name}: n_head {self.n_head} is not a multiple of n_kv_head {self.n_kv_head}")
        if self.rope_scaling_factor is not None and not (self.rope_scaling_factor >= 1 and self.rope_high_freq_factor > self.rope_low_freq_factor > 0):
            raise PajamaError(
                f"model {self.name}: rotary scaling needs factor >= 1 and high_freq_factor > low_freq_factor > 0, "
                f"got {self.rope_scaling_factor}, {self.rope_high_freq_factor}, {self.rope_low_freq_factor}"
            )
        if self.intermediate_size is None:
            hidden = int(8 * self.n_embd / 3)
            object.__setattr__(self, "intermediate_size", 256 * math.ceil(hidden / 256))

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_size(self) -> int:
        """Width of the key (and of the value) projection: n_kv_head heads."""
        return self.n_kv_head * self.head_size

    def replace(self, **changes) -> "ModelConfig":
        fields = asdict(self)
        fields.update(changes)
        if "n_embd" in changes and "intermediate_size" not in changes:
            fields["intermediate_size"] = None
        if "n_head" in changes and "n_kv_head" not in changes and self.n_kv_head == self.n_head:
            fields["n_kv_head"] = None  # multi-head attention stays multi-head
        return ModelConfig(**fields)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Exact parameter count, computed from the shape (no weights allocated); a tied output
        projection is the embedding table, counted once."""
        d, h = self.n_embd, self.intermediate_size
        per_layer = 2 * d * d + 2 * d * self.kv_size + 3 * d * h + 2 * d  # q o, k v, gate up down, two RMSNorms
        body = self.n_layer * per_layer + d  # + final RMSNorm
        if not embeddings:
            return body
        return body + (1 if self.tie_embeddings else 2) * self.vocab_size * d

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, PaLM appendix B: 6*N + 12*L*d*T, with N the non-embedding
        parameters plus the lm_head (the output projection is a real matmul per token)."""
        n = self.num_parameters(embeddings=False) + self.vocab_size * self.n_embd
        return 6 * n + 12 * self.n_layer * self.n_embd * seq_len


# Llama 3.2's shared settings: its vocabulary, tied embeddings, rotary base and scaling (factor 32).
# The context is the pre-training one (8192), not the 131072 its scaling extends to.
LLAMA3_2 = dict(vocab_size=128256, block_size=8192, norm_eps=1e-5, tie_embeddings=True, rope_base=500000.0,
                rope_scaling_factor=32.0, family="Llama 3.2")  # fmt: skip

PRESETS: dict[str, ModelConfig] = {
    c.name: c
    for c in [
        # Small shapes for CPUs, tests and quick experiments (head size 32-64, context 256-2048).
        ModelConfig("tiny", n_layer=2, n_head=2, n_embd=64, block_size=256, family="small"),
        ModelConfig("small", n_layer=4, n_head=4, n_embd=256, block_size=512, family="small"),
        ModelConfig("medium", n_layer=12, n_head=12, n_embd=768, block_size=2048, family="small"),
        ModelConfig("1B", n_layer=18, n_head=16, n_embd=2048, block_size=2048, family="small"),
        # Meta's LLaMA v1 shapes (head size 128).
        ModelConfig("7B", n_layer=32, n_head=32, n_embd=4096),
        ModelConfig("13B", n_layer=40, n_head=40, n_embd=5120),
        ModelConfig("30B", n_layer=60, n_head=52, n_embd=6656),
        ModelConfig("65B", n_layer=80, n_head=64, n_embd=8192),
        # The family as trained since: grouped-query attention, tied embeddings, rotary base 500000.
        ModelConfig("tinyllama-1.1b", n_layer=22, n_head=32, n_embd=2048, n_kv_head=4, intermediate_size=5632, norm_eps=1e-5, family="TinyLlama"),
        ModelConfig("llama2-7b", n_layer=32, n_head=32, n_embd=4096, block_size=4096, norm_eps=1e-5, family="Llama 2"),
        ModelConfig("llama3.2-1b", n_layer=16, n_head=32, n_embd=2048, n_kv_head=8, intermediate_size=8192, **LLAMA3_2),
        ModelConfig("llama3.2-3b", n_layer=28, n_head=24, n_embd=3072, n_kv_head=8, intermediate_size=8192, **LLAMA3_2),
        ModelConfig("llama3-8b", n_layer=32, n_head=32, n_embd=4096, n_kv_head=8, intermediate_size=14336, vocab_size=128256, block_size=8192,
                    norm_eps=1e-5, rope_base=500000.0, family="Llama 3"),  # fmt: skip
    ]
}


# litgpt's names for the same shapes (and their chat / instruct variants), so that its configs and
# habits carry over. Llama 3.1 8B is Llama 3 8B's shape; its rotary scaling, which stretches the
# context past 8192 tokens, is not part of llama3-8b.
ALIASES: dict[str, str] = {
    **dict.fromkeys(["tiny-llama-1.1b", "tiny-llama-1.1b-chat", "TinyLlama-1.1B-intermediate-step-1431k-3T", "TinyLlama-1.1B-Chat-v1.0"], "tinyllama-1.1b"),
    **dict.fromkeys(["Llama-2-7b-hf", "Llama-2-7b-chat-hf"], "llama2-7b"),
    **dict.fromkeys(["Llama-3.2-1B", "Llama-3.2-1B-Instruct"], "llama3.2-1b"),
    **dict.fromkeys(["Llama-3.2-3B", "Llama-3.2-3B-Instruct"], "llama3.2-3b"),
    **dict.fromkeys(["Meta-Llama-3-8B", "Meta-Llama-3-8B-Instruct", "Llama-3.1-8B", "Llama-3.1-8B-Instruct", "Meta-Llama-3.1-8B", "Meta-Llama-3.1-8B-Instruct"], "llama3-8b"),
}


def preset(name: str) -> ModelConfig:
    """The preset called ``name``, or one of litgpt's names for it (case-insensitive); a clear
    error suggests the closest name and lists the known ones."""
    spelled = {n.lower(): n for n in [*PRESETS, *ALIASES]}  # lower case -> as written
    found = spelled.get(str(name).lower())
    if found is None:
        close = difflib.get_close_matches(str(name).lower(), spelled, n=1)
        hint = f"did you mean {spelled[close[0]]}? " if close else ""
        raise PajamaError(f"unknown model {name!r}; {hint}known models: {', '.join(PRESETS)} (and litgpt's names for them: pajama model)")
    return PRESETS[ALIASES.get(found, found)]
