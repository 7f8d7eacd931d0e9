"""The global batch split into devices, micro-batches and accumulation steps (lit-llama's arithmetic)."""

import pytest

from pajama import PajamaError
from pajama.training.batch import fit_batch, split_batch


def test_split_batch_rounds_down_twice_as_lit_llama_does():
    # lit-llama: process_batch_size = 125 // 4 = 31; gradient_accumulation_iters = 31 // 5 = 6.
    used, accum, note = split_batch(125, 5, 4)
    assert (used, accum) == (4 * 6 * 5, 6) and note.startswith("global batch 125 -> 120 sequences")
    assert split_batch(128, 8, 4) == (128, 4, None)
    assert split_batch(125, 5, 1) == (125, 25, None)


def test_split_batch_refuses_a_change_past_five_percent_with_what_would_work():
    with pytest.raises(PajamaError, match=r"would become 96 sequences.*try --batch_size 96 or 128"):
        split_batch(125, 8, 4)
    with pytest.raises(PajamaError, match=r"would become 0 sequences.*--micro_batch_size 3"):
        split_batch(6, 4, 2)  # 3 per device: micro-batches of 3 divide it


def test_fit_batch_keeps_the_global_batch_when_it_divides():
    assert fit_batch(16, 1, 16) == (16, 16, None)
    assert fit_batch(16, 1, 11) == (8, 16, None)  # accumulation 2
    assert fit_batch(120, 4, 7) == (6, 120, None)  # 30 per device: 6 x 5
    assert fit_batch(16, 1, 100) == (16, 16, None)  # never more than the batch itself


def test_fit_batch_never_grows_the_global_batch_and_keeps_it_within_five_percent():
    micro, batch, note = fit_batch(125, 4, 64)  # 31 per device
    assert (micro, batch) == (31, 124) and "125 -> 124" in note
    micro, batch, note = fit_batch(31, 1, 16)  # prime: only micro-batches of 1 divide it exactly
    assert (micro, batch) == (15, 30) and "31 -> 30" in note
    micro, batch, note = fit_batch(125, 4, 8)  # does not split over 4 devices
    assert (micro, batch) == (6, 120) and "125 -> 120" in note
    for asked, world, largest in [(125, 4, 64), (31, 1, 16), (1000, 8, 48), (96, 3, 7), (2048, 16, 5)]:
        micro, batch, _ = fit_batch(asked, world, largest)
        assert micro <= largest and batch <= asked and (asked - batch) / asked <= 0.05 and batch % (micro * world) == 0


def test_fit_batch_refuses_fewer_sequences_than_devices():
    with pytest.raises(PajamaError, match="smaller than the 8 devices"):
        fit_batch(4, 8, 2)
