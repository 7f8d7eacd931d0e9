"""Random states of a checkpoint restored on a machine with fewer GPUs than the saving one."""

import random

import pytest
import torch

from pajama.checkpoint import restorable_cuda_states, rng_state, set_rng_state


def test_fewer_gpus_restore_the_states_they_can_and_say_what_was_dropped():
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]  # saved on 8 GPUs
    kept, note = restorable_cuda_states(states, device_count=2)
    assert [int(s[0]) for s in kept] == [0, 1]
    assert "8 GPUs and 2 are visible" in note and "other 6 are not restored" in note
    kept, note = restorable_cuda_states(states, device_count=8)
    assert len(kept) == 8 and note is None
    kept, note = restorable_cuda_states(states[:2], device_count=4)  # more GPUs now: the first ones get theirs
    assert len(kept) == 2 and note is None
    assert restorable_cuda_states([], device_count=0) == ([], None)


def test_set_rng_state_restores_the_cpu_and_warns_about_gpu_states_it_cannot_place():
    random.seed(1)
    torch.manual_seed(1)
    state = rng_state() | {"cuda": [torch.zeros(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 2)}
    expected = random.random(), torch.rand(3)
    with pytest.warns(UserWarning, match="the other 2 are not restored"):
        set_rng_state(state)
    assert (random.random(), *torch.rand(3).tolist()) == (expected[0], *expected[1].tolist())
