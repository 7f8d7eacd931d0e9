"""A run set up: data, model, optimizer and the state a checkpoint holds, resumed when there is one."""

from __future__ import annotations

import bisect
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pajama import PajamaError, checkpoint
from pajama.corpora import LLAMA_WEIGHTS
from pajama.loader import (
    MixtureSampler,
    PreparedData,
    load_prepared,
    load_training_data,
    split_blocks,
    stream_weights,
    validation_samples,
)
from pajama.metrics import MetricsLog, peak_flops
from pajama.model import LLaMA
from pajama.model_config import ModelConfig
from pajama.tokenizer import find_tokenizer
from pajama.training.batch import split_batch
from pajama.training.checkpointing import resume, resume_path
from pajama.training.config import (
    DataStage,
    TrainConfig,
    data_stages,
    jsonable,
    model_config_for,
    recompute_mode,
)
from pajama.training.launch import check_same_precision, cpu_threads
from pajama.training.schedule import Schedule, plan_schedule, steps_of


@dataclass
class Training:
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
    reduce_every_micro_batch: bool  # FSDP: gradients reduce-scattered after each micro-batch (else kept unsharded until the last)
    doc_bos: int | None  # --document_mask: documents start at this id
    state: dict  # what a checkpoint holds
    meta: dict  # what a checkpoint's meta.json says
    tokenizer: Any  # the data's tokenizer, copied into every checkpoint; None if the data keeps none
    out_dir: Path
    log: MetricsLog
    tokens_per_step: int
    flops_per_token: int
    peak_flops: float | None
    schedule: Schedule  # the learning rate of each step
    stages: list[DataStage]  # the run's training data over time (one stage: --train_data_dir throughout)
    stage_steps: list[int]  # the first step of each stage
    stage: int  # the stage the sampler draws from
    tasks: Any = None  # --eval_tasks: pajama.evaluation.in_loop.TrainingTasks


def setup(fabric, config: TrainConfig, notes: list[str]) -> Training:
    """Data, model, optimizer and state (resumed when there is a checkpoint to resume)."""
    if fabric.device.type == "cpu":
        torch.set_num_threads(cpu_threads(config.devices))
    for line in notes:
        fabric.print(line)
    check_same_precision(fabric, config.precision)
    out_dir = Path(config.out_dir).expanduser().resolve()
    train_data, directory_weights = load_training_data(config.train_data_dir)
    val_data = load_prepared(config.val_data_dir) if config.val_data_dir else None
    # Rank 0 picks the checkpoint to resume from, so that every rank loads the same one.
    resuming = fabric.broadcast(resume_path(config), src=0)
    model_config = model_config_for(config, train_data, resuming)
    if train_data.vocab_size is None:
        fabric.print(f"note: {train_data.directory} has no manifest.json (lit-llama's prepare): assuming a vocabulary of {model_config.vocab_size}, LLaMA's")
    block = model_config.block_size + 1
    _, val_splits = split_blocks(train_data, block, config.val_fraction, holdout=val_data is None)
    if val_data is not None:
        if val_data.tokenizer_sha256 != train_data.tokenizer_sha256:
            raise PajamaError(f"{val_data.directory} was prepared with another tokenizer than {train_data.directory}")
        val_splits, _ = split_blocks(val_data, block, 0.0, holdout=False)
    # The overall validation loss weighs each stream as training samples it.
    val_weights = stream_weights({n: s.stream.tokens for n, s in val_splits.items()}, config.mixture, None if val_data else directory_weights) if val_splits else {}
    world, rank = fabric.world_size, fabric.global_rank

    # Model: created without memory (meta) under FSDP, materialised sharded, then initialised.
    with fabric.init_module(empty_init=True):
        model = LLaMA(model_config)
    model.activation_checkpointing = recompute_mode(config.activation_checkpointing)
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
        load_initial(model.module, config.initial_checkpoint, train_data)
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
    doc_bos = train_data.bos_id if config.document_mask else None
    batch_size, accum, note = split_batch(config.batch_size, config.micro_batch_size, world)
    if note:
        fabric.print(f"note: {note}")
    config = replace(config, batch_size=batch_size)
    tokens_per_step = config.batch_size * model_config.block_size
    # A cool-down (--decay_from) starts from another run's checkpoint, unless it is resuming itself.
    loading = resuming or (checkpoint.resolve(Path(config.decay_from)).resolve() if config.decay_from else None)
    start_step = checkpoint.read_meta(loading)["step"] if loading else 0
    cooldown = cooldown_start(config, resuming, loading)
    max_iters, schedule = plan_schedule(config, tokens_per_step, (cooldown["step"], cooldown["lr"]) if cooldown else None)
    config = replace(config, max_iters=max_iters)
    stages = data_stages(config)
    stage_steps = stage_start_steps(stages, tokens_per_step)
    stage = bisect.bisect_right(stage_steps, start_step) - 1
    sampler, stage_data, train_weights = stage_sampler(config, stages[stage], stage, block)
    val_samples = validation_samples(val_splits, val_weights, config.eval_iters * config.micro_batch_size)
    scaler = getattr(fabric.strategy.precision, "scaler", None)

    meta = {
        "model": asdict(model_config),
        "train": jsonable(config),
        "tokenizer_sha256": train_data.tokenizer_sha256,
        "data": {name: s.tokens for name, s in stage_data.streams.items()},
        "stage": stage_meta(stages[stage], stage),
        "schedule": asdict(schedule),
    }
    if cooldown is not None:
        meta["cooldown"] = cooldown
    state = {"model": model, "optimizer": optimizer, "step": 0, "tokens": 0, "sampler": sampler.state_dict(), "rng": checkpoint.rng_state()}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    if loading is not None:
        resume(fabric, loading, out_dir, state, meta)
    sampler.load_state_dict(state["sampler"])
    if scaler is not None:
        scaler.load_state_dict(state["grad_scaler"])
    if loading is None:
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

    fabric.print(
        f"model {model_config.name}: {model_config.num_parameters():,} parameters, context {model_config.block_size}, vocab {model_config.vocab_size}\n"
        f"data: {', '.join(f'{n} {s.tokens:,}' for n, s in stage_data.streams.items())} tokens; "
        f"validation: {len(val_samples)} sequences\n"
        f"{_mixture_line(train_weights, stages[stage].mixture)}\n"
        f"{world} device(s) x {config.micro_batch_size} sequences x {accum} accumulation = {config.batch_size} sequences "
        f"({tokens_per_step:,} tokens) per step; {config.max_iters} steps ({config.max_iters * tokens_per_step:,} tokens)\n"
        f"{schedule.describe(tokens_per_step)}"
        + "".join(f"\ndata stage {i} from step {s:,} ({s * tokens_per_step:,} tokens): {_data_name(st)}" for i, (s, st) in enumerate(zip(stage_steps, stages)) if len(stages) > 1)
        + (f"\nresumed from {resuming} at step {state['step']}" if resuming else "")
        + (f"\ncooling down from {loading} at step {state['step']}" if cooldown and not resuming else "")
    )
    return Training(
        config=config, model_config=model_config, model=model, optimizer=optimizer, scaler=scaler, sampler=sampler,
        val_splits=val_splits, val_samples=val_samples, val_weights=val_weights, block=block, accum=accum,
        reduce_every_micro_batch=type(fabric.strategy).__name__ == "ModelParallelStrategy" and not config.accumulate_unsharded,
        doc_bos=doc_bos, state=state, meta=meta, tokenizer=tokenizer, out_dir=out_dir,
        log=MetricsLog(out_dir, sorted(val_splits) + sorted({n.split('/', 1)[0] for n in val_splits if '/' in n}), config.logger, resume_step=state["step"], enabled=rank == 0, extra_columns=tasks.columns if tasks else (),
                       wandb_project=config.wandb_project, run_name=config.run_name),
        tokens_per_step=tokens_per_step, flops_per_token=model_config.flops_per_token(model_config.block_size),
        peak_flops=peak_flops(fabric.device, config.peak_tflops), schedule=schedule, stages=stages, stage_steps=stage_steps,
        stage=stage, tasks=tasks,
    )  # fmt: skip


def cooldown_start(config: TrainConfig, resuming: Path | None, loading: Path | None) -> dict | None:
    """Where a cool-down (--decay_from) starts its decay: the source checkpoint, its step and
    learning rate; None for other runs."""
    if config.decay_from is None:
        return None
    meta = checkpoint.read_meta(loading)
    if resuming is not None:  # the cool-down resumed: its own checkpoints say where it started
        if "cooldown" not in meta:
            raise PajamaError(f"--decay_from: {resuming} is not a cool-down's checkpoint; give the cool-down a new --out_dir")
        return meta["cooldown"]
    schedule = meta.get("schedule")
    if schedule is None or schedule["kind"] == "cosine":
        raise PajamaError(
            f"--decay_from {loading}: not a checkpoint of a wsd or constant run ({'its learning rate decays by cosine' if schedule else 'it records no learning rate schedule'}), "
            "so it has no stable learning rate to cool down from"
        )
    return {"from": str(loading), "step": meta["step"], "lr": Schedule(**schedule)(meta["step"])}


def stage_start_steps(stages: list[DataStage], tokens_per_step: int) -> list[int]:
    """The first optimizer step of each data stage: the first that starts at or after its start_tokens."""
    steps = [steps_of(stage.start_tokens, tokens_per_step) for stage in stages]
    for i in range(1, len(steps)):
        if steps[i] == steps[i - 1]:
            raise PajamaError(f"--stages: stages {i - 1} and {i} both start at step {steps[i]:,} (steps of {tokens_per_step:,} tokens): move them further apart")
    return steps


def stage_sampler(config: TrainConfig, stage: DataStage, index: int, block: int) -> tuple[MixtureSampler, PreparedData, dict[str, float]]:
    """Data stage ``index``'s sampler from its first sample, its data and sampling weights. The tail
    of each subset is held out as in the first stage (no stage trains on held-out blocks)."""
    data, directory_weights = load_training_data(stage.train_data_dir)
    splits, _ = split_blocks(data, block, config.val_fraction, holdout=not config.val_data_dir)
    weights = stream_weights({n: s.stream.tokens for n, s in splits.items()}, stage.mixture, directory_weights)
    return MixtureSampler(splits, weights, block, config.seed, stage=index), data, weights


def enter_stage(fabric, run: Training, step: int) -> None:
    """At the first step of a data stage: its data and sampler; model, optimizer and step go on."""
    index = bisect.bisect_right(run.stage_steps, step) - 1
    if index == run.stage:
        return
    stage = run.stages[index]
    run.sampler, data, weights = stage_sampler(run.config, stage, index, run.block)
    run.stage = index
    run.meta.update(data={name: s.tokens for name, s in data.streams.items()}, stage=stage_meta(stage, index))
    fabric.print(f"step {step}: data stage {index}: {_data_name(stage)}; {_mixture_line(weights, stage.mixture)}")


def stage_meta(stage: DataStage, index: int) -> dict:
    """What a checkpoint records of its data stage, for the resume checks."""
    return {"index": index, **json.loads(json.dumps(asdict(stage), default=str))}


def _data_name(stage: DataStage) -> str:
    data = stage.train_data_dir
    return ", ".join(f"{d} ({w:g})" for d, w in data.items()) if isinstance(data, dict) else str(data)


def load_initial(model: LLaMA, path: Path, data: PreparedData) -> None:
    """Weights of another checkpoint; its shape must be this run's (context length aside)."""
    _, weights, meta = checkpoint.load_model_weights(path)
    sha = meta.get("tokenizer_sha256")
    if sha and data.tokenizer_sha256 and sha != data.tokenizer_sha256:
        raise PajamaError(f"{path} was trained with another tokenizer than the one {data.directory} was prepared with")
    model.load_full_weights(weights)


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
