"""The traced step (pajama.training.trace) against the same step run for real: peak memory as the
CPU allocator counts it (profiler memory events), on one process and on two (FSDP over gloo)."""

import functools
import gc
import itertools
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.profiler import ProfilerActivity, profile

from pajama import PajamaError
from pajama.model_config import ModelConfig
from pajama.training.trace import (
    GPUS,
    build,
    estimate_step_time,
    forward_backward,
    optimizer_step,
    trace_step,
)

# Vocabulary unlike every width, so that only the loss's tensors are a vocabulary wide.
SHAPES = {
    "mha": ModelConfig("mha", n_layer=2, n_head=4, n_embd=128, vocab_size=1000, block_size=128),
    "gqa": ModelConfig("gqa", n_layer=2, n_head=4, n_embd=128, n_kv_head=2, vocab_size=1000, block_size=128),
    "tied": ModelConfig("tied", n_layer=2, n_head=4, n_embd=128, vocab_size=1000, block_size=128, tie_embeddings=True),
}
MICRO = 4


def measured_peak(run) -> int:
    """Peak bytes the CPU allocator holds while ``run()`` runs, from the profiler's record of
    every allocation and release. Garbage of earlier steps is collected first: freed inside the
    window, it would count against this step."""
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    return max(itertools.accumulate(e.nbytes() for e in events))


def real_step(config: ModelConfig, precision: str, recompute: str, accumulation: int = 1, reduce_every_micro_batch: bool = True, mesh=None) -> None:
    """The step trace_step traces, on real tensors: model, AdamW with its moments, one step."""
    torch.manual_seed(0)
    model, optimizer = build(config, precision, recompute, mesh)
    tokens = torch.randint(0, config.vocab_size, (MICRO, config.block_size + 1))
    for micro in range(accumulation):
        forward_backward(model, tokens, precision, accumulation, sync=micro == accumulation - 1 or reduce_every_micro_batch)
    optimizer_step(model, optimizer)


@pytest.mark.parametrize("recompute", ["none", "full"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_traced_peak_matches_the_measured_one(shape, precision, recompute):
    config = SHAPES[shape]
    traced = trace_step(config, world_size=1, micro_batch_size=MICRO, precision=precision, strategy="single", activation_checkpointing=recompute)
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())  # the step's loss all-reduce
    try:
        measured = measured_peak(lambda: real_step(config, precision, recompute))
    finally:
        dist.destroy_process_group()
    assert traced.peak_bytes["total"] == pytest.approx(measured, rel=0.10)
    assert traced.peak_bytes["optimizer state"] == pytest.approx(8 * config.num_parameters(), rel=1e-3)  # two fp32 moments (and step counts)
    assert traced.peak_bytes["weights"] == pytest.approx(4 * config.num_parameters(), rel=0.01)  # fp32 (and the rotary tables)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Eight blocks: there the optimizer step's clipping, a foreach over every (DTensor) gradient, would
# be the peak if the trace counted the global-shape tensors DTensor's sharding propagation makes.
FSDP_SHAPES = {"gqa": SHAPES["gqa"], "deep": SHAPES["gqa"].replace(name="deep", n_layer=8, n_embd=256)}
FSDP_CASES = [
    ("gqa", "32-true", "none", 1, True), ("gqa", "bf16-mixed", "full", 1, True), ("gqa", "bf16-mixed", "none", 2, False),
    ("gqa", "bf16-mixed", "selective", 2, True), ("deep", "bf16-mixed", "full", 1, True),
]  # fmt: skip
FSDP_REPEATS = 2  # each case measured twice on each rank


def _fsdp_rank(rank: int, port: int, results) -> None:  # noqa
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("data_parallel",))
    for case, _ in itertools.product(FSDP_CASES, range(FSDP_REPEATS)):
        shape, precision, recompute, accumulation, every = case
        results.put((case, rank, measured_peak(functools.partial(real_step, FSDP_SHAPES[shape], precision, recompute, accumulation, every, mesh))))
    dist.destroy_process_group()


def test_traced_fsdp_peak_matches_two_real_processes():
    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    ranks = [context.Process(target=_fsdp_rank, args=(rank, port, results)) for rank in range(2)]
    for p in ranks:
        p.start()
    # The lowest of the ranks' and repeats': gloo runs the collectives in its own thread, and a rank's
    # peak varies from run to run by a block's fp32 gradients or more, as that thread lets go of their
    # buffers sooner or later.
    measured = {}
    for _ in range(2 * FSDP_REPEATS * len(FSDP_CASES)):
        case, _rank, peak = results.get(timeout=300)
        measured[case] = min(measured.get(case, peak), peak)
    for p in ranks:
        p.join(timeout=60)
        assert p.exitcode == 0
    for case in FSDP_CASES:
        shape, precision, recompute, accumulation, every = case
        traced = trace_step(FSDP_SHAPES[shape], 2, MICRO, precision=precision, activation_checkpointing=recompute, accumulation=accumulation, reduce_every_micro_batch=every)
        assert traced.peak_bytes["total"] == pytest.approx(measured[case], rel=0.10), case


def test_flops_are_palms_count_and_recompute_adds_the_blocks_forward():
    config = SHAPES["gqa"]
    d, layers, tokens = config.n_embd, config.n_layer, MICRO * config.block_size
    plain = trace_step(config, 4, MICRO, accumulation=3)
    # PaLM's 6N + 12LdT per token (pajama.model_config), N without the norms' weights (no
    # matmul), and 2LdT more: flash attention's backward computes the scores again.
    per_token = config.flops_per_token(config.block_size) - 6 * (2 * layers + 1) * d + 2 * layers * d * config.block_size
    assert plain.flops == per_token * tokens * 3
    # Full recompute runs each block's forward again, up to the last tensor backward needs: not
    # the MLP's output projection (checkpoint's early stop). Selective recomputes less.
    full = trace_step(config, 4, MICRO, activation_checkpointing="full")
    matmul_weights = config.num_parameters(embeddings=False) - (2 * layers + 1) * d
    recomputed = 2 * (matmul_weights - layers * d * config.intermediate_size) + 4 * layers * d * config.block_size
    assert full.flops == (per_token + recomputed) * tokens
    assert plain.flops // 3 < trace_step(config, 4, MICRO, activation_checkpointing="selective").flops < full.flops


def test_fsdp_collectives_per_device():
    config = SHAPES["mha"]
    world = 4
    n = config.num_parameters()
    each = trace_step(config, world, MICRO, accumulation=3, reduce_every_micro_batch=True)
    once = trace_step(config, world, MICRO, accumulation=3, reduce_every_micro_batch=False)
    gather, scatter = each.collectives["all_gather"], each.collectives["reduce_scatter"]
    # Every block gathered for forward and again for backward, the root once; in bf16.
    assert gather.calls == 3 * (2 * config.n_layer + 1)
    blocks = config.num_parameters(embeddings=False) - config.n_embd
    assert gather.tensor_bytes == 3 * 2 * (2 * blocks + (n - blocks))
    assert gather.bytes_per_device == pytest.approx(gather.tensor_bytes * (world - 1) / world)
    # Gradients reduced in fp32, after every micro-batch or only the last.
    assert scatter.tensor_bytes == 3 * 4 * n and scatter.calls == 3 * (config.n_layer + 1)
    assert once.collectives["reduce_scatter"].tensor_bytes == 4 * n
    # Without reduce-scatter, the full fp32 gradients stay on every device.
    assert once.peak_bytes["gradients"] >= 4 * n > 2 * each.peak_bytes["gradients"]


def test_ddp_holds_gradient_buckets_and_all_reduces_them():
    config = SHAPES["mha"]
    single = trace_step(config, 1, MICRO, strategy="single")
    ddp = trace_step(config, 8, MICRO, strategy="ddp", accumulation=2)
    n = config.num_parameters()
    assert ddp.peak_bytes["gathered weights and buffers"] == 4 * n
    assert ddp.collectives["all_reduce"].bytes_per_device >= 4 * n * 2 * 7 / 8
    assert ddp.peak_bytes["weights"] == single.peak_bytes["weights"]


def test_cuda_fp32_attention_expands_shared_heads():
    config = SHAPES["gqa"]
    cpu = trace_step(config, 1, MICRO, precision="32-true", strategy="single")
    cuda = trace_step(config, 1, MICRO, precision="32-true", strategy="single", device="cuda")
    # The efficient kernel keeps the key and value expanded to every query head, per layer.
    expanded = 2 * MICRO * (config.n_head - config.n_kv_head) * config.block_size * config.head_size * 4 * config.n_layer
    assert cuda.peak_bytes["activations"] - cpu.peak_bytes["activations"] == expanded
    bf16 = [trace_step(config, 1, MICRO, strategy="single", device=d).peak_bytes["activations"] for d in ("cpu", "cuda")]
    assert bf16[0] == bf16[1]  # flash takes shared heads on both


def test_step_time_estimate():
    trace = trace_step(SHAPES["mha"], 16, MICRO)
    estimate = estimate_step_time(trace, "a100-80g", mfu=0.5, devices_per_node=8)
    assert estimate.compute_seconds == pytest.approx(trace.flops / (312e12 * 0.5))
    assert estimate.link == "InfiniBand" and estimate.communication_seconds == pytest.approx(trace.communication_bytes / 25e9)
    assert estimate.step_seconds == max(estimate.compute_seconds, estimate.communication_seconds) and estimate.fits
    one_node = estimate_step_time(trace, "h100", devices_per_node=16)
    assert one_node.link == "NVLink" and one_node.communication_seconds == pytest.approx(trace.communication_bytes / 450e9)
    assert set(GPUS) == {"h100", "a100-40g", "a100-80g", "h200"}
    with pytest.raises(PajamaError, match="unknown GPU 'v100'"):
        estimate_step_time(trace, "v100")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"world_size": 0}, "world_size must be a positive integer"),
        ({"strategy": "zero"}, "strategy must be one of single, ddp, fsdp"),
        ({"strategy": "single", "world_size": 2}, "strategy single runs on one device"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"activation_checkpointing": "some"}, "activation_checkpointing must be one of none, selective, full"),
        ({"device": "mps"}, "device must be one of cpu, cuda"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(PajamaError, match=message):
        trace_step(SHAPES["mha"], **{"world_size": 2, "micro_batch_size": 1, **kwargs})


def test_refuses_to_replace_a_process_group():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        with pytest.raises(PajamaError, match="sets up its own"):
            trace_step(SHAPES["mha"], 2, 1)
    finally:
        dist.destroy_process_group()
