"""Rehearse one optimizer step of a run without its hardware: the real model, sharding and step,
traced with fake tensors over a fake process group of the run's world size.

Nothing is allocated and nothing is sent: PyTorch's ``FakeTensorMode`` gives every tensor a shape,
dtype and device but no storage, and the "fake" process-group backend answers every collective at
once. Under them the step runs as training runs it (model built on meta, FSDP2 ``fully_shard`` per
block and root with the run's MixedPrecisionPolicy, autocast, activation recompute, gradient
accumulation, the chunked loss, backward, clipping, AdamW), and three observers watch it:

* memory: PyTorch's ``FSDPMemTracker`` / ``MemTracker``, which follow every storage from creation
  to release; the peak is reported by category, per device. Traced on a CPU it matches the
  allocator's own count of the same real step (tests/test_trace.py). DTensor's sharding
  propagation runs unseen by it: under the trace it makes its global-shape fake tensors in the
  trace's own fake mode, which the tracker would count (a foreach over every gradient, as
  clipping's, held the whole model in fp32 on every device).
* FLOPs: ``torch.utils.flop_counter``'s formulas on every operator, per device per optimizer step:
  matmuls and attention over all T x T pairs, causal or not, as PaLM's 6N + 12LdT counts them,
  plus 2LdT per token for flash attention's backward, which computes the scores again.
* communication: the collectives FSDP (or DDP) issues, with the bytes each moves per device in the
  ring algorithm NCCL uses for large messages: (W-1)/W of the tensor for an all-gather or a
  reduce-scatter, twice that for an all-reduce.

A CPU-only torch cannot trace CUDA tensors (autocast("cuda") switches itself off and fake CUDA
tensors fail on the first op), so ``device="cuda"`` traces on the CPU with what differs on a GPU
applied explicitly: fused AdamW (no temporaries), and attention's choice of key/value heads as on
CUDA (``pajama.model.shares_kv_heads``: fp32 expands shared heads there). Both CPU and CUDA run
flash-type SDPA kernels that keep the output and the (B, H, T) log-sum-exp for backward, never
T x T scores, so the saved activations are the same. Not modelled: the CUDA context, the caching
allocator's fragmentation, NCCL's own buffers, and the streams that let FSDP prefetch the next
block's all-gather (the trace runs each in turn, as the CPU does; the prefetch holds one more
gathered block).

DDP cannot run under fake tensors (its C++ reducer reads the data), so ``strategy="ddp"`` is the
single-device trace plus DDP's gradient buckets (a second copy of the gradients, as Lightning
creates DDP with ``gradient_as_bucket_view=False``) and their all-reduce on the last micro-batch.
``16-mixed`` is traced as fp16 autocast without the loss scaler (a few scalars; its overflow
check reads a value, which fake tensors have not).

These are private PyTorch APIs (torch 2.13): a torch without them gets a clear error.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from pajama import PajamaError, memory
from pajama import model as model_module
from pajama.model import RECOMPUTE, LLaMA
from pajama.model_config import ModelConfig
from pajama.precision import compute_dtype
from pajama.training.launch import shard_model
from pajama.training.step import sequence_loss

STRATEGIES = ("single", "ddp", "fsdp")
DEVICES = ("cpu", "cuda")
# Per-device memory at the step's peak, by what holds it.
CATEGORIES = (
    "weights",  # the parameters this device keeps (its FSDP shard; fp32 master weights under mixed precision) and buffers
    "gradients",  # their gradients; accumulated full-size ones under FSDP without reduce-scatter per micro-batch
    "optimizer state",  # AdamW's two moments
    "activations",  # saved for backward (with recompute: each block's input, and the block being recomputed); autocast's weight casts
    "backward temporaries",  # gradients of activations and other short-lived backward tensors
    "logits and loss",  # tensors a vocabulary wide: one chunk's logits and their gradient (pajama.loss)
    "gathered weights and buffers",  # FSDP's all-gathered blocks and reduce-scatter buffers; DDP's gradient buckets
)
_CATEGORY_OF = {  # the trackers' reference types (by value) -> CATEGORIES
    "Sharded Param": "weights", "Parameter": "weights", "Buffer": "weights",
    "Sharded Grad": "gradients", "Unsharded Grad": "gradients", "Gradient": "gradients",
    "OptState": "optimizer state", "Optstate": "optimizer state",
    "Activation": "activations", "Inputs": "activations", "Other": "activations",
    "Temp": "backward temporaries",
    "Logits and loss": "logits and loss",
    "Unsharded Param": "gathered weights and buffers", "All Gather": "gathered weights and buffers",
    "Reduce Scatter": "gathered weights and buffers",
}  # fmt: skip
# Bytes each device sends per byte of the collective's full tensor, in a ring of W devices.
_RING_SHARE = {"all_gather": lambda w: (w - 1) / w, "reduce_scatter": lambda w: (w - 1) / w, "all_reduce": lambda w: 2 * (w - 1) / w, "broadcast": lambda w: 1.0}


class TraceUnavailable(PajamaError):
    """This torch lacks a tool the trace needs (they are private APIs, newer than torch 2.4)."""


@dataclass
class Collective:
    """One kind of collective over a step: how often, how large, and what one device sends."""

    calls: int = 0
    tensor_bytes: int = 0  # summed over calls: the full (gathered, or to be reduced) tensor
    bytes_per_device: float = 0.0  # summed over calls: what each device sends in a ring


@dataclass
class StepTrace:
    """One optimizer step of a run, traced (see the module's docstring for what is modelled)."""

    model: str
    world_size: int
    micro_batch_size: int
    seq_len: int
    precision: str
    strategy: str
    activation_checkpointing: str
    accumulation: int  # micro-batches per optimizer step on each device
    reduce_every_micro_batch: bool
    device: str
    peak_bytes: dict[str, int]  # per device, by CATEGORIES, and "total"
    flops: int  # per device per optimizer step
    collectives: dict[str, Collective]  # all_gather, reduce_scatter, all_reduce, broadcast
    seconds: float  # how long the trace took

    @property
    def tokens_per_device(self) -> int:
        return self.micro_batch_size * self.seq_len * self.accumulation

    @property
    def communication_bytes(self) -> float:
        """What one device sends per optimizer step, all collectives together."""
        return sum(c.bytes_per_device for c in self.collectives.values())


def trace_step(
    config: ModelConfig,
    world_size: int,
    micro_batch_size: int,
    seq_len: int | None = None,
    precision: str = "bf16-mixed",
    strategy: str = "fsdp",
    activation_checkpointing: str = "none",
    accumulation: int = 1,
    reduce_every_micro_batch: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    document_mask: bool = False,
) -> StepTrace:
    """Trace one optimizer step of ``config`` on ``world_size`` data-parallel devices, each taking
    ``accumulation`` micro-batches of ``micro_batch_size`` sequences of ``seq_len`` tokens
    (default: the model's context). ``reduce_every_micro_batch`` (FSDP): reduce-scatter the
    gradients after every micro-batch, else keep them full-size and unsharded (fp32) until the
    last. ``log``: told what the trace is doing (a large model takes a minute).
    ``document_mask``: attention through the explicit mask of ``--document_mask`` (on CUDA it
    takes another kernel, with key/value heads expanded, and the mask itself is held).

    Runs in this process with a fake default process group, so none may be set up already. Steady
    state: AdamW's moments exist from the start, as from the second step on. Two micro-batches
    are traced at most: the later ones repeat the second (memory) or the first (FLOPs, bytes)."""
    seq_len = seq_len or config.block_size
    _check(world_size, micro_batch_size, seq_len, precision, strategy, activation_checkpointing, accumulation, device)
    if dist.is_initialized():
        raise PajamaError("a traced step sets up its own (fake) process group: trace before any other is set up, or in a separate process")
    say = log or (lambda message: None)
    fsdp = strategy == "fsdp" and world_size > 1
    started = time.perf_counter()
    config = config.replace(block_size=seq_len)
    # The fake group and its mesh are made outside FakeTensorMode (making a mesh runs a collective on real data).
    excepthook = sys.excepthook  # init_process_group prefixes tracebacks with the rank, until the interpreter ends
    _init_fake_process_group(world_size)
    try:
        mesh = _fake_mesh(world_size) if fsdp else None
        with _fake_tensors(), _attention_as_on(device), _sharding_propagation_unobserved():
            say(f"building {config.name} on {world_size} fake device(s)")
            model, optimizer = build(config, precision, activation_checkpointing, mesh, fused_adamw=device == "cuda" and precision != "16-mixed")
            tokens = torch.randint(0, config.vocab_size, (micro_batch_size, seq_len + 1))
            tracker = _memory_tracker(model, optimizer, tokens, fsdp, vocab_size=config.vocab_size)
            counter = _StepCounter(world_size)
            traced = min(accumulation, 2)
            with tracker, counter:
                for micro in range(traced):
                    say(f"tracing micro-batch {micro + 1} of {traced}")
                    counter.start_phase()
                    tracker.reset_mod_stats()  # the trackers follow one forward per module; the peak stays
                    forward_backward(model, tokens, precision, accumulation, sync=micro == traced - 1 or reduce_every_micro_batch, document_mask=document_mask)
                    if fsdp:
                        _tag_accumulated_gradients(model, tracker)
                say("tracing the optimizer step")
                counter.start_phase()
                optimizer_step(model, optimizer)
    finally:
        dist.destroy_process_group()
        sys.excepthook = excepthook
    peak = _peak_by_category(tracker)
    flops, collectives = counter.totals(accumulation)
    if strategy == "ddp" and world_size > 1:
        _add_ddp_buckets(peak, collectives, model, world_size)
    peak["total"] = sum(peak[c] for c in CATEGORIES)
    return StepTrace(
        model=config.name, world_size=world_size, micro_batch_size=micro_batch_size, seq_len=seq_len, precision=precision,
        strategy=strategy, activation_checkpointing=activation_checkpointing, accumulation=accumulation,
        reduce_every_micro_batch=reduce_every_micro_batch, device=device, peak_bytes=peak, flops=flops, collectives=collectives,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def _check(world_size, micro_batch_size, seq_len, precision, strategy, activation_checkpointing, accumulation, device) -> None:
    for name, value in (("world_size", world_size), ("micro_batch_size", micro_batch_size), ("seq_len", seq_len), ("accumulation", accumulation)):
        if not isinstance(value, int) or value < 1:
            raise PajamaError(f"trace: {name} must be a positive integer, got {value!r}")
    choices = {"precision": (precision, memory.PRECISIONS), "strategy": (strategy, STRATEGIES), "activation_checkpointing": (activation_checkpointing, RECOMPUTE), "device": (device, DEVICES)}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise PajamaError(f"trace: {name} must be one of {', '.join(allowed)}, got {value!r}")
    if strategy == "single" and world_size > 1:
        raise PajamaError(f"trace: strategy single runs on one device, not {world_size}; use ddp or fsdp")


# -- the step, as training runs it ---------------------------------------------------------------


def _init_fake_process_group(world_size: int) -> None:
    try:
        from torch.testing._internal.distributed.fake_pg import (
            FakeStore,  # importing it registers the "fake" backend
        )
    except ImportError as e:
        raise TraceUnavailable(f"tracing a step needs torch's fake process group (torch.testing._internal.distributed.fake_pg), which torch {torch.__version__} lacks") from e
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())


def _fake_mesh(world_size: int):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (world_size,), mesh_dim_names=("data_parallel",))


def _fake_tensors():
    try:
        from torch._subclasses import FakeTensorMode
    except ImportError as e:
        raise TraceUnavailable(f"tracing a step needs torch's FakeTensorMode, which torch {torch.__version__} lacks") from e
    return FakeTensorMode()


@contextlib.contextmanager
def _attention_as_on(device: str):
    """Attention hands SDPA shared key/value heads as it would on ``device`` (see
    pajama.model.shares_kv_heads: on CUDA fp32 expands them), the trace running on the CPU."""
    original = model_module.shares_kv_heads
    if device != "cpu":
        model_module.shares_kv_heads = lambda _, dtype, masked, flash_capable=True: original(device, dtype, masked, flash_capable)
    try:
        yield
    finally:
        model_module.shares_kv_heads = original


@contextlib.contextmanager
def _sharding_propagation_unobserved():
    """DTensor's sharding propagation runs with the fake tensor mode alone, unseen by the observers.

    It works out an operator's output by running it again on fake tensors of the global (unsharded)
    shapes, in the fake mode it finds active: under the trace, the trace's own, so PyTorch's memory
    tracker takes them for tensors the step allocates (it skips only those of another fake mode, as
    they are in a real run). A foreach operator over every gradient (clipping's scaling) then holds
    all of them at once: the whole model in fp32 on every device, whatever the world size."""
    from torch._guards import detect_fake_mode
    from torch.utils._python_dispatch import _disable_current_modes

    try:
        from torch.distributed.tensor._sharding_prop import ShardingPropagator

        original = ShardingPropagator._propagate_tensor_meta_non_cached
    except (ImportError, AttributeError) as e:
        raise TraceUnavailable(f"tracing a step needs DTensor's ShardingPropagator._propagate_tensor_meta_non_cached, which torch {torch.__version__} lacks") from e

    def propagate_alone(self, op_schema):
        fake_mode = detect_fake_mode()
        with _disable_current_modes(), fake_mode or contextlib.nullcontext():
            return original(self, op_schema)

    ShardingPropagator._propagate_tensor_meta_non_cached = propagate_alone
    try:
        yield
    finally:
        ShardingPropagator._propagate_tensor_meta_non_cached = original


def build(config: ModelConfig, precision: str, recompute: str, mesh=None, fused_adamw: bool = False):
    """The model as a run builds it (under FSDP: on meta, sharded over ``mesh``'s
    "data_parallel" dimension, then given uninitialised storage) and its AdamW, the moments
    already there as from the second step on."""
    # Sharded: built on meta, then each device's shard given (fake) storage; else built in place.
    with torch.device("meta" if mesh is not None else "cpu"), _default_dtype(torch.bfloat16 if precision == "bf16-true" else torch.float32):
        model = LLaMA(config)  # bf16-true: weights, gradients and moments in bf16, made so as Fabric does
    model.activation_checkpointing = recompute
    if mesh is not None:
        shard_model(model, mesh, compute_dtype(precision) if precision in memory.MIXED else None)
        model.to_empty(device="cpu")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, fused=fused_adamw)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.train()
    return model, optimizer


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def forward_backward(model, tokens: torch.Tensor, precision: str, accumulation: int, sync: bool, document_mask: bool = False) -> None:
    """Forward and backward of one micro-batch of ``tokens`` (B, T + 1), as
    pajama.training.step.train_step runs it (Fabric's no_backward_sync being
    set_requires_gradient_sync on every FSDP module; ``sync``: reduce the gradients)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_requires_gradient_sync(sync, recurse=False)
    autocast = torch.autocast("cpu", dtype=compute_dtype(precision)) if precision in memory.MIXED else contextlib.nullcontext()
    with autocast:
        loss = sequence_loss(model, tokens, 0 if document_mask else None)  # documents start at id 0: random tokens hold some
    (loss / accumulation).backward()


def optimizer_step(model, optimizer) -> None:
    """Clip, the loss's all-reduce for the log, update, as train_step does."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    dist.all_reduce(torch.zeros(()))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# -- memory --------------------------------------------------------------------------------------


class _LogitsType(Enum):
    LOGITS = "Logits and loss"


def _memory_tracker(model, optimizer, tokens: torch.Tensor, fsdp: bool, vocab_size: int):
    """PyTorch's tracker (FSDP's when sharded), with vocabulary-wide tensors as their own category."""
    try:
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as e:
        raise TraceUnavailable(f"tracing a step needs torch.distributed._tools (FSDPMemTracker, MemTracker), which torch {torch.__version__} lacks") from e
    base = FSDPMemTracker if fsdp else MemTracker

    class StepMemTracker(base):
        def _track(self, reftype, t: torch.Tensor) -> None:
            # Activations and temporaries a vocabulary wide are the loss's (weights are (vocab, d)).
            if reftype.value in ("Activation", "Temp") and t.dim() > 0 and t.size(-1) == vocab_size:
                reftype = _LogitsType.LOGITS
            super()._track(reftype, t)

        def _update_peak_stats(self, peak_state) -> None:
            # The peak of the whole step only: PyTorch's also keeps every module's, which costs a
            # deep copy per operator and most of a large model's trace time.
            for device, snapshot in self._curr_mem_snap.items():
                if self._peak_mem.get(device, 0) < snapshot["Total"]:
                    self._peak_mem[device] = snapshot["Total"]
                    self._peak_mem_snap[device] = dict(snapshot)

    tracker = StepMemTracker(model, optimizer) if fsdp else StepMemTracker()
    tracker._ref_class = [*tracker._ref_class, _LogitsType.LOGITS]  # before it counts anything
    if fsdp:
        tracker.track_inputs((tokens,))
    else:
        tracker.track_external(model, optimizer, tokens)
    return tracker


def _tag_accumulated_gradients(model, tracker) -> None:
    """Full-size gradients FSDP keeps between micro-batches without reduce-scatter are gradients
    (the tracker sees them made in backward, and would count them as temporaries)."""
    from torch.distributed._tools.fsdp2_mem_tracker import _FSDPRefType
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        group = module._get_fsdp_state()._fsdp_param_group if isinstance(module, FSDPModule) else None
        for param in group.fsdp_params if group else ():
            if param.unsharded_accumulated_grad is not None:
                tracker._update_and_maybe_create_winfos(param.unsharded_accumulated_grad, _FSDPRefType.UNSHARDED_GRAD, update_existing=True)


def _peak_by_category(tracker) -> dict[str, int]:
    peak = dict.fromkeys(CATEGORIES, 0)
    for snapshot in tracker.get_tracker_snapshot("peak").values():  # one device: the CPU
        for reftype, nbytes in snapshot.items():
            if reftype != "Total":
                peak[_CATEGORY_OF[reftype.value]] += nbytes
    return peak


def _add_ddp_buckets(peak: dict[str, int], collectives: dict[str, Collective], model, world_size: int) -> None:
    """DDP's gradient buckets (held from its start) and their all-reduce, once per step."""
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak["gathered weights and buffers"] += grad_bytes
    reduce = collectives.setdefault("all_reduce", Collective())
    reduce.calls += 1
    reduce.tensor_bytes += grad_bytes
    reduce.bytes_per_device += grad_bytes * _RING_SHARE["all_reduce"](world_size)


# -- FLOPs and communication ---------------------------------------------------------------------


def _collective_kind(name: str) -> str | None:
    """all_gather, reduce_scatter, all_reduce or broadcast for a c10d operator's name; else None."""
    name = name.replace("allgather", "all_gather").replace("allreduce", "all_reduce")
    return next((kind for kind in _RING_SHARE if kind in name), None)


def _attention_flops(func, args, out) -> int | None:
    """FLOPs of the CPU flash-attention kernels, which torch's counter does not know: the
    formulas it uses for the CUDA ones, with shared key/value heads counted per query head."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    if func is aten._scaled_dot_product_flash_attention_for_cpu.default:
        q, k = args[0], args[1]
        kv = (*q.shape[:2], *k.shape[2:])
        return sdpa_flop_count(q.shape, kv, kv)
    if func is aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        grad_out, q, k = args[0], args[1], args[2]
        kv = (*q.shape[:2], *k.shape[2:])
        return sdpa_backward_flop_count(grad_out.shape, q.shape, kv, kv)
    return None


class _StepCounter(TorchDispatchMode):
    """FLOPs and collectives of each traced phase (micro-batches, then the optimizer step)."""

    def __init__(self, world_size: int) -> None:
        super().__init__()
        from torch.distributed._tools.fake_collectives import collective_ops
        from torch.utils.flop_counter import flop_registry

        self.world_size = world_size
        self.collective_ops, self.flop_registry = collective_ops, flop_registry
        self.phases: list[tuple[list[int], dict[str, Collective]]] = []

    def start_phase(self) -> None:
        self.phases.append(([0], {}))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(t is DTensor for t in types):
            return NotImplemented  # let DTensor run its local ops, counted when they come here
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flops, collectives = self.phases[-1]
        if func in self.collective_ops:
            kind = _collective_kind(func.__name__)
            if kind is not None:
                tensor = _full_tensor(args, out)
                nbytes = tensor.numel() * tensor.element_size()
                c = collectives.setdefault(kind, Collective())
                c.calls += 1
                c.tensor_bytes += nbytes
                c.bytes_per_device += nbytes * _RING_SHARE[kind](self.world_size)
        elif (count := _attention_flops(func, args, out)) is not None:
            flops[0] += count
        elif func.overloadpacket in self.flop_registry:
            flops[0] += self.flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        return out

    def totals(self, accumulation: int) -> tuple[int, dict[str, Collective]]:
        """Per optimizer step: the first micro-batch repeated for all but the last."""
        repeats = [1] * len(self.phases)
        if accumulation > 1:
            repeats[0] = accumulation - 1
        flops = sum(r * f[0] for r, (f, _) in zip(repeats, self.phases))
        collectives: dict[str, Collective] = {}
        for r, (_, phase) in zip(repeats, self.phases):
            for kind, c in phase.items():
                total = collectives.setdefault(kind, Collective())
                total.calls += r * c.calls
                total.tensor_bytes += r * c.tensor_bytes
                total.bytes_per_device += r * c.bytes_per_device
        return flops, collectives


def _full_tensor(args, out) -> torch.Tensor:
    """The collective's full tensor, the largest it touches: an all-gather's output, a
    reduce-scatter's input, the tensor reduced or broadcast (in place or returned)."""
    tensors = [a for a in torch.utils._pytree.tree_leaves((args, out)) if isinstance(a, torch.Tensor)]
    return max(tensors, key=torch.Tensor.numel)


# -- step time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    """Published peak figures of one GPU (dense, no sparsity)."""

    name: str
    memory_gb: float  # HBM, 10^9 bytes
    bf16_tflops: float  # 16-bit matmuls
    tf32_tflops: float  # fp32 matmuls (TF32 tensor cores)
    hbm_tb_per_s: float
    nvlink_gb_per_s: float  # per GPU, both directions together, as published
    network_gb_per_s: float  # InfiniBand per GPU, one direction (NDR 400 Gb/s: 50 GB/s; HDR 200 Gb/s: 25 GB/s)
    capability: tuple[int, int]  # CUDA compute capability: what precision a run picks (pajama.precision.cuda_choice)


GPUS = {
    "a100-40g": GPU("A100 SXM 40GB", 40, 312, 156, 1.555, 600, 25, (8, 0)),
    "a100-80g": GPU("A100 SXM 80GB", 80, 312, 156, 2.039, 600, 25, (8, 0)),
    "h100": GPU("H100 SXM 80GB", 80, 989, 494.5, 3.35, 900, 50, (9, 0)),
    "h200": GPU("H200 SXM 141GB", 141, 989, 494.5, 4.8, 900, 50, (9, 0)),
}


@dataclass
class StepTimeEstimate:
    """An estimate, not a measurement: compute at an assumed MFU, communication at the link's
    bandwidth, the two overlapping fully (FSDP prefetches the next block while this one computes)."""

    gpu: str
    mfu: float  # assumed
    link: str  # NVLink (one node) or InfiniBand
    compute_seconds: float
    communication_seconds: float
    step_seconds: float  # the larger of the two
    tokens_per_second_per_device: float
    fits: bool  # the traced peak is within the GPU's memory


def estimate_step_time(trace: StepTrace, gpu: str = "h100", mfu: float = 0.4, devices_per_node: int = 8) -> StepTimeEstimate:
    """Step time of ``trace`` on ``gpu`` (a key of GPUS): its FLOPs at ``mfu`` of the peak (bf16,
    or TF32 under 32-true), its collectives over NVLink when the run fits in one node of
    ``devices_per_node``, else over InfiniBand, whichever takes longer."""
    if gpu not in GPUS:
        raise PajamaError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    if not 0 < mfu <= 1:
        raise PajamaError(f"mfu must be in (0, 1], got {mfu}")
    spec = GPUS[gpu]
    peak = (spec.tf32_tflops if trace.precision == "32-true" else spec.bf16_tflops) * 1e12
    compute = trace.flops / (peak * mfu)
    one_node = trace.world_size <= devices_per_node
    # A ring sends one way on every link at once: half of NVLink's two-way figure.
    bandwidth = (spec.nvlink_gb_per_s / 2 if one_node else spec.network_gb_per_s) * 1e9
    communication = trace.communication_bytes / bandwidth
    step = max(compute, communication)
    return StepTimeEstimate(
        gpu=spec.name, mfu=mfu, link="NVLink" if one_node else "InfiniBand", compute_seconds=compute,
        communication_seconds=communication, step_seconds=step, tokens_per_second_per_device=trace.tokens_per_device / step,
        fits=trace.peak_bytes["total"] <= spec.memory_gb * 1e9,
    )  # fmt: skip


def format_trace(trace: StepTrace, estimate: StepTimeEstimate | None = None) -> str:
    """The trace (and an estimate) as a table, GiB per device."""
    gib = memory.GB
    rows = [
        (
            f"traced step: {trace.model}, {trace.world_size} device(s) ({trace.strategy}, {trace.device}), micro-batch {trace.micro_batch_size} x {trace.seq_len} tokens "
            f"x {trace.accumulation} accumulation, {trace.precision}, recompute {trace.activation_checkpointing} (traced in {trace.seconds:.1f} s)"
        ),
        "  peak memory per device:",
    ]
    rows += [f"    {name:<30}{trace.peak_bytes[name] / gib:>10.2f} GiB" for name in (*CATEGORIES, "total")]
    rows.append(f"  FLOPs per device per step: {trace.flops:.3e}")
    for kind, c in sorted(trace.collectives.items()):
        rows.append(f"  {kind:<15}{c.calls:>6} calls {c.bytes_per_device / gib:>10.2f} GiB sent per device")
    if estimate is not None:
        rows.append(
            f"  estimate on {estimate.gpu} at {estimate.mfu:.0%} MFU: compute {estimate.compute_seconds:.2f} s, communication {estimate.communication_seconds:.2f} s "
            f"({estimate.link}), step {estimate.step_seconds:.2f} s, {estimate.tokens_per_second_per_device:,.0f} tokens/s per device"
            + ("" if estimate.fits else " -- does NOT fit in memory")
        )
    return "\n".join(rows)
