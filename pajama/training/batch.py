"""The global batch, split into devices, micro-batches and accumulation steps.

``batch_size`` is global, as in lit-llama: each device takes ``batch_size // world`` sequences
in ``(batch_size // world) // micro_batch_size`` micro-batches, rounding down twice (the howto's
125 on 4 devices in micro-batches of 5: 6 accumulation steps, 120 sequences per optimizer step).
pajama rounds the same way and says so, but refuses to change the batch by more than
``BATCH_TOLERANCE``: the learning rate and warm-up were chosen for the batch asked for.
"""

from __future__ import annotations

from pajama import PajamaError

BATCH_TOLERANCE = 0.05


def split_batch(batch_size: int, micro_batch_size: int, world_size: int) -> tuple[int, int, str | None]:
    """(global batch used, accumulation steps, note): ``batch_size`` rounded down to whole
    micro-batches on every device; the note says so when it rounds."""
    accum = batch_size // world_size // micro_batch_size
    used = accum * micro_batch_size * world_size
    if used == batch_size:
        return used, accum, None
    if accum == 0 or (batch_size - used) / batch_size > BATCH_TOLERANCE:
        unit = micro_batch_size * world_size
        batches = sorted({max(1, batch_size // unit) * unit, (batch_size // unit + 1) * unit})
        per_device = batch_size // world_size
        micros = [m for m in range(min(micro_batch_size, per_device), 0, -1) if batch_size % world_size == 0 and per_device % m == 0][:1]
        advice = f"try --batch_size {' or '.join(map(str, batches))}" + (f", or --micro_batch_size {micros[0]}" if micros else "")
        raise PajamaError(
            f"--batch_size {batch_size} does not split into micro-batches of {micro_batch_size} on {world_size} device(s): "
            f"it would become {used} sequences, more than {BATCH_TOLERANCE:.0%} off; {advice}"
        )
    return used, accum, f"global batch {batch_size} -> {used} sequences: {world_size} device(s) x {micro_batch_size} sequences x {accum} accumulation (rounded down, as lit-llama does)"


def fit_batch(batch_size: int, world_size: int, largest: int) -> tuple[int, int, str | None]:
    """(micro-batch, global batch, note) for ``--micro_batch_size auto``, ``largest`` being the
    largest micro-batch that fits: a micro-batch that divides the global batch exactly if one of
    at least half of ``largest`` does (a few more accumulation steps cost little); otherwise the
    largest one whose rounding keeps the global batch within ``BATCH_TOLERANCE``. Never a larger
    global batch than asked for."""
    largest = max(1, largest)
    per_device = batch_size // world_size
    if per_device == 0:
        raise PajamaError(f"--batch_size {batch_size} is smaller than the {world_size} devices: each needs at least one sequence")
    if batch_size % world_size == 0:
        exact = max(m for m in range(1, min(largest, per_device) + 1) if per_device % m == 0)
        if 2 * exact >= min(largest, per_device):
            return exact, batch_size, None
    for micro in range(min(largest, per_device), 0, -1):
        used = per_device // micro * micro * world_size
        if (batch_size - used) / batch_size <= BATCH_TOLERANCE:
            used, _, note = split_batch(batch_size, micro, world_size)
            return micro, used, note
    raise PajamaError(f"--batch_size {batch_size} cannot be split over {world_size} devices within {BATCH_TOLERANCE:.0%}: use a multiple of {world_size}")
