"""``pajama pretrain``: the training loop, top to bottom (setup, then step after step)."""

from __future__ import annotations

import time

import torch

from pajama import PajamaError, checkpoint
from pajama.metrics import task_parts
from pajama.progress import progress_bar
from pajama.training.checkpointing import Checkpoints
from pajama.training.config import TrainConfig, validate, verify_training_data
from pajama.training.dry_run import dry_run
from pajama.training.faults import (
    StopSignals,
    Watchdog,
    failures_named,
    restarted,
    supervise_restarts,
)
from pajama.training.launch import choose_run_precision, make_fabric
from pajama.training.plan import plan_memory
from pajama.training.setup import enter_stage, setup
from pajama.training.step import step_metrics, train_step
from pajama.training.validation import evaluate_tasks, validation_loss


def pretrain(config: TrainConfig) -> None:
    """Pre-train a LLaMA model on prepared RedPajama chunks (``pajama prepare``).

    Rerunning the same command resumes from the newest checkpoint in ``out_dir``.
    """
    started = time.monotonic()  # --max_time counts from here: setup and loading take time too
    config = restarted(config)  # a restart resumes from the newest checkpoint
    validate(config)
    if config.dry_run:
        return dry_run(config)
    supervise_restarts(config)  # --max_restarts: the run goes on in a child process, restarted when a rank fails
    if config.verify_data:
        verify_training_data(config)
    config, notes = choose_run_precision(config)
    config, more = plan_memory(config)  # auto micro-batch and recompute, from the traced step; on a GPU, refused if it does not fit
    fabric = make_fabric(config)
    fabric.launch()
    with failures_named(fabric, config) as watchdog:
        _run(fabric, config, started, notes + more, watchdog)


def _run(fabric, config: TrainConfig, started: float, notes: list[str], watchdog: Watchdog) -> None:
    """Set up, then train until max_iters, a stop request or too many bad steps."""
    run = setup(fabric, config, notes)
    config, state, rank = run.config, run.state, fabric.global_rank
    step, tokens = state["step"], state["tokens"]
    if step >= config.max_iters:
        fabric.print(f"already at step {step}, --max_iters {config.max_iters}: nothing to train (raise --max_iters to go on)")
    stop = StopSignals(config.max_time, announce=rank == 0, started=started)
    if step == 0 and (initial := validation_loss(fabric, run) | evaluate_tasks(fabric, run)):
        run.log.write(0, tokens, initial)
        val = [f"val {initial['val_loss']:.4f} (ppl {initial['val_ppl']:.1f})"] if "val_loss" in initial else []
        fabric.print(" | ".join(["step 0", *val, *task_parts(initial)]))
    bar = progress_bar(total=config.max_iters, initial=step, desc="pretrain", unit="step", disable=rank != 0, dynamic_ncols=True)
    saves = Checkpoints(fabric, run, say=bar.write if rank == 0 else lambda line: None, pause=watchdog.pause)
    # Counted on the device and read only on logged steps: reading waits for the device.
    bad_run = torch.zeros((), dtype=torch.int64, device=fabric.device)  # consecutive bad steps
    skipped = torch.zeros_like(bad_run)  # updates skipped since the last logged step
    window_start, window_steps = time.perf_counter(), 0  # steps since the last logged step, timed together
    while step < config.max_iters:
        watchdog.beat(step)
        lr = run.schedule(step)
        result = train_step(fabric, run, lr)
        step, tokens, window_steps = step + 1, tokens + run.tokens_per_step, window_steps + 1
        enter_stage(fabric, run, step)  # a checkpoint at a stage's first step holds that stage's data position
        bar.update(1)
        bad_run = torch.where(result.finite | result.overflow, 0, bad_run + 1)  # an fp16 overflow is the scaler's, not a bad step
        skipped += ~result.finite
        if result.overflow:
            fabric.print(f"step {step}: gradients overflow fp16 at loss scale {result.loss_scale:g}: update skipped, scale now {run.scaler.get_scale():g}")
        evaluate_now = step % config.eval_interval == 0 or step == config.max_iters
        if evaluate_now:
            watchdog.pause()  # an evaluation is not a step's time
        if step % config.log_interval == 0 or evaluate_now:
            _sync(fabric)
            step_time = (time.perf_counter() - window_start) / window_steps
            bad_steps, skipped_steps = int(bad_run), int(skipped)
            if bad_steps and not result.overflow:
                fabric.print(f"step {step}: non-finite loss {float(result.loss)} or gradient norm {float(result.grad_norm)}: update skipped ({bad_steps} in a row)")
            metrics = step_metrics(fabric, run, result, lr, step_time) | {"skipped": skipped_steps}
            metrics |= validation_loss(fabric, run) | evaluate_tasks(fabric, run) if evaluate_now else {}
            run.log.write(step, tokens, metrics)
            bar.set_postfix_str(f"loss {metrics['loss']:.3f} {metrics['tokens_per_sec']:,.0f} tok/s", refresh=False)
            if rank == 0:
                bar.write(run.log.console_line(step, tokens, metrics))
            if bad_steps >= config.max_bad_steps:
                last = checkpoint.list_checkpoints(run.out_dir)
                raise PajamaError(f"stopped after {bad_steps} consecutive non-finite steps (lower --learning_rate?); last good checkpoint: {last[-1] if last else 'none'}")
            skipped.zero_()
            window_start, window_steps = time.perf_counter(), 0
        preempted = stop.requested(fabric)
        if saves.due(step) or step == config.max_iters or preempted:
            saves.save(step, tokens)
            if window_steps == 0:
                window_start = time.perf_counter()  # the save is not the next steps' time
        if preempted and step < config.max_iters:  # stopped on the last step: the run is done, nothing to requeue
            saves.finish()
            bar.close()
            run.log.close()
            fabric.print(f"stopping at step {step} ({stop.reason}); checkpoint saved; rerun the same command to resume")
            raise SystemExit(stop.exit_code)
    saves.finish()
    bar.close()
    run.log.close()
    fabric.print(f"done: {step} steps, {tokens:,} tokens; checkpoints in {run.out_dir / checkpoint.CHECKPOINTS}")


def _sync(fabric) -> None:
    if fabric.device.type == "cuda":
        torch.cuda.synchronize()
