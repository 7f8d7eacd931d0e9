"""What a training run is asked to do: ``TrainConfig`` (the flags of ``pajama pretrain``), its
checks before any process starts, and the model shape it resolves to.

Every step count (max_iters, warmup_iters, lr_decay_iters, save_interval, eval_interval,
log_interval) is in optimizer steps; one optimizer step consumes ``batch_size`` sequences
across all devices, in micro-batches of ``micro_batch_size`` per device with gradient
accumulation derived from the world size. Budgets in tokens (max_tokens, warmup_tokens,
decay_tokens, a stage's start_tokens) become steps of ``batch_size x block_size`` tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pajama import PajamaError, checkpoint, memory
from pajama.hardware import device_type
from pajama.loader import PreparedData, load_training_data, verify_prepared
from pajama.metrics import parse_loggers
from pajama.model import RECOMPUTE
from pajama.model_config import ModelConfig, preset
from pajama.training.batch import split_batch

# What a run that gives neither the steps nor the tokens gets: the seed's recipe.
DEFAULT_MAX_ITERS = 600000
DEFAULT_WARMUP_ITERS = 2000
DEFAULT_DECAY_FRACTION = 0.2  # wsd


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
    max_iters: int | None = None
    """Optimizer steps to train for (default 600000; or give --max_tokens)."""
    max_tokens: int | None = None
    """Tokens to train for, instead of --max_iters: that many divided by batch_size x block_size steps, rounded up (printed at the start)."""
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    decay_lr: bool = True
    warmup_iters: int | None = None
    """Linear warm-up, in optimizer steps (default 2000; or give --warmup_tokens)."""
    warmup_tokens: int | None = None
    """Linear warm-up over this many tokens, instead of --warmup_iters."""
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """After warm-up: cosine (decay to min_lr at lr_decay_iters), wsd (stable at learning_rate, then decay to min_lr over the run's last --decay_fraction or --decay_tokens), or constant."""
    lr_decay_iters: int | None = None
    """Cosine decay ends here, in optimizer steps (default: max_iters)."""
    decay_fraction: float | None = None
    """wsd: the share of the run, at its end, over which the learning rate decays to min_lr (default 0.2)."""
    decay_tokens: int | None = None
    """wsd: decay over the run's last this many tokens, instead of --decay_fraction; with --decay_from: the cool-down's length."""
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt"
    """wsd: the decay's shape, linear or 1-sqrt (lr = min_lr + (1 - sqrt(t)) (peak - min_lr), t from 0 to 1 over the decay)."""
    decay_from: Path | None = None
    """Cool down from this checkpoint of a wsd (or constant) run, into a new --out_dir: its model, optimizer, step and data position, the learning rate decaying from the one it had reached to min_lr over --decay_tokens. The source run is left as it is."""
    min_lr: float = 6e-5
    save_interval: int | str = 1000
    """Optimizer steps between checkpoints, or a duration between them (90s, 30m, 2h, HH:MM:SS); one is also written at the end."""
    async_checkpoint: bool = False
    """Write checkpoints in the background: the state is copied to CPU memory, training goes on while it is written (one save at a time), and it is renamed into place once complete."""
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
    stages: list[dict[str, Any]] | None = None
    """Data stages: the run changes its training data at given token counts, keeping model, optimizer and step; a list of {start_tokens: N, train_data_dir: ..., mixture: ...} (a stage that gives no train_data_dir or mixture keeps the previous stage's; before the first, --train_data_dir and --mixture). Each stage's sample order follows from --seed and the stage; validation stays on the first stage's data."""
    val_fraction: float = 0.005
    """Share of each subset's sequences held out for validation when no val_data_dir is given (0: no validation)."""
    seed: int = 1337
    resume: str = "auto"
    """auto (newest checkpoint in out_dir, else start fresh), none, or a checkpoint path."""
    keep_last: int = 3
    """Checkpoints to keep (0: all)."""
    compile: bool = False
    """torch.compile each transformer block."""
    activation_checkpointing: str = "none"
    """What each block recomputes in the backward pass to save memory: none, full (keeps only each block's input), selective (keeps matrix products and attention, recomputes the element-wise work), or auto (the least recompute with which the micro-batch fits); true and false mean full and none."""
    dry_run: bool = False
    """Rehearse the run without its hardware: trace one step of the real model at the configured world size with fake tensors (nothing allocated, no data read, no GPU needed) and print per-device memory, FLOPs, communication, checkpoint size and an estimated time; refused as the run would be if it does not fit or divide."""
    dry_run_gpu: str | None = None
    """GPU a dry run plans for: h100, h200, a100-80g or a100-40g (its memory, and peak figures for the time estimate); given, the dry run plans for CUDA (default with --accelerator cuda: h100)."""
    accumulate_unsharded: bool = False
    """FSDP with gradient accumulation: keep each micro-batch's gradients unsharded (fp32, the whole model's size on every device) and reduce them once per step: less communication, more memory. Default: reduce-scatter after every micro-batch, so a device holds only its shard of the gradients."""
    document_mask: bool = False
    """Each token attends only to earlier tokens of its own document (packed sequences; documents start at BOS), through an explicit attention mask."""
    max_time: str | None = None
    """Wall-clock budget from the start of the command ("HH:MM:SS", "D-HH:MM:SS" or seconds): checkpoint and exit 75 before it runs out."""
    collective_timeout: str | None = None
    """How long a rank waits for the others in a collective (seconds, 90s, 10m, HH:MM:SS) before the run ends with exit 76, naming the rank that died or hung; a step slower than half of it (or than 20x the recent median, and a minute) counts as a hang, and each rank's Python stacks go to out_dir/failures. Default 10m on GPUs, 5m on CPUs."""
    max_restarts: int = 0
    """Restart the run up to this many times when a rank dies or hangs, each time resuming from the newest complete checkpoint (under pajama's own launch; under torchrun give its --max-restarts, under SLURM requeue: see examples/)."""
    verify_data: bool = False
    """Check every prepared chunk file against its recorded checksums before training (reads all the data once)."""
    max_bad_steps: int = 5
    """Stop after this many consecutive steps with a non-finite loss or gradient norm."""
    logger: str | list[str] = "csv"
    """Where metrics go: csv (metrics.csv, always written), tensorboard, wandb; several comma-separated, e.g. csv,tensorboard,wandb."""
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else pajama); W&B's other variables (WANDB_ENTITY, WANDB_MODE, WANDB_DIR ...) apply as usual."""
    run_name: str | None = None
    """The run's name in W&B (default: $WANDB_NAME, else out_dir's name)."""
    peak_tflops: float | None = None
    """Peak TFLOP/s of one device for MFU (default: known GPUs; unknown devices report no MFU)."""
    initial_checkpoint: Path | None = None
    """Start from these weights (a pajama checkpoint, e.g. from ``pajama import``) with a fresh optimizer at step 0."""


def recompute_mode(value: str | bool) -> str:
    """--activation_checkpointing as one of none, full, selective, auto (true/false: full/none)."""
    mode = {"true": "full", "false": "none"}.get(str(value).lower(), str(value).lower())
    if mode not in (*RECOMPUTE, "auto"):
        raise PajamaError(f"--activation_checkpointing must be none, full, selective or auto (or true/false), got {value!r}")
    return mode


def validate(config: TrainConfig) -> None:
    recompute_mode(config.activation_checkpointing)
    for name in ("batch_size", "eval_interval", "eval_iters", "log_interval", "devices", "num_nodes"):
        if getattr(config, name) < 1:
            raise PajamaError(f"--{name} must be >= 1, got {getattr(config, name)}")
    validate_budgets(config)
    save_every(config.save_interval)
    if config.collective_timeout is not None or not config.dry_run:  # its default depends on a device a dry run need not have
        collective_timeout(config)
    if config.max_restarts < 0:
        raise PajamaError(f"--max_restarts must be >= 0, got {config.max_restarts}")
    if config.micro_batch_size != "auto" and not (isinstance(config.micro_batch_size, int) and config.micro_batch_size >= 1):
        raise PajamaError(f"--micro_batch_size must be a positive integer or auto, got {config.micro_batch_size!r}")
    world = config.devices * config.num_nodes
    if config.micro_batch_size != "auto":
        split_batch(config.batch_size, config.micro_batch_size, world)  # refused here, before any process starts
    if config.strategy not in ("auto", "single", "ddp", "fsdp"):
        raise PajamaError(f"--strategy must be auto, single, ddp or fsdp, got {config.strategy!r}")
    parse_loggers(config.logger)
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
    if config.dry_run:
        from pajama.training.trace import GPUS

        if config.dry_run_gpu is not None and config.dry_run_gpu not in GPUS:
            raise PajamaError(f"--dry_run_gpu must be one of {', '.join(GPUS)}, got {config.dry_run_gpu!r}")
    else:
        device_type(config.accelerator)  # refuses an accelerator that is not there
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
    preset_shape(config)
    if config.max_time is not None:
        parse_duration(config.max_time, "--max_time")
    if config.dry_run:
        return  # a dry run needs no data: it reads the vocabulary where the data is there
    first, _ = load_training_data(config.train_data_dir)
    for i, stage in enumerate(data_stages(config)[1:], start=1):
        data, _ = load_training_data(stage.train_data_dir)
        if data.tokenizer_sha256 != first.tokenizer_sha256:
            raise PajamaError(f"--stages: stage {i}'s {data.directory} was prepared with another tokenizer than {first.directory}: every stage must share one")


def validate_budgets(config: TrainConfig) -> None:
    """The run's length, warm-up and decay: each given one way, in range."""
    for name in ("max_iters", "max_tokens", "warmup_tokens", "decay_tokens", "lr_decay_iters"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise PajamaError(f"--{name} must be >= 1, got {getattr(config, name)}")
    if config.warmup_iters is not None and config.warmup_iters < 0:
        raise PajamaError(f"--warmup_iters must be >= 0, got {config.warmup_iters}")
    for a, b in (("max_iters", "max_tokens"), ("warmup_iters", "warmup_tokens"), ("decay_fraction", "decay_tokens")):
        if getattr(config, a) is not None and getattr(config, b) is not None:
            raise PajamaError(f"--{a} {getattr(config, a)} and --{b} {getattr(config, b)}: give one or the other")
    if config.lr_schedule not in ("cosine", "wsd", "constant"):
        raise PajamaError(f"--lr_schedule must be cosine, wsd or constant, got {config.lr_schedule!r}")
    if config.decay_shape not in ("linear", "1-sqrt"):
        raise PajamaError(f"--decay_shape must be linear or 1-sqrt, got {config.decay_shape!r}")
    if config.decay_fraction is not None and not 0 < config.decay_fraction <= 1:
        raise PajamaError(f"--decay_fraction must be in (0, 1], got {config.decay_fraction}")
    if config.lr_schedule != "wsd" and config.decay_from is None:
        for name in ("decay_fraction", "decay_tokens"):
            if getattr(config, name) is not None:
                raise PajamaError(f"--{name} is the decay of --lr_schedule wsd (or of a cool-down, --decay_from), not of {config.lr_schedule}")
    if config.lr_schedule == "wsd" and config.lr_decay_iters is not None:
        raise PajamaError("--lr_decay_iters is where cosine decay ends; wsd decays over --decay_fraction or --decay_tokens")
    if config.decay_from is not None:
        if config.decay_tokens is None:
            raise PajamaError("--decay_from: give --decay_tokens, the length of the cool-down")
        if Path(config.decay_from).expanduser().resolve().is_relative_to(Path(config.out_dir).expanduser().resolve()):
            raise PajamaError(f"--decay_from {config.decay_from} is in --out_dir {config.out_dir}: a cool-down writes its own checkpoints into a new --out_dir")


@dataclass(frozen=True)
class DataStage:
    """Training data from ``start_tokens`` on: ``train_data_dir`` with ``mixture``."""

    start_tokens: int
    train_data_dir: dict[str, float] | Path | str
    mixture: dict[str, float] | None


def data_stages(config: TrainConfig) -> list[DataStage]:
    """The run's data stages: --train_data_dir and --mixture from token 0, then each of --stages
    (a stage that names no train_data_dir or mixture keeps the previous stage's)."""
    stages = [DataStage(0, config.train_data_dir, config.mixture)]
    for i, entry in enumerate(config.stages or [], start=1):
        if not isinstance(entry, dict):
            raise PajamaError(f"--stages: stage {i} must be a mapping of start_tokens, train_data_dir and/or mixture, got {entry!r}")
        unknown = sorted(set(entry) - {"start_tokens", "train_data_dir", "mixture"})
        if unknown:
            raise PajamaError(f"--stages: stage {i} has unknown key(s) {', '.join(unknown)}; known: start_tokens, train_data_dir, mixture")
        start, previous = entry.get("start_tokens"), stages[-1]
        if not isinstance(start, int) or isinstance(start, bool) or start <= previous.start_tokens:
            raise PajamaError(f"--stages: stage {i}'s start_tokens must be an integer above the previous stage's start ({previous.start_tokens:,}), got {start!r}")
        if "train_data_dir" not in entry and "mixture" not in entry:
            raise PajamaError(f"--stages: stage {i} changes nothing: give its train_data_dir and/or mixture")
        stages.append(DataStage(start, entry.get("train_data_dir", previous.train_data_dir), entry.get("mixture", previous.mixture)))
    return stages


def parse_duration(text: str, flag: str) -> float:
    """Seconds in ``text``: seconds, a number with a unit (90s, 30m, 2h, 1d), HH:MM:SS or D-HH:MM:SS."""
    text = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if m:
        d, h, mi, s = (int(x) if x else 0 for x in m.groups())
        return ((d * 24 + h) * 60 + mi) * 60 + s
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if m:
        return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        seconds = float(text)
    except ValueError:
        raise PajamaError(f"{flag} {text!r}: expected seconds, a number with a unit (90s, 30m, 2h), HH:MM:SS or D-HH:MM:SS") from None
    if not seconds > 0:
        raise PajamaError(f"{flag} {text!r}: must be a positive duration")
    return seconds


def save_every(value: int | str) -> tuple[int | None, float | None]:
    """--save_interval as (steps, None) or (None, seconds): a bare integer counts steps, a duration needs its unit."""
    if isinstance(value, int) or str(value).strip().isdigit():
        steps = int(value)
        if steps < 1:
            raise PajamaError(f"--save_interval must be >= 1 steps or a duration such as 30m, got {value}")
        return steps, None
    return None, parse_duration(value, "--save_interval")


def collective_timeout(config: TrainConfig) -> float:
    """--collective_timeout in seconds: given, else 10 minutes on GPUs (a slow step or save of a big model
    must fit in it) and 5 on CPUs."""
    if config.collective_timeout is not None:
        return parse_duration(config.collective_timeout, "--collective_timeout")
    return 300.0 if device_type(config.accelerator) == "cpu" else 600.0


def verify_training_data(config: TrainConfig) -> None:
    """--verify_data: every prepared directory of the run (each stage's, the validation data) against its checksums."""
    directories = {config.val_data_dir} if config.val_data_dir else set()
    for stage in data_stages(config):
        spec = stage.train_data_dir
        directories |= {Path(d) for d in spec} if isinstance(spec, dict) else {Path(spec)}
    for directory in sorted(directories):
        verify_prepared(directory)


def preset_shape(config: TrainConfig) -> ModelConfig:
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


def model_config_for(config: TrainConfig, data: PreparedData, resuming: Path | None) -> ModelConfig:
    """The preset (or the initial checkpoint's shape), with the data's vocabulary."""
    if config.initial_checkpoint is not None:
        source = resuming or config.initial_checkpoint  # once resumed, the run's own checkpoint has that shape
        base = ModelConfig(**checkpoint.read_meta(source)["model"])
        # Published models often have more embedding rows than their tokenizer has entries (padding): fine.
        if data.vocab_size and data.vocab_size > base.vocab_size:
            raise PajamaError(f"{source}: vocabulary {base.vocab_size}, but {data.directory} was prepared with a tokenizer of {data.vocab_size}")
        return base.replace(block_size=config.block_size or base.block_size)
    base = preset_shape(config)
    vocab = data.vocab_size or base.vocab_size
    return base.replace(vocab_size=vocab, block_size=config.block_size or base.block_size)


def jsonable(config: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))  # paths, also inside --stages, as text
