"""Pre-training: the Fabric loop, from data and model setup to checkpoints, top to bottom.

Every step count (max_iters, warmup_iters, lr_decay_iters, save_interval, eval_interval,
log_interval) is in optimizer steps; one optimizer step consumes ``batch_size`` sequences
across all devices, in micro-batches of ``micro_batch_size`` per device with gradient
accumulation derived from the world size.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from pajama import PajamaError, checkpoint, memory, usable_cpus
from pajama.hardware import available_memory
from pajama.loader import MixtureSampler, PreparedData, load_prepared, load_training_data, split_blocks, stream_weights, validation_samples
from pajama.metrics import MetricsLog, peak_flops, peak_memory_gb, task_parts
from pajama.model import LLaMA, document_ids
from pajama.model_config import ModelConfig, preset
from pajama.precision import choose_precision, compute_dtype
from pajama.progress import progress_bar
from pajama.corpora import LLAMA_WEIGHTS
from pajama.tokenizer import find_tokenizer

# Lightning is imported only where a run starts (``_fabric``): it takes seconds to import, which
# every other command, and ``--help``, can skip. (Not even for type hints: the CLI's signature
# parser runs ``if TYPE_CHECKING:`` blocks.) Functions take that ``lightning.Fabric`` as ``fabric``.
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to continue (requeue)
EXIT_INTERRUPTED = 130  # Ctrl-C: checkpoint written, as for any command a user interrupts
# Share of the free RAM that --micro_batch_size auto plans to use on a CPU: the plan leaves out
# the allocator's slack, the data loader and whatever else the machine runs.
CPU_MEMORY_SHARE = 0.6
# fp16 loss scaling: the scale doubles after this many steps without overflow (PyTorch's default).
LOSS_SCALE_GROWTH_INTERVAL = 2000


@dataclass
class TrainConfig:
    """Pre-train a LLaMA model on prepared RedPajama chunks (``pajama prepare``).

    Rerunning the same command resumes from the newest checkpoint in ``out_dir``.
    """

    train_data_dir: dict[str, float] | Path = Path("data/lit-redpajama")
    """Directory written by ``pajama prepare`` (or lit-llama's prepare); or several, each with its sampling weight: '{data/slimpajama: 0.69, data/starcoder: 0.31}' (same tokenizer; --mixture weights the subsets inside each)."""
    val_data_dir: Path | None = None
    """Separate prepared validation data; default: hold out the tail of each training subset."""
    model_name: str = "7B"
    """Model preset (``pajama model`` lists them)."""
    model_overrides: dict[str, Any] | None = None
    """Changes to the preset's shape, e.g. '{n_layer: 4, n_embd: 256, n_kv_head: 2, tie_embeddings: true}' (fields of pajama.model_config.ModelConfig; the vocabulary always comes from the data)."""
    out_dir: Path = Path("out/training")
    """Checkpoints, metrics.csv and config.json go here."""
    devices: int = 1
    """Devices per node."""
    num_nodes: int = 1
    """Number of nodes."""
    accelerator: str = "auto"
    """auto, cpu, cuda or mps."""
    precision: str | None = None
    """bf16-mixed (fp32 weights, bf16 compute), bf16-true, 16-mixed (fp16 compute with dynamic loss scaling), 32-true; default: the fastest this device runs well (GPUs: bf16-mixed, or 16-mixed without bf16; CPUs: measured at start)."""
    strategy: str = "auto"
    """auto (one device: single; more: fsdp), single, ddp or fsdp (FSDP2, one shard unit per block)."""
    learning_rate: float = 6e-4
    batch_size: int = 125
    """Global batch size in sequences, across all devices and nodes."""
    micro_batch_size: int | Literal["auto"] = 5
    """Sequences per device per forward/backward pass; auto: the largest that fits (GPU: tried, backing off on out-of-memory; CPU: the memory plan against free RAM), keeping the global batch."""
    max_iters: int = 600000
    """Optimizer steps to train for."""
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    decay_lr: bool = True
    warmup_iters: int = 2000
    """Linear warm-up, in optimizer steps."""
    lr_decay_iters: int | None = None
    """Cosine decay ends here, in optimizer steps (default: max_iters)."""
    min_lr: float = 6e-5
    save_interval: int = 1000
    """Optimizer steps between checkpoints (one is also written at the end)."""
    eval_interval: int = 1000
    """Optimizer steps between validations."""
    eval_iters: int = 100
    """Validation micro-batches per evaluation (the number of sequences is eval_iters * micro_batch_size)."""
    eval_tasks: str | list[str] | None = None
    """lm-evaluation-harness tasks to evaluate at every eval_interval, comma-separated (hellaswag,arc_easy; tinyllama: TinyLlama's seven); needs pip install 'pajama[eval]'. Accuracies go to metrics.csv as task/<task>/<metric>."""
    eval_task_limit: int | None = None
    """Examples per task at each evaluation of --eval_tasks (default: all)."""
    eval_task_include_path: Path | None = None
    """Directory of task YAML files in the harness's format, for --eval_tasks defined locally."""
    log_interval: int = 1
    """Optimizer steps between metric rows and console lines."""
    block_size: int | None = None
    """Training sequence length (default: the preset's context length)."""
    mixture: dict[str, float] | None = None
    """Subset sampling weights (default: LLaMA's), renormalised over the subsets present."""
    val_fraction: float = 0.005
    """Share of each subset's sequences held out for validation when no val_data_dir is given (0: no validation)."""
    seed: int = 1337
    resume: str = "auto"
    """auto (newest checkpoint in out_dir, else start fresh), none, or a checkpoint path."""
    keep_last: int = 3
    """Checkpoints to keep (0: all)."""
    compile: bool = False
    """torch.compile each transformer block."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass to save memory."""
    document_mask: bool = False
    """Each token attends only to earlier tokens of its own document (packed sequences; documents start at BOS), through an explicit attention mask."""
    max_time: str | None = None
    """Wall-clock budget from the start of the command ("HH:MM:SS", "D-HH:MM:SS" or seconds): checkpoint and exit 75 before it runs out."""
    max_bad_steps: int = 5
    """Stop after this many consecutive steps with a non-finite loss or gradient norm."""
    logger: str = "csv"
    """csv (always written), tensorboard or wandb (also)."""
    peak_tflops: float | None = None
    """Peak TFLOP/s of one device for MFU (default: known GPUs; unknown devices report no MFU)."""
    initial_checkpoint: Path | None = None
    """Start from these weights (a pajama checkpoint, e.g. from ``pajama import``) with a fresh optimizer at step 0."""


def pretrain(config: TrainConfig) -> None:
    """Pre-train a LLaMA model on prepared RedPajama chunks (``pajama prepare``).

    Rerunning the same command resumes from the newest checkpoint in ``out_dir``.
    """
    started = time.monotonic()  # --max_time counts from here: setup and loading take time too
    _validate(config)
    config, notes = _choose_precision(config)
    fabric = _fabric(config)
    fabric.launch()
    _run(fabric, config, started, notes)


# -- setup --------------------------------------------------------------------------------


def _validate(config: TrainConfig) -> None:
    for name in ("batch_size", "max_iters", "save_interval", "eval_interval", "eval_iters", "log_interval", "devices", "num_nodes"):
        if getattr(config, name) < 1:
            raise PajamaError(f"--{name} must be >= 1, got {getattr(config, name)}")
    if config.micro_batch_size != "auto" and not (isinstance(config.micro_batch_size, int) and config.micro_batch_size >= 1):
        raise PajamaError(f"--micro_batch_size must be a positive integer or auto, got {config.micro_batch_size!r}")
    world = config.devices * config.num_nodes
    if config.micro_batch_size != "auto" and config.batch_size % (config.micro_batch_size * world):
        options = sorted({config.micro_batch_size * world * k for k in (max(1, config.batch_size // (config.micro_batch_size * world)),) for k in (k, k + 1)})
        raise PajamaError(
            f"--batch_size {config.batch_size} is not a multiple of micro_batch_size {config.micro_batch_size} x {world} devices; "
            f"try --batch_size {' or '.join(map(str, options))}"
        )
    if config.strategy not in ("auto", "single", "ddp", "fsdp"):
        raise PajamaError(f"--strategy must be auto, single, ddp or fsdp, got {config.strategy!r}")
    if config.logger not in ("csv", "tensorboard", "wandb"):
        raise PajamaError(f"--logger must be csv, tensorboard or wandb, got {config.logger!r}")
    if config.lr_decay_iters is not None and config.lr_decay_iters < 1:
        raise PajamaError(f"--lr_decay_iters must be >= 1, got {config.lr_decay_iters}")
    if not 0 <= config.val_fraction < 1:
        raise PajamaError(f"--val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.block_size is not None and config.block_size < 1:
        raise PajamaError(f"--block_size must be >= 1, got {config.block_size}")
    if config.peak_tflops is not None and not config.peak_tflops > 0:
        raise PajamaError(f"--peak_tflops must be positive, got {config.peak_tflops}")
    if config.precision not in (None, *memory.PRECISIONS):
        raise PajamaError(f"--precision must be {', '.join(memory.PRECISIONS)}, got {config.precision!r}")
    if config.accelerator not in ("auto", "cpu", "cuda", "gpu", "mps"):
        raise PajamaError(f"--accelerator must be auto, cpu, cuda or mps, got {config.accelerator!r}")
    if config.accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise PajamaError(f"--accelerator {config.accelerator}: no CUDA device is visible to PyTorch (torch {torch.__version__}); use --accelerator cpu")
    if config.resume == "none" and checkpoint.list_checkpoints(Path(config.out_dir).expanduser()):
        raise PajamaError(
            f"--resume none, but {Path(config.out_dir).expanduser() / checkpoint.CHECKPOINTS} holds checkpoints of an earlier run, "
            "which a fresh run would mix with its own: use another --out_dir, or delete them"
        )
    # Clear errors before any process starts.
    if config.eval_task_limit is not None and config.eval_task_limit < 1:
        raise PajamaError(f"--eval_task_limit must be >= 1, got {config.eval_task_limit}")
    if config.eval_tasks:
        from pajama.evaluation.harness import check_tasks

        check_tasks(config.eval_tasks, config.eval_task_include_path)  # the extra installed, every name known
    _preset_shape(config)
    load_training_data(config.train_data_dir)
    if config.max_time is not None:
        _parse_duration(config.max_time)


def _parse_duration(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if m:
        d, h, mi, s = (int(x) if x else 0 for x in m.groups())
        return ((d * 24 + h) * 60 + mi) * 60 + s
    try:
        return float(text)
    except ValueError:
        raise PajamaError(f"--max_time {text!r}: expected seconds, HH:MM:SS or D-HH:MM:SS") from None


def device_type(accelerator: str) -> str:
    """The device kind ``--accelerator`` resolves to, as Fabric will pick it."""
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def _choose_precision(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with its precision decided (see pajama.precision), and lines to print once
    the processes are up. A resumed run keeps the precision it began with, so that resuming
    stays exact even if this machine would measure differently today."""
    resuming = _resume_path(config)
    if config.precision is None and resuming is not None:
        earlier = checkpoint.read_meta(resuming)["train"].get("precision")
        if earlier:
            return replace(config, precision=earlier), [f"precision {earlier}, as the run began"]
    device = device_type(config.accelerator)
    if device == "cpu":
        torch.set_num_threads(_cpu_threads(config.devices))  # probe on the threads training will use
    model_config = _model_config(config, load_training_data(config.train_data_dir)[0], resuming)
    micro = config.micro_batch_size if config.micro_batch_size != "auto" else 8
    choice = choose_precision(config.precision, device, model_config, tokens=micro * model_config.block_size)
    return replace(config, precision=choice.precision), [choice.reason] + ([f"warning: {choice.warning}"] if choice.warning else [])


def _fabric(config: TrainConfig):
    import lightning as L
    from lightning.fabric.plugins.precision import MixedPrecision
    from lightning.fabric.strategies import ModelParallelStrategy

    world = config.devices * config.num_nodes
    strategy = config.strategy
    resuming = _resume_path(config)
    sharded = resuming is not None and (resuming / checkpoint.STATE).is_dir()
    if strategy == "auto":
        # A sharded checkpoint resumes under FSDP, on one device too.
        strategy = "fsdp" if world > 1 or sharded else "single"
    if strategy == "single" and world > 1:
        raise PajamaError("--strategy single runs on one device; use ddp or fsdp for more")
    if resuming is not None and sharded != (strategy == "fsdp"):
        if sharded:
            raise PajamaError(f"{resuming} is a sharded (FSDP) checkpoint: resume it with --strategy fsdp (on any number of devices)")
        raise PajamaError(
            f"{resuming} is a full checkpoint (one device or DDP), which FSDP cannot resume: resume it with --strategy "
            f"{'ddp' if world > 1 else 'single'}, or start a new run from its weights with --initial_checkpoint {resuming} (fresh optimizer)"
        )
    precision = config.precision
    gather_dtype = compute_dtype(precision) if precision in memory.MIXED else None  # FSDP's, see _shard
    strategies = {
        "single": "auto",
        "ddp": "ddp",
        "fsdp": lambda: ModelParallelStrategy(
            parallelize_fn=functools.partial(_shard, gather_dtype=gather_dtype), data_parallel_size=world, tensor_parallel_size=1
        ),
    }
    chosen = strategies[strategy]
    plugins = None
    if precision == "16-mixed":
        # fp16 autocast with dynamic loss scaling (fp32 master weights). Given as a plugin, since
        # Fabric turns a "16-mixed" string into bf16 on CPUs and refuses it under FSDP2. Under
        # FSDP each rank holds a shard of the gradients, so the overflow check is all-reduced.
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        device = device_type(config.accelerator)
        if strategy == "fsdp" and torch.__version__ < "2.5":
            raise PajamaError(f"--precision 16-mixed under FSDP needs torch >= 2.5 (loss scaling of sharded gradients); this is {torch.__version__}: use --strategy ddp, or upgrade torch")
        scaler_class = ShardedGradScaler if strategy == "fsdp" else torch.amp.GradScaler
        scaler = scaler_class(device=device, growth_interval=LOSS_SCALE_GROWTH_INTERVAL)
        plugins, precision = [MixedPrecision("16-mixed", device=device, scaler=scaler)], None
    return L.Fabric(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=chosen() if callable(chosen) else chosen,
        precision=precision,
        plugins=plugins,
    )


def _shard(model: LLaMA, device_mesh, gather_dtype: torch.dtype | None) -> LLaMA:
    """FSDP2: one shard unit per transformer block, then the root (embeddings, norm, head).

    Under mixed precision, blocks are gathered in the compute dtype (fp32 shards stay the master
    weights, and gradients are reduced in fp32): half the communication, and autocast then has
    no fp32 weights to cast, so no 16-bit copy of every layer's weights is held until backward.
    """
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = device_mesh["data_parallel"]
    policy = MixedPrecisionPolicy(param_dtype=gather_dtype, reduce_dtype=torch.float32) if gather_dtype else MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _cpu_threads(devices: int) -> int:
    """On CPU, the cores this process may run on, split between this node's processes
    (oversubscription is 3-6x slower). Set by every rank: Fabric's launcher does so only for some."""
    return max(1, usable_cpus() // devices)


# -- the run ------------------------------------------------------------------------------


def _run(fabric, config: TrainConfig, started: float, notes: list[str]) -> None:
    """Set up, then train until max_iters, a stop request or too many bad steps."""
    run = _setup(fabric, config, notes)
    config, state, rank = run.config, run.state, fabric.global_rank
    step, tokens = state["step"], state["tokens"]
    if step >= config.max_iters:
        fabric.print(f"already at step {step}, --max_iters {config.max_iters}: nothing to train (raise --max_iters to go on)")
    stop = _StopSignals(config.max_time, announce=rank == 0, started=started)
    if step == 0 and (initial := _evaluate(fabric, run) | _evaluate_tasks(fabric, run)):
        run.log.write(0, tokens, initial)
        val = [f"val {initial['val_loss']:.4f} (ppl {initial['val_ppl']:.1f})"] if "val_loss" in initial else []
        fabric.print(" | ".join(["step 0", *val, *task_parts(initial)]))
    bar = progress_bar(total=config.max_iters, initial=step, desc="pretrain", unit="step", disable=rank != 0, dynamic_ncols=True)
    bad_steps = 0
    while step < config.max_iters:
        t0 = time.perf_counter()
        lr = _learning_rate(step, config)
        result = _train_step(fabric, run, lr)
        step += 1
        tokens += run.tokens_per_step
        _sync(fabric)
        step_time = time.perf_counter() - t0
        bar.update(1)
        if result.finite:
            bad_steps = 0
        elif not result.overflow:
            bad_steps += 1
        if result.overflow:
            fabric.print(f"step {step}: gradients overflow fp16 at loss scale {result.loss_scale:g}: update skipped, scale now {run.scaler.get_scale():g}")
        elif not result.finite:
            fabric.print(f"step {step}: non-finite loss {result.loss} or gradient norm {result.grad_norm}: update skipped ({bad_steps} in a row)")
        evaluate_now = step % config.eval_interval == 0 or step == config.max_iters
        if step % config.log_interval == 0 or evaluate_now or not result.finite:
            metrics = _step_metrics(fabric, run, result, lr, step_time) | (_evaluate(fabric, run) | _evaluate_tasks(fabric, run) if evaluate_now else {})
            run.log.write(step, tokens, metrics)
            bar.set_postfix_str(f"loss {metrics['loss']:.3f} {metrics['tokens_per_sec']:,.0f} tok/s", refresh=False)
            if rank == 0:
                bar.write(run.log.console_line(step, tokens, metrics))
        if bad_steps >= config.max_bad_steps:
            last = checkpoint.list_checkpoints(run.out_dir)
            raise PajamaError(f"stopped after {bad_steps} consecutive non-finite steps (lower --learning_rate?); last good checkpoint: {last[-1] if last else 'none'}")
        preempted = stop.requested(fabric)
        if step % config.save_interval == 0 or step == config.max_iters or preempted:
            path = _save(fabric, run, step, tokens)
            if rank == 0:
                bar.write(f"saved {path}")
        if preempted and step < config.max_iters:  # stopped on the last step: the run is done, nothing to requeue
            bar.close()
            run.log.close()
            fabric.print(f"stopping at step {step} ({stop.reason}); checkpoint saved; rerun the same command to resume")
            raise SystemExit(stop.exit_code)
    bar.close()
    run.log.close()
    fabric.print(f"done: {step} steps, {tokens:,} tokens; checkpoints in {run.out_dir / checkpoint.CHECKPOINTS}")


@dataclass
class _Training:
    """What a run holds once set up: the model and optimizer (Fabric-wrapped), the data, the
    state a checkpoint saves, and what each step needs to know."""

    config: TrainConfig
    model_config: ModelConfig
    model: Any
    optimizer: Any
    scaler: Any  # fp16 only: dynamic loss scaling; else None
    sampler: MixtureSampler
    val_splits: dict
    val_samples: list
    val_weights: dict[str, float]  # of each validation stream in the overall validation loss
    block: int  # tokens per sample: the context plus the next-token target
    accum: int  # micro-batches per optimizer step on each device
    doc_bos: int | None  # --document_mask: documents start at this id
    state: dict  # what a checkpoint holds
    meta: dict  # what a checkpoint's meta.json says
    tokenizer: Any  # the data's tokenizer, copied into every checkpoint; None if the data keeps none
    out_dir: Path
    log: MetricsLog
    tokens_per_step: int
    flops_per_token: int
    peak_flops: float | None
    tasks: Any = None  # --eval_tasks: pajama.evaluation.in_loop.TrainingTasks


def _setup(fabric, config: TrainConfig, notes: list[str]) -> _Training:
    """Data, model, optimizer and state (resumed when there is a checkpoint to resume)."""
    if fabric.device.type == "cpu":
        torch.set_num_threads(_cpu_threads(config.devices))
    for line in notes:
        fabric.print(line)
    _check_same_precision(fabric, config.precision)
    out_dir = Path(config.out_dir).expanduser().resolve()
    train_data, directory_weights = load_training_data(config.train_data_dir)
    val_data = load_prepared(config.val_data_dir) if config.val_data_dir else None
    # Rank 0 picks the checkpoint to resume from, so that every rank loads the same one.
    resuming = fabric.broadcast(_resume_path(config), src=0)
    model_config = _model_config(config, train_data, resuming)
    if train_data.vocab_size is None:
        fabric.print(f"note: {train_data.directory} has no manifest.json (lit-llama's prepare): assuming a vocabulary of {model_config.vocab_size}, LLaMA's")
    block = model_config.block_size + 1
    train_splits, val_splits = split_blocks(train_data, block, config.val_fraction, holdout=val_data is None)
    if val_data is not None:
        if val_data.tokenizer_sha256 != train_data.tokenizer_sha256:
            raise PajamaError(f"{val_data.directory} was prepared with another tokenizer than {train_data.directory}")
        val_splits, _ = split_blocks(val_data, block, 0.0, holdout=False)
    train_weights = stream_weights({n: s.stream.tokens for n, s in train_splits.items()}, config.mixture, directory_weights)
    # The overall validation loss weighs each stream as training samples it.
    val_weights = stream_weights({n: s.stream.tokens for n, s in val_splits.items()}, config.mixture, None if val_data else directory_weights) if val_splits else {}
    sampler = MixtureSampler(train_splits, train_weights, block, config.seed)
    world, rank = fabric.world_size, fabric.global_rank

    # Model: created without memory (meta) under FSDP, materialised sharded, then initialised.
    with fabric.init_module(empty_init=True):
        model = LLaMA(model_config)
    model.activation_checkpointing = config.activation_checkpointing
    if config.compile:
        for layer in model.layers:
            layer.compile()
    with warnings.catch_warnings():
        # Materialising runs each module's reset_parameters (random ops on DTensors, which warn on
        # CPU meshes, and none for the rotary tables); init_weights sets every value just below.
        warnings.filterwarnings("ignore", message="DTensor random operators")
        warnings.filterwarnings("ignore", message="Parameter initialization incomplete")  # the rotary tables: init_weights too
        model = fabric.setup(model)
    model.module.init_weights(config.seed)
    if config.initial_checkpoint is not None and resuming is None:  # a resumed run has its own weights
        _load_initial(model.module, config.initial_checkpoint, train_data)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        # Fused AdamW unscales fp16 gradients itself, which Fabric's clipping cannot work with.
        fused=fabric.device.type == "cuda" and config.precision != "16-mixed",
    )
    optimizer = fabric.setup_optimizers(optimizer)
    config = _choose_micro_batch(fabric, config, model, model_config, resuming)
    val_samples = validation_samples(val_splits, val_weights, config.eval_iters * config.micro_batch_size)
    accum = config.batch_size // (config.micro_batch_size * world)
    scaler = getattr(fabric.strategy.precision, "scaler", None)

    meta = {
        "model": asdict(model_config),
        "train": _jsonable(config),
        "tokenizer_sha256": train_data.tokenizer_sha256,
        "data": {name: s.tokens for name, s in train_data.streams.items()},
    }
    state = {"model": model, "optimizer": optimizer, "step": 0, "tokens": 0, "sampler": sampler.state_dict(), "rng": checkpoint.rng_state()}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    if resuming is not None:
        _resume(fabric, resuming, out_dir, state, meta)
    sampler.load_state_dict(state["sampler"])
    if scaler is not None:
        scaler.load_state_dict(state["grad_scaler"])
    if resuming is None:
        fabric.seed_everything(config.seed + rank)
    else:
        checkpoint.set_rng_state(state["rng"])
    # The tokenizer travels with the run, so that generate, evaluate and export find it.
    tokenizer = find_tokenizer(train_data.directory, train_data.tokenizer_sha256) if train_data.tokenizer_sha256 else None
    if tokenizer is None:
        fabric.print(f"note: {train_data.directory} keeps no copy of its tokenizer: give --tokenizer_path to generate and export")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(meta, indent=1))
        if tokenizer is not None:
            tokenizer.copy_to(out_dir)

    tasks = None
    if config.eval_tasks:
        from pajama.evaluation.in_loop import TrainingTasks

        tasks = TrainingTasks(
            fabric, config.eval_tasks, config.eval_task_limit, config.eval_task_include_path, model_config, tokenizer,
            batch_size=config.micro_batch_size, precision=config.precision,
        )  # fmt: skip

    tokens_per_step = config.batch_size * model_config.block_size
    fabric.print(
        f"model {model_config.name}: {model_config.num_parameters():,} parameters, context {model_config.block_size}, vocab {model_config.vocab_size}\n"
        f"data: {', '.join(f'{n} {s.tokens:,}' for n, s in train_data.streams.items())} tokens; "
        f"validation: {len(val_samples)} sequences\n"
        f"{_mixture_line(train_weights, config.mixture)}\n"
        f"{world} device(s) x {config.micro_batch_size} sequences x {accum} accumulation = {config.batch_size} sequences "
        f"({tokens_per_step:,} tokens) per step; {config.max_iters} steps"
        + (f"; resumed from {resuming} at step {state['step']}" if resuming else "")
    )
    return _Training(
        config=config, model_config=model_config, model=model, optimizer=optimizer, scaler=scaler, sampler=sampler,
        val_splits=val_splits, val_samples=val_samples, val_weights=val_weights, block=block, accum=accum,
        doc_bos=train_data.bos_id if config.document_mask else None, state=state, meta=meta, tokenizer=tokenizer, out_dir=out_dir,
        log=MetricsLog(out_dir, sorted(val_splits) + sorted({n.split('/', 1)[0] for n in val_splits if '/' in n}), config.logger, resume_step=state["step"], enabled=rank == 0, extra_columns=tasks.columns if tasks else ()),
        tokens_per_step=tokens_per_step, flops_per_token=model_config.flops_per_token(model_config.block_size),
        peak_flops=peak_flops(fabric.device, config.peak_tflops), tasks=tasks,
    )  # fmt: skip


@dataclass
class _StepResult:
    loss: float  # mean over the global batch
    grad_norm: float  # before clipping
    finite: bool  # loss and gradient norm both finite
    overflow: bool  # fp16: gradients overflowed at this loss scale, which the scaler handles (not a bad step)
    loss_scale: float | None  # fp16: the scale this step ran at
    data_time: float  # seconds spent reading batches


def _train_step(fabric, run: _Training, lr: float) -> _StepResult:
    """One optimizer step on this rank's share of the next global batch: forward and backward
    over the micro-batches (gradients synchronised on the last), clip, update."""
    config, model, optimizer, scaler = run.config, run.model, run.optimizer, run.scaler
    for group in optimizer.param_groups:
        group["lr"] = lr
    samples = run.sampler.draw(config.batch_size)
    share = run.accum * config.micro_batch_size
    mine = samples[fabric.global_rank * share : (fabric.global_rank + 1) * share]
    loss_sum = torch.zeros((), device=fabric.device)
    data_time = 0.0
    model.train()
    for micro in range(run.accum):
        td = time.perf_counter()
        batch = run.sampler.read(mine[micro * config.micro_batch_size : (micro + 1) * config.micro_batch_size])
        batch = torch.from_numpy(batch).to(fabric.device, non_blocking=True)
        data_time += time.perf_counter() - td
        with fabric.no_backward_sync(model, enabled=micro < run.accum - 1):
            logits = _logits(model, batch[:, :-1], run.doc_bos)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            fabric.backward(loss / run.accum)
        loss_sum += loss.detach()
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")  # inf: measure, don't clip
    grad_norm = _full(fabric.clip_gradients(model, optimizer, max_norm=max_norm, error_if_nonfinite=False))
    loss_avg = fabric.all_reduce(loss_sum / run.accum, reduce_op="mean")
    finite = bool(torch.isfinite(loss_avg)) and bool(torch.isfinite(grad_norm))
    # Under fp16, gradients that overflow at this loss scale are the scaler's to handle: it
    # skips the update and lowers the scale. Not a bad step: the model is fine.
    # Once the scale has collapsed below 1, overflowing gradients are the model's fault.
    loss_scale = scaler.get_scale() if scaler is not None else None
    overflow = scaler is not None and not finite and bool(torch.isfinite(loss_avg)) and loss_scale >= 1
    if finite or scaler is not None:
        optimizer.step()  # with a scaler: skipped on non-finite gradients, and the scale updated
    optimizer.zero_grad(set_to_none=True)
    return _StepResult(float(loss_avg), float(grad_norm), finite, overflow, loss_scale, data_time)


def _step_metrics(fabric, run: _Training, result: _StepResult, lr: float, step_time: float) -> dict[str, float]:
    world = fabric.world_size
    metrics = {
        "loss": result.loss,
        "lr": lr,
        "grad_norm": result.grad_norm,
        "tokens_per_sec": run.tokens_per_step / step_time,
        "tokens_per_sec_per_device": run.tokens_per_step / step_time / world,
        "step_time": step_time,
        "data_wait": result.data_time / step_time,
        "peak_memory_gb": peak_memory_gb(fabric.device),
        "skipped": 0 if result.finite else 1,
    }
    if result.loss_scale is not None:
        metrics["loss_scale"] = result.loss_scale
    if run.peak_flops:
        metrics["mfu"] = run.flops_per_token * run.tokens_per_step / step_time / (run.peak_flops * world)
    return metrics


def _save(fabric, run: _Training, step: int, tokens: int) -> Path:
    state = run.state
    state.update(step=step, tokens=tokens, sampler=run.sampler.state_dict(), rng=checkpoint.rng_state())
    if run.scaler is not None:
        state["grad_scaler"] = run.scaler.state_dict()
    _check_finite(fabric, run.model)
    return checkpoint.save(fabric, run.out_dir, step, state, run.meta | {"step": step, "tokens": tokens}, run.config.keep_last, run.tokenizer)


def _load_initial(model: LLaMA, path: Path, data: PreparedData) -> None:
    """Weights of another checkpoint; its shape must be this run's (context length aside)."""
    _, weights, meta = checkpoint.load_model_weights(path)
    sha = meta.get("tokenizer_sha256")
    if sha and data.tokenizer_sha256 and sha != data.tokenizer_sha256:
        raise PajamaError(f"{path} was trained with another tokenizer than the one {data.directory} was prepared with")
    model.load_full_weights(weights)


def _model_config(config: TrainConfig, data: PreparedData, resuming: Path | None) -> ModelConfig:
    """The preset (or the initial checkpoint's shape), with the data's vocabulary."""
    if config.initial_checkpoint is not None:
        source = resuming or config.initial_checkpoint  # once resumed, the run's own checkpoint has that shape
        base = ModelConfig(**checkpoint.read_meta(source)["model"])
        # Published models often have more embedding rows than their tokenizer has entries (padding): fine.
        if data.vocab_size and data.vocab_size > base.vocab_size:
            raise PajamaError(f"{source}: vocabulary {base.vocab_size}, but {data.directory} was prepared with a tokenizer of {data.vocab_size}")
        return base.replace(block_size=config.block_size or base.block_size)
    base = _preset_shape(config)
    vocab = data.vocab_size or base.vocab_size
    return base.replace(vocab_size=vocab, block_size=config.block_size or base.block_size)


def _preset_shape(config: TrainConfig) -> ModelConfig:
    """The preset, with --model_overrides applied."""
    base = preset(config.model_name)
    if not config.model_overrides:
        return base
    if config.initial_checkpoint is not None:
        raise PajamaError("--model_overrides with --initial_checkpoint: the shape is the checkpoint's")
    known = {f.name for f in fields(ModelConfig)} - {"name", "vocab_size", "family"}
    unknown = sorted(set(config.model_overrides) - known)
    if unknown:
        raise PajamaError(f"--model_overrides: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return base.replace(**config.model_overrides)


def _choose_micro_batch(fabric, config: TrainConfig, model, model_config: ModelConfig, resuming: Path | None) -> TrainConfig:
    """``config`` with ``--micro_batch_size auto`` resolved: the largest micro-batch that fits
    (GPU: tried; CPU: the memory plan against free RAM), keeping the global batch where it
    divides. A resumed run keeps the micro-batch it began with."""
    if config.micro_batch_size != "auto":
        return config
    world = fabric.world_size
    earlier = checkpoint.read_meta(resuming)["train"] if resuming is not None else {}
    if isinstance(earlier.get("micro_batch_size"), int) and earlier["batch_size"] % (earlier["micro_batch_size"] * world) == 0:
        fabric.print(f"micro-batch {earlier['micro_batch_size']} (auto), as the run began")
        return replace(config, micro_batch_size=earlier["micro_batch_size"], batch_size=earlier["batch_size"])
    limit = config.batch_size // world if config.batch_size % world == 0 else config.batch_size
    strategy = "fsdp" if type(fabric.strategy).__name__ == "ModelParallelStrategy" else "single"
    plan = functools.partial(
        memory.largest_micro_batch, model_config, world_size=world, seq_len=model_config.block_size, strategy=strategy,
        activation_checkpointing=config.activation_checkpointing, precision=config.precision,
    )  # fmt: skip
    if fabric.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(fabric.device)
        start = max(1, min(limit, 2 * plan(free + torch.cuda.memory_allocated(fabric.device), limit=limit)))  # the plan is a guide here
        start = int(fabric.all_reduce(torch.tensor(start, device=fabric.device), reduce_op="min"))  # the same tries on every rank
        largest = memory.largest_that_fits(_halvings(start), functools.partial(_runs, fabric, model, model_config))
        torch.cuda.reset_peak_memory_stats(fabric.device)  # the tries are not the run
        how = f"tried on {torch.cuda.get_device_name(fabric.device)}"
    else:
        # The weights are already allocated, and counted by the plan: add them back to what is free.
        local_bytes = sum(_local(p).numel() * p.element_size() for p in model.parameters())
        budget = CPU_MEMORY_SHARE * (available_memory() or 0) / config.devices + local_bytes
        largest = plan(budget, limit=limit)
        how = f"memory plan within {budget / memory.GB:.1f} GiB ({CPU_MEMORY_SHARE:.0%} of the free RAM per process)"
    largest = int(fabric.all_reduce(torch.tensor(largest, device=fabric.device), reduce_op="min"))  # every rank the same
    if largest == 0:
        raise PajamaError(f"--micro_batch_size auto: not even one sequence of {model_config.block_size} tokens fits ({how}); try --activation_checkpointing true, more devices, or a smaller --block_size")
    micro, batch, note = memory.fit_batch(config.batch_size, world, largest)
    fabric.print(f"micro-batch {micro} (auto: {largest} fit{'s' if largest == 1 else ''}, {how})" + (f"; {note}" if note else ""))
    return replace(config, micro_batch_size=micro, batch_size=batch)


def _halvings(start: int) -> list[int]:
    out = [start]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def _runs(fabric, model, model_config: ModelConfig, micro: int) -> bool:
    """Whether a forward and backward pass of ``micro`` sequences fits in GPU memory, with room
    held back for AdamW's two moments (allocated at the first step). All ranks agree. Without
    gradient synchronisation: no collective is left pending when a try runs out of memory in the
    backward pass, and unreduced gradients are what accumulation steps hold anyway. A rank that
    runs out of memory while the others do not can still leave them waiting in a collective:
    ranks are alike, so they fail alike."""
    ok = True
    try:
        reserve = torch.empty(2 * sum(_local(p).numel() for p in model.parameters()), device=fabric.device)
        tokens = torch.zeros(micro, model_config.block_size + 1, dtype=torch.long, device=fabric.device)
        with fabric.no_backward_sync(model):
            logits = model(tokens[:, :-1])
            fabric.backward(F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()))
    except torch.cuda.OutOfMemoryError:
        ok = False
    reserve = tokens = logits = None  # noqa: F841 (freed before the next try)
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    return bool(fabric.all_reduce(torch.tensor(float(ok), device=fabric.device), reduce_op="min") > 0)


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p


def _check_same_precision(fabric, precision: str) -> None:
    """Processes that measured this CPU each chose a precision: they must have chosen the same."""
    code = torch.tensor(float(memory.PRECISIONS.index(precision)), device=fabric.device)
    if fabric.all_reduce(code, reduce_op="max") != fabric.all_reduce(code, reduce_op="min"):
        raise PajamaError("the processes of this run chose different precisions (a CPU measured at the margin); give --precision")


def _mixture_line(probabilities: dict[str, float], weights: dict[str, float] | None) -> str:
    """The sampling proportions in use, and the weights that have no effect."""
    line = "mixture: " + ", ".join(f"{n} {w:.1%}" for n, w in probabilities.items() if w > 0)
    unused = [n for n, w in probabilities.items() if w == 0]
    subsets = {n.rsplit("/", 1)[-1] for n in probabilities}
    absent = sorted(set(weights if weights is not None else LLAMA_WEIGHTS) - subsets)
    if unused:
        line += f"; not trained on (weight 0): {', '.join(unused)}"
    if absent:
        line += f"; not in the data: {', '.join(absent)}"
    return line


def _jsonable(config: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def _learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not config.decay_lr:
        return config.learning_rate
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / config.warmup_iters
    decay_iters = config.lr_decay_iters or config.max_iters
    if step >= decay_iters:
        return config.min_lr
    ratio = (step - config.warmup_iters) / max(1, decay_iters - config.warmup_iters)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (config.learning_rate - config.min_lr)


def _logits(model, inputs: torch.Tensor, doc_bos: int | None) -> torch.Tensor:
    """The model's logits; with ``doc_bos``, attending only within documents (they start at that id)."""
    return model(inputs, doc_ids=document_ids(inputs, doc_bos) if doc_bos is not None else None)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _sync(fabric) -> None:
    if fabric.device.type == "cuda":
        torch.cuda.synchronize()


def _check_finite(fabric, model) -> None:
    """Refuse to save non-finite weights; every rank decides together (the save is collective)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(_local(p)).all()]
    if fabric.all_reduce(torch.tensor(float(bool(bad)), device=fabric.device), reduce_op="max") > 0:
        raise PajamaError(f"parameter {bad[0] if bad else 'on another rank'} holds non-finite values; not saving a checkpoint")


@torch.no_grad()
def _evaluate(fabric, run: _Training) -> dict[str, float]:
    """Mean loss per subset and overall (mixture-weighted) on the fixed validation sequences,
    shared out over the ranks and summed across them. Every rank runs the same number of
    forward passes (FSDP needs it); padding entries carry zero weight."""
    config, model, val_splits, val_samples, block = run.config, run.model, run.val_splits, run.val_samples, run.block
    if not val_samples:
        return {}
    model.eval()
    world, rank, mbs = fabric.world_size, fabric.global_rank, config.micro_batch_size
    names = sorted(val_splits)
    per_rank = math.ceil(len(val_samples) / world)
    per_rank = math.ceil(per_rank / mbs) * mbs
    mine = val_samples[rank * per_rank : (rank + 1) * per_rank]
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine = mine + [val_samples[0]] * (per_rank - len(mine))
    sums = torch.zeros(len(names), device=fabric.device, dtype=torch.float64)
    counts = torch.zeros(len(names), device=fabric.device, dtype=torch.float64)
    for start in range(0, per_rank, mbs):
        batch_samples = mine[start : start + mbs]
        batch = np.stack([val_splits[n].stream.read(b * block, block) for n, b in batch_samples])
        batch = torch.from_numpy(batch).to(fabric.device)
        logits = _logits(model, batch[:, :-1], run.doc_bos)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="none").view(len(batch_samples), -1).mean(1)
        for (name, _), loss, w in zip(batch_samples, losses, weights[start : start + mbs]):
            i = names.index(name)
            sums[i] += w * loss.double()
            counts[i] += w
    sums = fabric.all_reduce(sums, reduce_op="sum")
    counts = fabric.all_reduce(counts, reduce_op="sum")
    per_stream = {names[i]: float(sums[i] / counts[i]) for i in range(len(names)) if counts[i] > 0}
    model.train()
    overall = _weighted(per_stream, run.val_weights)
    out = {"val_loss": overall, "val_ppl": math.exp(min(overall, 50.0))}
    out.update({f"val_loss/{n}": v for n, v in per_stream.items()})
    directories = sorted({n.split("/", 1)[0] for n in per_stream if "/" in n})
    for d in directories:  # several training directories: each one's loss too
        out[f"val_loss/{d}"] = _weighted({n: v for n, v in per_stream.items() if n.startswith(d + "/")}, run.val_weights)
    return out


def _weighted(losses: dict[str, float], weights: dict[str, float]) -> float:
    """Mean of ``losses`` by ``weights``, renormalised over the streams present."""
    total = sum(weights[n] for n in losses)
    if total <= 0:  # only streams not trained on (weight 0) hold validation data
        return sum(losses.values()) / len(losses)
    return sum(weights[n] * v for n, v in losses.items()) / total


def _evaluate_tasks(fabric, run: _Training) -> dict[str, float]:
    """--eval_tasks: each task's metrics and the time they took (every rank takes part)."""
    return run.tasks.evaluate(fabric, run.model) if run.tasks is not None else {}


def _resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (see --resume); None for a fresh start."""
    if config.resume == "none":
        return None
    if config.resume == "auto":
        found = checkpoint.list_checkpoints(Path(config.out_dir).expanduser().resolve())
        return found[-1] if found else None
    return checkpoint.resolve(Path(config.resume))


def _resume(fabric, path: Path, out_dir: Path, state: dict, meta: dict) -> None:
    """Load checkpoint ``path`` into ``state``, once it is known to be of this run."""
    earlier = checkpoint.read_meta(path)
    problems = []
    if earlier["model"] != meta["model"]:
        diff = {k: (earlier["model"].get(k), v) for k, v in meta["model"].items() if earlier["model"].get(k) != v}
        problems.append(f"model differs ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())})")
    if earlier.get("tokenizer_sha256") != meta["tokenizer_sha256"]:
        problems.append("the data was prepared with another tokenizer")
    if earlier.get("data") != meta["data"]:
        before, now = earlier.get("data") or {}, meta["data"]
        what = ", ".join(f"{n} {before.get(n, 0):,} -> {now.get(n, 0):,}" for n in sorted(set(before) | set(now)) if before.get(n) != now.get(n))
        problems.append(f"the training data differs (tokens per subset: {what})")
    # These decide which sequences are trained on and which are held out.
    for key in ("seed", "mixture", "val_fraction", "val_data_dir"):
        if earlier["train"].get(key) != meta["train"][key]:
            problems.append(f"--{key} was {earlier['train'].get(key)}, now {meta['train'][key]}")
    if problems:
        raise PajamaError(f"cannot resume from {path}: {'; '.join(problems)}. Use another --out_dir, or --resume none to start over")
    # A run that switches to fp16 on resume starts with a fresh loss scale.
    fresh = {"grad_scaler": state.pop("grad_scaler")} if "grad_scaler" in state and earlier["train"].get("precision") != "16-mixed" else {}
    fabric.load(path / checkpoint.STATE, state)
    state.update(fresh)
    # Going back to an earlier checkpoint of this run: the later ones are of the abandoned branch.
    later = [p for p in checkpoint.list_checkpoints(out_dir) if checkpoint.step_of(p) > earlier["step"]]
    if later and fabric.global_rank == 0:
        aside = out_dir / checkpoint.CHECKPOINTS / "abandoned"
        aside.mkdir(exist_ok=True)
        for p in later:
            os.replace(p, aside / p.name)
        fabric.print(f"note: moved {len(later)} later checkpoint(s) of the run this one left behind to {aside}")
    fabric.barrier()


class _StopSignals:
    """SIGTERM / SIGUSR1 (SLURM's warning before a time limit or preemption) and --max_time."""

    def __init__(self, max_time: str | None, announce: bool, started: float) -> None:
        self.announce = announce
        self.deadline = started + _parse_duration(max_time) if max_time else None
        self.started = time.monotonic()
        self.longest_step = 0.0
        self.last = self.started
        self.signal: str | None = None
        self.reason = ""
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.signal == "SIGINT":  # pressed twice: stop now, the last checkpoint stays
                raise KeyboardInterrupt
            if self.announce:
                print("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        self.signal = signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signal == "SIGINT" else EXIT_PREEMPTED

    def requested(self, fabric) -> bool:
        """Whether any rank was asked to stop (all ranks must agree: the save is collective)."""
        now = time.monotonic()
        self.longest_step = max(self.longest_step, now - self.last)
        self.last = now
        local = self.signal is not None
        # Leave time for two more steps and a checkpoint before the deadline.
        if self.deadline is not None and now + 3 * self.longest_step >= self.deadline:
            local = True
            self.reason = "max_time reached"
        flag = fabric.all_reduce(torch.tensor(float(local), device=fabric.device), reduce_op="max")
        if flag > 0 and not self.reason:
            self.reason = f"received {self.signal}" if self.signal else "another rank was asked to stop"
        return bool(flag > 0)
