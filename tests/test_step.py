"""The optimizer step's guard against non-finite losses, decided without reading the device."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pajama.training.step import step_if_finite


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value by the host (``bool``, ``float``, ``.item()``): on a
    GPU each one waits for every kernel queued before it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _model_and_optimizer(fused: bool):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    model(torch.randn(4, 8)).square().mean().backward()
    return model, optimizer


@pytest.mark.parametrize("finite", [True, False])
def test_a_fused_optimizer_skips_a_bad_step_on_the_device_without_host_reads(finite):
    model, optimizer = _model_and_optimizer(fused=True)
    before = model.weight.detach().clone()
    with HostReads() as reads:
        step_if_finite(optimizer, torch.tensor(finite))
    assert reads.count == 0
    assert not torch.equal(model.weight, before) if finite else torch.equal(model.weight, before)
    # A skipped step does not count as one: Adam's bias correction stays where it was.
    assert float(optimizer.state[model.weight]["step"]) == (1.0 if finite else 0.0)
    assert not hasattr(optimizer, "found_inf")


def test_an_unfused_optimizer_decides_on_the_host_and_skips_the_same():
    model, optimizer = _model_and_optimizer(fused=False)
    before = model.weight.detach().clone()
    step_if_finite(optimizer, torch.tensor(False))
    assert torch.equal(model.weight, before) and not optimizer.state
    step_if_finite(optimizer, torch.tensor(True))
    fused_model, fused = _model_and_optimizer(fused=True)
    step_if_finite(fused, torch.tensor(True))
    torch.testing.assert_close(model.weight, fused_model.weight)  # the same update either way
