"""The memory plan of a run, from its traced step (pajama.training.trace), not a formula: whether
it fits a device, and, for ``--micro_batch_size auto`` / ``--activation_checkpointing auto``, the
micro-batch and recompute mode that fit with the most tokens per second.

Per-device memory is fixed (weights, gradients, optimizer state, FSDP's gathered blocks) plus a
part that grows with the micro-batch (activations, backward temporaries, the loss's chunk), in
proportion: one trace per recompute mode gives both, and so the largest micro-batch that fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pajama import PajamaError, checkpoint, memory
from pajama.hardware import available_memory, device_type
from pajama.loader import load_training_data
from pajama.model import RECOMPUTE
from pajama.model_config import ModelConfig
from pajama.training.batch import fit_batch
from pajama.training.checkpointing import resume_path
from pajama.training.config import TrainConfig, model_config_for, recompute_mode
from pajama.training.trace import StepTrace, TraceUnavailable, trace_step

# What a plan may use of a device's memory. A GPU: the CUDA context, NCCL's buffers and the
# caching allocator's fragmentation are not traced. A CPU: the free RAM is shared with the data
# loader, the allocator's slack and whatever else the machine runs.
GPU_MEMORY_SHARE = 0.9
CPU_MEMORY_SHARE = 0.6
# Tokens per micro-batch at which a device does half its best work: a model of utilisation
# (n / (n + SATURATION_TOKENS)), used only to weigh a larger micro-batch against recompute.
SATURATION_TOKENS = 1024
_FIXED = ("weights", "gradients", "optimizer state", "gathered weights and buffers")


@dataclass
class Choice:
    micro_batch_size: int
    activation_checkpointing: str
    trace: StepTrace  # of this recompute mode (at the micro-batch it was traced with)


def largest_micro_batch(trace: StepTrace, budget: float, limit: int) -> int:
    """The largest micro-batch (at most ``limit``) whose memory, extrapolated from ``trace``, fits
    ``budget`` bytes; 0 if none does."""
    fixed = sum(trace.peak_bytes[c] for c in _FIXED)
    per_sequence = (trace.peak_bytes["total"] - fixed) / trace.micro_batch_size
    return max(0, min(limit, int((budget - fixed) // per_sequence))) if budget > fixed else 0


def _confirmed(one: StepTrace, budget: float, limit: int, trace_at, tries: int = 5) -> tuple[int, StepTrace]:
    """The largest micro-batch (at most ``limit``) whose traced step fits ``budget``, and its trace,
    from ``one`` (a trace at one sequence) and ``trace_at(micro)``. Memory is close to linear in
    the micro-batch once activations dominate, but the peak can sit elsewhere at small ones (in
    the optimizer step, say): so each trace's linear extrapolation is the next guess, checked by
    tracing it, with bisection where a guess falls outside what is known."""
    if one.peak_bytes["total"] > budget:
        return 0, one
    fits, fits_trace, too_large = 1, one, limit + 1
    guess = largest_micro_batch(one, budget, limit)
    for _ in range(tries):
        if too_large - fits <= 1:
            break
        if not fits < guess < too_large:
            guess = (fits + too_large) // 2
        trace = trace_at(guess)
        if trace.peak_bytes["total"] <= budget:
            fits, fits_trace = guess, trace
        else:
            too_large = guess
        guess = largest_micro_batch(trace, budget, limit)
    return fits, fits_trace


def relative_speed(micro_batch_size: int, seq_len: int, trace: StepTrace) -> float:
    """Tokens per second, up to a constant: utilisation of ``micro_batch_size`` x ``seq_len``
    tokens over the traced FLOPs per token (recompute adds FLOPs)."""
    tokens = micro_batch_size * seq_len
    return tokens / (tokens + SATURATION_TOKENS) / (trace.flops / trace.tokens_per_device)


def choose(
    config: ModelConfig,
    world_size: int,
    micro_batch_size: int | str,
    activation_checkpointing: str,
    budget: float,
    limit: int,
    precision: str,
    strategy: str,
    device: str,
    reduce_every_micro_batch: bool = True,
    log=None,
    document_mask: bool = False,
) -> Choice:
    """The micro-batch and recompute mode to train with within ``budget`` bytes per device: as
    given, or, where "auto", the pair that fits with the highest :func:`relative_speed` (so a
    larger micro-batch first, and the least recompute among equals). Refused with what would fit
    when nothing does."""
    modes = RECOMPUTE if activation_checkpointing == "auto" else (activation_checkpointing,)
    # With accumulation the gradients are held from the second micro-batch on (full-size, or FSDP's shards).
    accumulation = 2 if limit > (1 if micro_batch_size == "auto" else micro_batch_size) else 1
    options = []
    for mode in modes:
        traced_micro = 1 if micro_batch_size == "auto" else micro_batch_size
        trace = trace_step(config, world_size, traced_micro, config.block_size, precision, strategy, mode, accumulation, reduce_every_micro_batch, device, log, document_mask)
        if micro_batch_size == "auto":
            fits, trace = _confirmed(trace, budget, limit, lambda b: trace_step(config, world_size, b, config.block_size, precision, strategy, mode, accumulation, reduce_every_micro_batch, device, log, document_mask))
        else:
            fits = micro_batch_size if trace.peak_bytes["total"] <= budget else 0
        options.append((fits, mode, trace))
        if fits == (limit if micro_batch_size == "auto" else micro_batch_size):
            break  # more recompute fits no more sequences: only slower (modes go from least recompute)
    fitting = [(relative_speed(b, config.block_size, t), b, mode, t) for b, mode, t in options if b > 0]
    if fitting:
        _, micro, mode, trace = max(fitting, key=lambda o: (o[0], o[1]))
        return Choice(micro, mode, trace)
    traced = {mode: trace for _, mode, trace in options}
    raise PajamaError(does_not_fit(config, traced, micro_batch_size, budget, limit, world_size, precision, strategy, device, reduce_every_micro_batch, log, document_mask))


def does_not_fit(config, traced: dict[str, StepTrace], micro_batch_size, budget, limit, world_size, precision, strategy, device, reduce_every_micro_batch, log=None, document_mask=False) -> str:
    """Why nothing fits, and what would: the micro-batch each recompute mode fits (``traced``
    holds the traces there are already, by recompute mode), or that even full recompute at one
    sequence does not."""
    mode, trace = list(traced.items())[-1]
    asked = f"micro-batch {micro_batch_size}" if micro_batch_size != "auto" else "any micro-batch"
    message = (
        f"{config.name} does not fit: {asked} of {config.block_size} tokens on {world_size} device(s) needs "
        f"{size(trace.peak_bytes['total'])} per device (recompute {mode}), more than the {size(budget)} planned for"
    )
    accumulation = 2 if limit > (1 if micro_batch_size == "auto" else micro_batch_size) else 1
    would = []
    for other in RECOMPUTE:
        def trace_at(micro, other=other):
            return trace_step(config, world_size, micro, config.block_size, precision, strategy, other, accumulation, reduce_every_micro_batch, device, log, document_mask)

        one = traced[other] if other in traced and traced[other].micro_batch_size == 1 else trace_at(1)
        fits, _ = _confirmed(one, budget, limit, trace_at)
        if fits:
            would.append(f"--activation_checkpointing {other} --micro_batch_size {fits}")
    if would:
        return f"{message}; what fits: {' or '.join(would)}"
    return f"{message}; not even one sequence with full recompute: use more devices, a smaller --block_size, or a device with more memory"


def torch_version() -> str:
    import torch

    return torch.__version__


def size(nbytes: float) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{nbytes / memory.GB:.1f} GiB" if nbytes >= memory.GB else f"{nbytes / 2**20:.1f} MiB"


def plan_memory(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with ``--micro_batch_size auto`` and ``--activation_checkpointing auto``
    resolved from the traced step, before any process starts (a resumed run keeps what it
    began with); on a GPU, a run whose traced step does not fit its memory is refused here,
    with what would fit, not after minutes of setup. Returns lines to print."""
    resuming = resume_path(config)
    earlier = checkpoint.read_meta(resuming)["train"] if resuming is not None else {}
    notes = []
    if config.micro_batch_size == "auto" and isinstance(earlier.get("micro_batch_size"), int):
        config = replace(config, micro_batch_size=earlier["micro_batch_size"], batch_size=earlier["batch_size"])
        notes.append(f"micro-batch {config.micro_batch_size} (auto), as the run began")
    if recompute_mode(config.activation_checkpointing) == "auto" and earlier.get("activation_checkpointing") in RECOMPUTE:
        config = replace(config, activation_checkpointing=earlier["activation_checkpointing"])
        notes.append(f"activation checkpointing {config.activation_checkpointing} (auto), as the run began")
    micro, recompute = config.micro_batch_size, recompute_mode(config.activation_checkpointing)
    device = device_type(config.accelerator)
    if micro != "auto" and recompute != "auto" and device != "cuda":
        return replace(config, activation_checkpointing=recompute), notes
    world = config.devices * config.num_nodes
    model_config = model_config_for(config, load_training_data(config.train_data_dir)[0], resuming)
    strategy = config.strategy if config.strategy != "auto" else ("fsdp" if world > 1 or (resuming and (resuming / checkpoint.STATE).is_dir()) else "single")
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        budget, within = total * GPU_MEMORY_SHARE, f"{GPU_MEMORY_SHARE:.0%} of the {size(total)} of {torch.cuda.get_device_name(0)}"
    else:
        budget = CPU_MEMORY_SHARE * (available_memory() or 0) / config.devices
        within = f"{CPU_MEMORY_SHARE:.0%} of the free RAM per process"
    reduce_every = strategy == "fsdp" and not config.accumulate_unsharded
    try:
        chosen = choose(model_config, world, micro, recompute, budget, max(1, config.batch_size // world), config.precision, strategy, device, reduce_every, document_mask=config.document_mask)
    except PajamaError as e:
        if not isinstance(e, TraceUnavailable):
            raise  # does not fit
        unavailable = str(e)
    except Exception as e:  # noqa: BLE001 (a private PyTorch API that changed: the trace is a check, not the run)
        unavailable = f"tracing the step failed under torch {torch_version()}: {type(e).__name__}: {e}"
    else:
        unavailable = None
    if unavailable is not None:
        if micro == "auto" or recompute == "auto":
            raise PajamaError(f"--micro_batch_size auto and --activation_checkpointing auto choose from the traced step, and {unavailable}: give both")
        return replace(config, activation_checkpointing=recompute), notes + [f"note: memory not checked before launch ({unavailable})"]
    if micro == "auto":
        micro, batch, note = fit_batch(config.batch_size, world, chosen.micro_batch_size)
        fits = chosen.micro_batch_size
        notes.append(f"micro-batch {micro} (auto: {fits} fit{'s' if fits == 1 else ''}, traced step within {size(budget)}, {within})" + (f"; {note}" if note else ""))
        config = replace(config, micro_batch_size=micro, batch_size=batch)
    if recompute == "auto":
        notes.append(f"activation checkpointing {chosen.activation_checkpointing} (auto: the least recompute with the most tokens/s that fits)")
    return replace(config, activation_checkpointing=chosen.activation_checkpointing), notes
