"""``pajama pretrain ... --dry_run true``: the run rehearsed on this machine, at its full scale.

The run's own decisions (flags checked, precision, strategy, recompute, micro-batch and global
batch split, learning-rate schedule) are made as the run makes them; then one optimizer step
of the real model and step code is traced with fake tensors over a fake process group of the
run's world size (pajama.training.trace): 512 ranks of an 8B model need neither GPUs nor
memory. It prints per-device peak memory by category, FLOPs, what each collective sends per
device, the checkpoint's size and save plan, and an estimated step time and time to the end of
the run on a named GPU. A run that would not fit, or whose batch does not divide, is refused
with the message the real run gives.
"""

from __future__ import annotations

from pathlib import Path

from pajama import PajamaError
from pajama.hardware import available_memory
from pajama.loader import load_training_data
from pajama.precision import choose_precision, cuda_choice
from pajama.training.batch import fit_batch, split_batch
from pajama.training.config import (
    TrainConfig,
    model_config_for,
    preset_shape,
    recompute_mode,
)
from pajama.training.plan import CPU_MEMORY_SHARE, GPU_MEMORY_SHARE, choose, does_not_fit, size
from pajama.training.schedule import plan_schedule
from pajama.training.trace import GPUS, estimate_step_time, format_trace, trace_step


def dry_run(config: TrainConfig) -> None:
    """Rehearse ``config`` (see the module's docstring) and print what it would need."""
    world = config.devices * config.num_nodes
    device = _device(config)
    gpu = GPUS[config.dry_run_gpu or "h100"] if device == "cuda" else None
    model_config = _model_config(config)
    precision = _precision(config, device, gpu, model_config)
    strategy = config.strategy if config.strategy != "auto" else ("fsdp" if world > 1 else "single")
    if strategy == "single" and world > 1:
        raise PajamaError("--strategy single runs on one device; use ddp or fsdp for more")
    reduce_every = strategy == "fsdp" and not config.accumulate_unsharded
    budget = gpu.memory_gb * 1e9 * GPU_MEMORY_SHARE if gpu else CPU_MEMORY_SHARE * (available_memory() or 0) / config.devices
    recompute = recompute_mode(config.activation_checkpointing)
    micro = config.micro_batch_size
    say = _say
    say(f"dry run: {model_config.name} ({model_config.num_parameters():,} parameters, context {model_config.block_size}, vocab {model_config.vocab_size}) "
        f"on {world} x {gpu.name if gpu else 'CPU process'} ({config.devices} per node x {config.num_nodes} node(s)), {strategy}, {precision}")  # fmt: skip
    if micro == "auto" or recompute == "auto":
        limit = max(1, config.batch_size // world)
        chosen = choose(model_config, world, micro, recompute, budget, limit, precision, strategy, device, reduce_every, log=say, document_mask=config.document_mask)
        if micro == "auto":
            micro, batch, note = fit_batch(config.batch_size, world, chosen.micro_batch_size)
            say(f"micro-batch {micro} (auto: {chosen.micro_batch_size} fit{'s' if chosen.micro_batch_size == 1 else ''})" + (f"; {note}" if note else ""))
        recompute = chosen.activation_checkpointing
        say(f"activation checkpointing {recompute}" + (" (auto)" if config.activation_checkpointing == "auto" else ""))
    batch, accum, note = split_batch(config.batch_size, micro, world)
    if note:
        say(f"note: {note}")
    trace = trace_step(model_config, world, micro, model_config.block_size, precision, strategy, recompute, accum, reduce_every, device, log=say, document_mask=config.document_mask)
    estimate = estimate_step_time(trace, config.dry_run_gpu or "h100", devices_per_node=config.devices) if gpu else None
    tokens_per_step = batch * model_config.block_size
    max_iters, schedule = plan_schedule(config, tokens_per_step)
    print(format_trace(trace, estimate))
    print(_checkpoint_line(model_config.num_parameters(), precision, world, strategy))
    print(f"  {world} device(s) x {micro} sequences x {accum} accumulation = {batch} sequences ({tokens_per_step:,} tokens) per step; {max_iters:,} steps, {max_iters * tokens_per_step:,} tokens")
    print(f"  {schedule.describe(tokens_per_step)}")
    if estimate is not None:
        total = estimate.step_seconds * max_iters
        print(f"  estimated time to step {max_iters:,}: {_duration(total)} ({total * world / 3600:,.0f} GPU hours) -- an estimate from peak figures at {estimate.mfu:.0%} MFU, not a measurement")
    if trace.peak_bytes["total"] > budget:  # refused as the run would be, with what fits
        limit = max(1, config.batch_size // world)
        raise PajamaError(does_not_fit(model_config, {recompute: trace}, micro, budget, limit, world, precision, strategy, device, reduce_every, say, config.document_mask))
    print(f"dry run done: fits ({size(trace.peak_bytes['total'])} of {size(budget)} per device); nothing was allocated, no data read")


def _say(line: str) -> None:
    print(line, flush=True)


def _device(config: TrainConfig) -> str:
    """The device a dry run plans for: cuda when asked for (or when a GPU is named), whatever
    this machine has."""
    if config.accelerator in ("cuda", "gpu") or (config.accelerator == "auto" and config.dry_run_gpu):
        return "cuda"
    if config.accelerator in ("cpu", "auto"):
        return "cpu"
    raise PajamaError(f"--dry_run plans for --accelerator cuda or cpu, not {config.accelerator}")


def _model_config(config: TrainConfig):
    """The run's model: with the prepared data's vocabulary where the data is here; the
    preset's where it is not (a dry run needs no data)."""
    directories = config.train_data_dir.keys() if isinstance(config.train_data_dir, dict) else [config.train_data_dir]
    if all(Path(d).expanduser().is_dir() for d in directories):
        return model_config_for(config, load_training_data(config.train_data_dir)[0], None)
    shape = preset_shape(config)
    _say(f"note: {', '.join(map(str, directories))} not here: planning with the preset's vocabulary of {shape.vocab_size}")
    return shape.replace(block_size=config.block_size or shape.block_size)


def _precision(config: TrainConfig, device: str, gpu, model_config) -> str:
    if device == "cuda":
        choice = cuda_choice(config.precision, gpu.name, gpu.capability, hip=False)
    else:
        micro = config.micro_batch_size if config.micro_batch_size != "auto" else 8
        choice = choose_precision(config.precision, "cpu", model_config, tokens=micro * model_config.block_size)
    _say(choice.reason)
    return choice.precision


def _checkpoint_line(parameters: int, precision: str, world: int, strategy: str) -> str:
    """A checkpoint holds the weights and AdamW's two moments, in fp32 (bf16 under bf16-true)."""
    width = 2 if precision == "bf16-true" else 4
    total = 3 * width * parameters
    if strategy == "fsdp" and world > 1:
        return f"  checkpoint: {size(total)}, sharded: each of the {world} devices writes its {size(total / world)} (distributed checkpoint)"
    return f"  checkpoint: {size(total)}, one file written by rank 0"


def _duration(seconds: float) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{int(days)} d {rest / 3600:.1f} h" if days else f"{seconds / 3600:.1f} h"
