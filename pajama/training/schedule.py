"""The learning rate at each optimizer step, and the run's length in steps.

Budgets may be given in tokens (--max_tokens, --warmup_tokens, --decay_tokens) or as a share of
the run (--decay_fraction); they become optimizer steps of ``batch_size x block_size`` tokens,
rounded up. Three shapes:

* cosine: linear warm-up, cosine decay to min_lr at lr_decay_iters (default: the end), then min_lr;
* wsd (warm-up, stable, decay): linear warm-up, the peak until the last decay share of the run,
  then a linear or 1-sqrt decay that reaches min_lr on the last step. A WSD run can be cooled
  down from any of its checkpoints (--decay_from): the decay then starts at that checkpoint's step;
* constant: linear warm-up, then the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pajama import PajamaError
from pajama.training.config import (
    DEFAULT_DECAY_FRACTION,
    DEFAULT_MAX_ITERS,
    DEFAULT_WARMUP_ITERS,
    TrainConfig,
)


@dataclass(frozen=True)
class Schedule:
    """A run's learning rate, in optimizer steps; ``schedule(step)`` is the rate of the update
    that step makes (steps count from 0)."""

    kind: str  # cosine, wsd or constant
    peak: float  # after warm-up; a cool-down's is the rate its source run had reached
    min_lr: float
    warmup: int  # steps of linear warm-up
    decay_start: int  # the first step below the peak (cosine: the end of warm-up)
    decay_end: int  # min_lr from here on
    decay_shape: str = "cosine"  # cosine, linear or 1-sqrt

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.kind == "constant" or step < self.decay_start:
            return self.peak
        if step >= self.decay_end:
            return self.min_lr
        if self.decay_shape == "cosine":
            ratio = (step - self.decay_start) / max(1, self.decay_end - self.decay_start)
            return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.peak - self.min_lr)
        # WSD: the decay's last step is at min_lr, its first just below the peak.
        ratio = (step + 1 - self.decay_start) / (self.decay_end - self.decay_start)
        remaining = 1 - ratio if self.decay_shape == "linear" else 1 - math.sqrt(ratio)
        return self.min_lr + remaining * (self.peak - self.min_lr)

    def describe(self, tokens_per_step: int) -> str:
        """One line: the shape and where its phases start, in steps and tokens."""

        def at(step: int) -> str:
            return f"step {step:,} ({step * tokens_per_step:,} tokens)"

        warmup = f"warm-up {self.warmup:,} steps ({self.warmup * tokens_per_step:,} tokens)"
        if self.kind == "constant":
            return f"learning rate: {warmup}, then constant {self.peak:g}"
        if self.kind == "cosine":
            return f"learning rate: {warmup}, cosine from {self.peak:g} to {self.min_lr:g} at {at(self.decay_end)}"
        return f"learning rate: {warmup}, stable at {self.peak:g} to {at(self.decay_start)}, {self.decay_shape} decay to {self.min_lr:g} at {at(self.decay_end)}"


def steps_of(tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps that train on at least ``tokens`` tokens."""
    return math.ceil(tokens / tokens_per_step)


def plan_schedule(config: TrainConfig, tokens_per_step: int, cooldown: tuple[int, float] | None = None) -> tuple[int, Schedule]:
    """The run's length in optimizer steps and its learning rate schedule. ``cooldown``: (step,
    learning rate) of the --decay_from checkpoint, from which the rate decays to min_lr over
    --decay_tokens, the whole of this run."""
    if cooldown is not None:
        start, rate = cooldown
        end = start + steps_of(config.decay_tokens, tokens_per_step)
        return end, Schedule("wsd", rate, config.min_lr, 0, start, end, config.decay_shape)
    if config.max_tokens is not None:
        max_iters = steps_of(config.max_tokens, tokens_per_step)
    else:
        max_iters = config.max_iters if config.max_iters is not None else DEFAULT_MAX_ITERS
    if config.warmup_tokens is not None:
        warmup = steps_of(config.warmup_tokens, tokens_per_step)
    else:
        warmup = config.warmup_iters if config.warmup_iters is not None else DEFAULT_WARMUP_ITERS
    if not config.decay_lr or config.lr_schedule == "constant":
        return max_iters, Schedule("constant", config.learning_rate, config.min_lr, warmup if config.decay_lr else 0, max_iters, max_iters)
    if config.lr_schedule == "cosine":
        return max_iters, Schedule("cosine", config.learning_rate, config.min_lr, warmup, warmup, config.lr_decay_iters or max_iters)
    if config.decay_tokens is not None:
        decay = steps_of(config.decay_tokens, tokens_per_step)
    else:
        decay = math.ceil(max_iters * (config.decay_fraction if config.decay_fraction is not None else DEFAULT_DECAY_FRACTION))
    if warmup + decay > max_iters:
        raise PajamaError(
            f"--lr_schedule wsd: warm-up ({warmup:,} steps) and decay ({decay:,} steps) are longer than the run ({max_iters:,} steps "
            f"of {tokens_per_step:,} tokens); shorten them or lengthen the run"
        )
    return max_iters, Schedule("wsd", config.learning_rate, config.min_lr, warmup, max_iters - decay, max_iters, config.decay_shape)
