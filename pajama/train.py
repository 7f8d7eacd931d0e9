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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pajama import PajamaError, checkpoint, usable_cpus
from pajama.loader import MixtureSampler, PreparedData, load_prepared, mixture, split_blocks, validation_samples
from pajama.metrics import MetricsLog, peak_flops, peak_memory_gb
from pajama.model import LLaMA, ModelConfig, preset
from pajama.progress import progress_bar
from pajama.sources import LLAMA_WEIGHTS

# Lightning is imported only where a run starts (``_fabric``): it takes seconds to import, which
# every other command, and ``--help``, can skip. (Not even for type hints: the CLI's signature
# parser runs ``if TYPE_CHECKING:`` blocks.) Functions take that ``lightning.Fabric`` as ``fabric``.
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to continue (requeue)
EXIT_INTERRUPTED = 130  # Ctrl-C: checkpoint written, as for any command a user interrupts
PRECISIONS = ("bf16-mixed", "bf16-true", "32-true")


@dataclass
class TrainConfig:
    """Pre-train a LLaMA model on prepared RedPajama chunks (``pajama prepare``).

    Rerunning the same command resumes from the newest checkpoint in ``out_dir``.
    """

    train_data_dir: Path = Path("data/lit-redpajama")
    """Directory written by ``pajama prepare`` (or lit-llama's prepare)."""
    val_data_dir: Path | None = None
    """Separate prepared validation data; default: hold out the tail of each training subset."""
    model_name: str = "7B"
    """Model preset (``pajama model`` lists them)."""
    out_dir: Path = Path("out/training")
    """Checkpoints, metrics.csv and config.json go here."""
    devices: int = 1
    """Devices per node."""
    num_nodes: int = 1
    """Number of nodes."""
    accelerator: str = "auto"
    """auto, cpu, cuda or mps."""
    precision: str | None = None
    """bf16-mixed (fp32 weights, bf16 compute), bf16-true, 32-true; default bf16-mixed where supported."""
    strategy: str = "auto"
    """auto (one device: single; more: fsdp), single, ddp or fsdp (FSDP2, one shard unit per block)."""
    learning_rate: float = 6e-4
    batch_size: int = 125
    """Global batch size in sequences, across all devices and nodes."""
    micro_batch_size: int = 5
    """Sequences per device per forward/backward pass."""
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
    fabric = _fabric(config)
    fabric.launch()
    _run(fabric, config, started)


# -- setup --------------------------------------------------------------------------------


def _validate(config: TrainConfig) -> None:
    for name in ("batch_size", "micro_batch_size", "max_iters", "save_interval", "eval_interval", "eval_iters", "log_interval", "devices", "num_nodes"):
        if getattr(config, name) < 1:
            raise PajamaError(f"--{name} must be >= 1, got {getattr(config, name)}")
    world = config.devices * config.num_nodes
    if config.batch_size % (config.micro_batch_size * world):
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
    if config.precision not in (None, *PRECISIONS):
        raise PajamaError(f"--precision must be {', '.join(PRECISIONS)}, got {config.precision!r}")
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
    preset(config.model_name)
    load_prepared(config.train_data_dir)
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


def _fabric(config: TrainConfig):
    import lightning as L
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
    if precision is None:
        cuda_without_bf16 = torch.cuda.is_available() and config.accelerator != "cpu" and not torch.cuda.is_bf16_supported()
        precision = "32-true" if cuda_without_bf16 else "bf16-mixed"
    strategies = {
        "single": "auto",
        "ddp": "ddp",
        "fsdp": lambda: ModelParallelStrategy(
            parallelize_fn=functools.partial(_shard, bf16_compute=precision == "bf16-mixed"), data_parallel_size=world, tensor_parallel_size=1
        ),
    }
    chosen = strategies[strategy]
    return L.Fabric(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=chosen() if callable(chosen) else chosen,
        precision=precision,
    )


def _shard(model: LLaMA, device_mesh, bf16_compute: bool) -> LLaMA:
    """FSDP2: one shard unit per transformer block, then the root (embeddings, norm, head).

    With bf16 compute, blocks are gathered in bf16 (fp32 shards stay the master weights, and
    gradients are reduced in fp32): half the communication, and autocast then has no fp32
    weights to cast, so no bf16 copy of every layer's weights is held until the backward pass.
    """
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = device_mesh["data_parallel"]
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16_compute else MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _set_threads(fabric, devices: int) -> None:
    """On CPU, split the cores between this node's processes (oversubscription is 3-6x slower);
    every rank sets it, since Fabric's launcher does so only for some."""
    if fabric.device.type == "cpu":
        torch.set_num_threads(max(1, usable_cpus() // devices))


# -- the run ------------------------------------------------------------------------------


def _run(fabric, config: TrainConfig, started: float) -> None:
    _set_threads(fabric, config.devices)
    out_dir = Path(config.out_dir).expanduser().resolve()
    train_data = load_prepared(config.train_data_dir)
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
    sampler = MixtureSampler(train_splits, config.mixture, block, config.seed)
    val_samples = validation_samples(val_splits, config.mixture, config.eval_iters * config.micro_batch_size)
    world, rank = fabric.world_size, fabric.global_rank
    accum = config.batch_size // (config.micro_batch_size * world)

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
        fused=fabric.device.type == "cuda",
    )
    optimizer = fabric.setup_optimizers(optimizer)

    meta = {
        "model": asdict(model_config),
        "train": _jsonable(config),
        "tokenizer_sha256": train_data.tokenizer_sha256,
        "data": {name: s.tokens for name, s in train_data.streams.items()},
    }
    state = {"model": model, "optimizer": optimizer, "step": 0, "tokens": 0, "sampler": sampler.state_dict(), "rng": checkpoint.rng_state()}
    if resuming is not None:
        _resume(fabric, resuming, out_dir, state, meta)
    sampler.load_state_dict(state["sampler"])
    if resuming is None:
        fabric.seed_everything(config.seed + rank)
    else:
        checkpoint.set_rng_state(state["rng"])
    step, tokens = state["step"], state["tokens"]
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(meta, indent=1))

    tokens_per_step = config.batch_size * model_config.block_size
    flops_per_token = model_config.flops_per_token(model_config.block_size)
    peak = peak_flops(fabric.device, config.peak_tflops)
    log = MetricsLog(out_dir, sorted(val_splits), config.logger, resume_step=step, enabled=rank == 0)
    fabric.print(
        f"model {model_config.name}: {model_config.num_parameters():,} parameters, context {model_config.block_size}, vocab {model_config.vocab_size}\n"
        f"data: {', '.join(f'{n} {s.tokens:,}' for n, s in train_data.streams.items())} tokens; "
        f"validation: {len(val_samples)} sequences\n"
        f"{_mixture_line(sampler.names, config.mixture)}\n"
        f"{world} device(s) x {config.micro_batch_size} sequences x {accum} accumulation = {config.batch_size} sequences "
        f"({tokens_per_step:,} tokens) per step; {config.max_iters} steps"
        + (f"; resumed from {resuming} at step {step}" if resuming else "")
    )
    if step >= config.max_iters:
        fabric.print(f"already at step {step}, --max_iters {config.max_iters}: nothing to train (raise --max_iters to go on)")

    stop = _StopSignals(config.max_time, announce=rank == 0, started=started)
    if step == 0:
        initial = _evaluate(fabric, model, val_splits, val_samples, config, block)
        if initial:
            log.write(0, tokens, initial)
            fabric.print(f"step 0 | val {initial['val_loss']:.4f} (ppl {initial['val_ppl']:.1f})")
    bar = progress_bar(total=config.max_iters, initial=step, desc="pretrain", unit="step", disable=rank != 0, dynamic_ncols=True)
    bad_steps = 0
    while step < config.max_iters:
        t0 = time.perf_counter()
        lr = _learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        samples = sampler.draw(config.batch_size)
        mine = samples[rank * accum * config.micro_batch_size : (rank + 1) * accum * config.micro_batch_size]
        loss_sum = torch.zeros((), device=fabric.device)
        data_time = 0.0
        model.train()
        for micro in range(accum):
            td = time.perf_counter()
            batch = sampler.read(mine[micro * config.micro_batch_size : (micro + 1) * config.micro_batch_size])
            batch = torch.from_numpy(batch).to(fabric.device, non_blocking=True)
            data_time += time.perf_counter() - td
            with fabric.no_backward_sync(model, enabled=micro < accum - 1):
                logits = model(batch[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
                fabric.backward(loss / accum)
            loss_sum += loss.detach()
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")  # inf: measure, don't clip
        grad_norm = fabric.clip_gradients(model, optimizer, max_norm=max_norm, error_if_nonfinite=False)
        grad_norm = _full(grad_norm)
        loss_avg = fabric.all_reduce(loss_sum / accum, reduce_op="mean")
        finite = bool(torch.isfinite(loss_avg)) and bool(torch.isfinite(grad_norm))
        if finite:
            optimizer.step()
            bad_steps = 0
        else:
            bad_steps += 1
            fabric.print(f"step {step + 1}: non-finite loss {float(loss_avg)} or gradient norm {float(grad_norm)}: update skipped ({bad_steps} in a row)")
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += tokens_per_step
        _sync(fabric)
        step_time = time.perf_counter() - t0
        bar.update(1)

        evaluate_now = step % config.eval_interval == 0 or step == config.max_iters
        if step % config.log_interval == 0 or evaluate_now or not finite:
            metrics = {
                "loss": float(loss_avg),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_sec": tokens_per_step / step_time,
                "tokens_per_sec_per_device": tokens_per_step / step_time / world,
                "step_time": step_time,
                "data_wait": data_time / step_time,
                "peak_memory_gb": peak_memory_gb(fabric.device),
                "skipped": 0 if finite else 1,
            }
            if peak:
                metrics["mfu"] = flops_per_token * tokens_per_step / step_time / (peak * world)
            if evaluate_now:
                metrics.update(_evaluate(fabric, model, val_splits, val_samples, config, block))
            log.write(step, tokens, metrics)
            bar.set_postfix_str(f"loss {metrics['loss']:.3f} {metrics['tokens_per_sec']:,.0f} tok/s", refresh=False)
            if rank == 0:
                bar.write(log.console_line(step, tokens, metrics))

        if bad_steps >= config.max_bad_steps:
            last = checkpoint.list_checkpoints(out_dir)
            raise PajamaError(
                f"stopped after {bad_steps} consecutive non-finite steps (lower --learning_rate?); "
                f"last good checkpoint: {last[-1] if last else 'none'}"
            )
        preempted = stop.requested(fabric)
        if step % config.save_interval == 0 or step == config.max_iters or preempted:
            state.update(step=step, tokens=tokens, sampler=sampler.state_dict(), rng=checkpoint.rng_state())
            _check_finite(fabric, model)
            path = checkpoint.save(fabric, out_dir, step, state, meta | {"step": step, "tokens": tokens}, config.keep_last)
            if rank == 0:
                bar.write(f"saved {path}")
        if preempted and step < config.max_iters:  # stopped on the last step: the run is done, nothing to requeue
            bar.close()
            log.close()
            fabric.print(f"stopping at step {step} ({stop.reason}); checkpoint saved; rerun the same command to resume")
            raise SystemExit(stop.exit_code)
    bar.close()
    log.close()
    fabric.print(f"done: {step} steps, {tokens:,} tokens; checkpoints in {out_dir / checkpoint.CHECKPOINTS}")


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
        if data.vocab_size and data.vocab_size != base.vocab_size:
            raise PajamaError(f"{source}: vocabulary {base.vocab_size}, but {data.directory} was prepared with {data.vocab_size}")
    else:
        base = preset(config.model_name)
    vocab = data.vocab_size or base.vocab_size
    return base.replace(vocab_size=vocab, block_size=config.block_size or base.block_size)


def _mixture_line(names: list[str], weights: dict[str, float] | None) -> str:
    """The sampling proportions in use, and the weights that have no effect."""
    p = mixture(names, weights)
    line = "mixture: " + ", ".join(f"{n} {w:.1%}" for n, w in zip(names, p) if w > 0)
    unused = [n for n, w in zip(names, p) if w == 0]
    absent = sorted(set(weights if weights is not None else LLAMA_WEIGHTS) - set(names))
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


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _sync(fabric) -> None:
    if fabric.device.type == "cuda":
        torch.cuda.synchronize()


def _check_finite(fabric, model) -> None:
    """Refuse to save non-finite weights; every rank decides together (the save is collective)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()]
    if fabric.all_reduce(torch.tensor(float(bool(bad)), device=fabric.device), reduce_op="max") > 0:
        raise PajamaError(f"parameter {bad[0] if bad else 'on another rank'} holds non-finite values; not saving a checkpoint")


@torch.no_grad()
def _evaluate(fabric, model, val_splits: dict, val_samples: list, config: TrainConfig, block: int) -> dict[str, float]:
    """Mean loss per subset and overall (mixture-weighted) on the fixed validation sequences,
    shared out over the ranks and summed across them. Every rank runs the same number of
    forward passes (FSDP needs it); padding entries carry zero weight."""
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
        logits = model(batch[:, :-1])
        losses = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="none").view(len(batch_samples), -1).mean(1)
        for (name, _), loss, w in zip(batch_samples, losses, weights[start : start + mbs]):
            i = names.index(name)
            sums[i] += w * loss.double()
            counts[i] += w
    sums = fabric.all_reduce(sums, reduce_op="sum")
    counts = fabric.all_reduce(counts, reduce_op="sum")
    from pajama.loader import mixture

    present = [i for i in range(len(names)) if counts[i] > 0]
    p = mixture([names[i] for i in present], config.mixture)
    per_subset = {names[i]: float(sums[i] / counts[i]) for i in present}
    overall = float(sum(pi * per_subset[names[i]] for pi, i in zip(p, present)))
    model.train()
    out = {"val_loss": overall, "val_ppl": math.exp(min(overall, 50.0))}
    out.update({f"val_loss/{n}": v for n, v in per_subset.items()})
    return out


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
    fabric.load(path / checkpoint.STATE, state)
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
