"""The memory plan from the traced step: the largest micro-batch that fits, and auto's choice of
micro-batch and recompute."""

import pytest

from pajama import PajamaError
from pajama.model_config import preset
from pajama.training.plan import choose, largest_micro_batch
from pajama.training.trace import trace_step

CONFIG = preset("tiny").replace(vocab_size=512, block_size=64)


def _trace(micro: int, mode: str = "none"):
    return trace_step(CONFIG, 1, micro, 64, "32-true", "single", mode, accumulation=2, device="cpu")  # as plans trace runs that accumulate


def test_the_largest_micro_batch_that_fits_is_traced_not_guessed():
    one, four, five = _trace(1), _trace(4), _trace(5)
    budget = (four.peak_bytes["total"] + five.peak_bytes["total"]) / 2
    kwargs = dict(precision="32-true", strategy="single", device="cpu")
    assert choose(CONFIG, 1, "auto", "none", budget, limit=64, **kwargs).micro_batch_size == 4
    assert choose(CONFIG, 1, "auto", "none", budget, limit=3, **kwargs).micro_batch_size == 3
    assert largest_micro_batch(five, budget, limit=64) == 4  # linear from a trace where activations dominate
    with pytest.raises(PajamaError, match="does not fit"):
        choose(CONFIG, 1, "auto", "none", one.peak_bytes["total"] / 2, limit=64, **kwargs)


def test_auto_prefers_the_larger_micro_batch_then_the_least_recompute():
    budget = _trace(4).peak_bytes["total"] * 1.01  # without recompute, 4 sequences fit
    kwargs = dict(precision="32-true", strategy="single", device="cpu")
    # Micro-batches capped at 4 (of 8 per step): every mode fits 4, and the one without recompute is fastest.
    same = choose(CONFIG, 1, "auto", "auto", budget, limit=4, **kwargs)
    assert (same.micro_batch_size, same.activation_checkpointing) == (4, "none")
    # Uncapped: recompute fits larger micro-batches; a micro-batch of 4 x 64 tokens is far from
    # using a device, so the larger one wins despite the recompute.
    larger = choose(CONFIG, 1, "auto", "auto", budget, limit=1024, **kwargs)
    assert larger.micro_batch_size > 4 and larger.activation_checkpointing != "none"
    # A micro-batch given: only the recompute mode is chosen.
    given = choose(CONFIG, 1, 2, "auto", budget, limit=1024, **kwargs)
    assert (given.micro_batch_size, given.activation_checkpointing) == (2, "none")


def test_a_plan_that_does_not_fit_says_what_would():
    budget = _trace(2, "full").peak_bytes["total"] * 1.01
    with pytest.raises(PajamaError, match=r"does not fit: micro-batch 8 .*what fits: .*--activation_checkpointing full --micro_batch_size 2"):
        choose(CONFIG, 1, 8, "none", budget, limit=64, precision="32-true", strategy="single", device="cpu")


def test_the_trace_runs_the_attention_the_run_trains_with():
    # --document_mask: an explicit mask, which on CUDA takes a kernel that wants key/value heads
    # expanded; both are held for backward, and the trace (so auto) counts them.
    gqa = CONFIG.replace(n_head=4, n_kv_head=1)
    plain, masked = (trace_step(gqa, 1, 2, 64, "bf16-mixed", "single", "none", device="cuda", document_mask=m).peak_bytes["activations"] for m in (False, True))
    assert masked > plain
