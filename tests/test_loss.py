"""The chunked output projection + cross-entropy: the same loss and gradients as projecting to
the full logits, in fp32 and under bf16 autocast, tied and untied, and under two-process FSDP2."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pajama import PajamaError
from pajama.loss import IGNORE_INDEX, linear_cross_entropy
from pajama.model import LLaMA
from pajama.model_config import ModelConfig


def tiny(**changes) -> ModelConfig:
    return ModelConfig("t", n_layer=2, n_head=4, n_embd=32, vocab_size=211, block_size=64, n_kv_head=2).replace(**changes)


def full_logits_loss(hidden, weight, targets, reduction="mean"):
    """Today's path: all the logits, cast to fp32, cross-entropy."""
    loss = F.cross_entropy(F.linear(hidden, weight).flatten(0, 1).float(), targets.flatten(), reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def batch(config: ModelConfig, rows: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, (rows, config.block_size + 1), generator=generator)
    targets = tokens[:, 1:].clone()
    targets[0, :5] = IGNORE_INDEX  # padding, or a context not scored
    return tokens[:, :-1], targets


def gradients(params: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of ``loss`` with respect to ``params`` (as the optimizer holds them: FSDP's
    shards, whose gradients are those reduced across processes)."""
    for p in params.values():
        p.grad = None
    loss.backward()
    return {name: p.grad.clone() for name, p in params.items()}


@pytest.mark.parametrize("tie", [False, True])
def test_model_loss_and_gradients_match_the_full_logits_in_fp32(tie):
    torch.manual_seed(0)
    model = LLaMA(tiny(tie_embeddings=tie))
    model.init_weights()
    idx, targets = batch(model.config)
    chunked = model(idx, targets=targets)
    expected = F.cross_entropy(model(idx).flatten(0, 1).float(), targets.flatten())
    assert chunked.dtype == torch.float32 and relative(chunked, expected) < 1e-6
    params = dict(model.named_parameters())
    new, old = gradients(params, chunked), gradients(params, expected)
    assert new.keys() == old.keys() and ("lm_head.weight" in new) != tie
    for name in new:
        assert relative(new[name], old[name]) < 1e-6, name


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_ignore_index_and_chunks_that_do_not_divide_the_tokens(reduction):
    torch.manual_seed(0)
    hidden = torch.randn(2, 37, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (2, 37))
    targets[1, 3:20] = IGNORE_INDEX
    upstream = torch.randn(2, 37) if reduction == "none" else torch.tensor(0.7)  # each token's own gradient for "none"
    results = []
    for loss_fn in (lambda: linear_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_tokens=10), lambda: full_logits_loss(hidden, weight, targets, reduction)):
        hidden.grad = weight.grad = None
        loss = loss_fn()
        (loss * upstream).sum().backward()
        results.append((loss.detach(), hidden.grad, weight.grad))
    (loss, grad_hidden, grad_weight), (loss_ref, grad_hidden_ref, grad_weight_ref) = results
    assert loss.shape == loss_ref.shape
    assert relative(loss, loss_ref) < 1e-6 and relative(grad_hidden, grad_hidden_ref) < 1e-6 and relative(grad_weight, grad_weight_ref) < 1e-6
    assert not grad_hidden[1, 3:20].any()  # ignored positions: no gradient
    if reduction == "none":
        assert not loss[1, 3:20].any()
    with torch.no_grad():  # evaluation: no gradient kept, the same numbers
        assert relative(linear_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_tokens=10), loss_ref) < 1e-6


@pytest.mark.parametrize("tie", [False, True])
def test_bf16_autocast_is_as_close_to_fp64_as_the_full_logits(tie):
    """Under autocast the projection runs in bf16 and the log-softmax in fp32, as on today's
    path: against an fp64 reference the chunked loss and gradients are no further off."""
    torch.manual_seed(0)
    model = LLaMA(tiny(tie_embeddings=tie, n_embd=64, vocab_size=2000))
    model.init_weights()
    idx, targets = batch(model.config, rows=4)
    params = dict(model.named_parameters())
    exact = gradients(params, F.cross_entropy(model.double()(idx).flatten(0, 1), targets.flatten()))
    exact_loss = F.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
    model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = model(idx, targets=targets)
        today = F.cross_entropy(model(idx).flatten(0, 1).float(), targets.flatten())
    assert chunked.dtype == torch.float32
    new, old = gradients(params, chunked), gradients(params, today)
    assert relative(chunked, exact_loss) <= 1.1 * relative(today, exact_loss) + 1e-6
    for name in ("lm_head.weight" if not tie else "tok_embeddings.weight", "norm.weight", "layers.1.mlp.down.weight"):
        assert new[name].dtype == torch.float32
        assert relative(new[name], exact[name]) <= 1.1 * relative(old[name], exact[name]), name


def test_no_tensor_of_logits_size_is_kept_for_backward():
    """What autograd keeps of the chunked loss is at most weight-sized or hidden-sized, never
    tokens x vocabulary as on today's path."""
    torch.manual_seed(0)
    tokens, d, vocab = 4096, 8, 5000
    hidden = torch.randn(1, tokens, d, requires_grad=True)
    weight = torch.randn(vocab, d, requires_grad=True)
    targets = torch.randint(0, vocab, (1, tokens))

    def largest_saved(loss_fn) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = loss_fn(hidden, weight, targets)
        loss.backward()
        return max(sizes)

    assert largest_saved(full_logits_loss) >= tokens * vocab
    assert largest_saved(lambda *args: linear_cross_entropy(*args, chunk_tokens=256)) <= max(vocab, tokens) * d


def test_logits_at_positions_are_those_of_the_full_logits():
    torch.manual_seed(0)
    model = LLaMA(tiny())
    model.init_weights()
    idx, _ = batch(model.config, rows=2)
    positions = torch.tensor([[3, 4, 63], [0, 0, 10]])
    with torch.no_grad():
        full = model(idx)
        picked = model(idx, positions=positions)
    assert picked.shape == (2, 3, model.config.vocab_size)
    assert torch.allclose(picked, full.gather(1, positions[..., None].expand(-1, -1, full.size(-1))), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    hidden, weight, targets = torch.randn(2, 5, 8), torch.randn(30, 8), torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(PajamaError, match="reduction must be one of mean, sum, none"):
        linear_cross_entropy(hidden, weight, targets, reduction="avg")
    with pytest.raises(PajamaError, match="chunk_tokens must be >= 1"):
        linear_cross_entropy(hidden, weight, targets, chunk_tokens=0)
    with pytest.raises(PajamaError, match=r"hidden states \(2, 5, 8\), output weight \(30, 7\) and targets \(2, 5\) do not fit"):
        linear_cross_entropy(hidden, torch.randn(30, 7), targets)
    with pytest.raises(PajamaError, match="do not fit"):
        linear_cross_entropy(hidden, weight, targets[:, :4])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, port: int) -> None:
    """On each of two gloo processes: for tied and untied models sharded as training shards
    them, in fp32 and with bf16 gathering under autocast, the chunked loss through the root's
    forward gives the gradients of the full logits (each rank on its own half of the batch)."""
    from torch.distributed.device_mesh import init_device_mesh

    from pajama.training.launch import shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("data_parallel",))
        for tie in (False, True):
            for gather_dtype in (None, torch.bfloat16):
                config = tiny(tie_embeddings=tie)
                model = LLaMA(config)
                model.init_weights()
                shard_model(model, mesh, gather_dtype)
                shards = dict(model.named_parameters())
                idx, targets = batch(config, rows=4, seed=1)
                idx, targets = idx[2 * rank : 2 * rank + 2], targets[2 * rank : 2 * rank + 2]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=gather_dtype is not None):
                    chunked = model(idx, targets=targets)
                new = gradients(shards, chunked)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=gather_dtype is not None):
                    today = F.cross_entropy(model(idx).flatten(0, 1).float(), targets.flatten())
                old = gradients(shards, today)
                tolerance = 1e-6 if gather_dtype is None else 2e-2
                assert relative(chunked.detach(), today.detach()) < tolerance
                for name in new:
                    assert new[name].placements == old[name].placements
                    assert relative(new[name].full_tensor(), old[name].full_tensor()) < tolerance, (tie, gather_dtype, name)
    finally:
        dist.destroy_process_group()


def test_two_process_fsdp2_gathers_the_output_weight_and_reduces_its_gradient():
    mp.spawn(_fsdp_worker, args=(_free_port(),), nprocs=2, join=True)
