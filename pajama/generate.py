"""Sampling text from a checkpoint: KV cache, temperature / top-k / top-p, stop at EOS, streamed."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import pajama.checkpoint as ckpt
from pajama import PajamaError
from pajama.hardware import device_type
from pajama.model import LLaMA, KVCache
from pajama.precision import choose_precision, compute_dtype


def load_model(checkpoint_path: Path, device: torch.device) -> tuple[LLaMA, dict]:
    """A checkpoint's model (full or sharded checkpoint), fp32, in eval mode on ``device``."""
    config, weights, meta = ckpt.load_model_weights(checkpoint_path)
    with torch.device("meta"):
        model = LLaMA(config)
    model.to_empty(device=device)
    model.load_state_dict(weights, strict=False)
    missing = set(model.state_dict()) - set(weights)
    if missing:
        raise PajamaError(f"{checkpoint_path}: checkpoint lacks {', '.join(sorted(missing)[:5])}")
    model.reset_rope()
    return model.eval(), meta


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of ``logits`` (B, vocab)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest prefix reaching top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(
    model: LLaMA,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time, stopping at ``eos_id`` or the context length.

    ``vocab_size``: sample only ids below it (a tokenizer smaller than the model's vocabulary).
    """
    device = model.rope_cos.device
    budget = min(max_new_tokens, model.config.block_size - len(prompt))
    if budget <= 0:
        raise PajamaError(f"the prompt has {len(prompt)} tokens; the model's context is {model.config.block_size}")
    dtype = next(model.parameters()).dtype
    caches = [KVCache(1, model.config, device, dtype, capacity=len(prompt) + budget) for _ in model.layers]  # the request's tokens, not the whole context
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    logits = model(torch.tensor([prompt], device=device), caches)[:, -1]
    for _ in range(budget):
        if vocab_size is not None:
            logits[:, vocab_size:] = float("-inf")
        token = sample_next(logits, temperature, top_k, top_p, generator)
        t = int(token)
        if t == eos_id:
            return
        yield t
        logits = model(token.view(1, 1), caches)[:, -1]


def generate(
    checkpoint: Path,
    tokenizer_path: Path | None = None,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    seed: int | None = 1234,
    accelerator: str = "auto",
    precision: str | None = None,
) -> str:
    """Sample text from a checkpoint, streaming tokens as they come; stops at EOS.

    Args:
        checkpoint: checkpoint directory, or a training out_dir (its newest checkpoint).
        tokenizer_path: the tokenizer the training data was prepared with (default: the copy
            pretrain keeps with the checkpoint and in its run directory).
        prompt: text to continue (empty: start from BOS alone).
        max_new_tokens: at most this many new tokens.
        temperature: softmax temperature; 0 picks the most likely token.
        top_k: sample among the k most likely tokens (none: all).
        top_p: sample among the smallest set of tokens whose probability reaches p (nucleus).
        seed: random seed (none: different every run).
        accelerator: auto, cpu, cuda or mps.
        precision: bf16-mixed / bf16-true (bf16 weights), 16-mixed (fp16 weights) or 32-true; default: the fastest here (CPUs: measured).
    """
    if max_new_tokens < 1:
        raise PajamaError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    device = torch.device(device_type(accelerator))
    path = ckpt.resolve(Path(checkpoint))
    model, meta = load_model(path, device)
    tokenizer = ckpt.load_tokenizer_of(path, meta, tokenizer_path)
    choice = choose_precision(precision, device.type, model.config, tokens=1, backward=False)  # decoding: one token at a time
    print(choice.reason + (f"\nwarning: {choice.warning}" if choice.warning else ""), file=sys.stderr)
    model = model.to(compute_dtype(choice.precision))
    if tokenizer.vocab_size > model.config.vocab_size:
        raise PajamaError(f"{tokenizer.path} has {tokenizer.vocab_size} tokens, more than the model's vocabulary of {model.config.vocab_size}: not this model's tokenizer")
    prompt_ids = tokenizer.encode(prompt, bos=True, eos=False)
    out: list[int] = []
    shown = ""
    base = tokenizer.decode(prompt_ids[1:])
    sys.stdout.write(prompt)
    start = time.perf_counter()
    for token in generate_ids(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, tokenizer.eos_id, seed, tokenizer.vocab_size):
        out.append(token)
        # Decode the whole text each time: a character may span several byte-fallback tokens.
        text = tokenizer.decode(prompt_ids[1:] + out)[len(base) :]
        sys.stdout.write(text[len(shown) :])
        sys.stdout.flush()
        shown = text
    elapsed = time.perf_counter() - start
    if len(out) == max_new_tokens:
        stopped = "--max_new_tokens"
    elif len(prompt_ids) + len(out) >= model.config.block_size:
        stopped = f"the model's context of {model.config.block_size} tokens"
    else:
        stopped = "end of text"
    print(f"\n[{len(out)} tokens in {elapsed:.2f} s, {len(out) / max(elapsed, 1e-9):.1f} tokens/s; stopped at {stopped}]", file=sys.stderr)
    return shown
