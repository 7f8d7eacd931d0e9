"""A run's checkpoints: which one to resume, loading it once it is known to be of this run, when to
save and saving."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pajama import PajamaError, checkpoint
from pajama.training.config import save_every
from pajama.training.step import local

if TYPE_CHECKING:
    from pajama.training.config import TrainConfig
    from pajama.training.setup import Training


class Checkpoints:
    """When to save (every --save_interval steps, or seconds), and saving: at once, or under
    --async_checkpoint in the background, one save at a time, each renamed into place at the first
    step boundary after its write completes (or at the end)."""

    def __init__(self, fabric, run: Training, say: Callable[[str], None], pause: Callable[[], None]) -> None:
        self.fabric, self.run, self.say = fabric, run, say
        self.pause = pause  # the hang watchdog's: a save is not a step's time
        self.every_steps, self.every_seconds = save_every(run.config.save_interval)
        self.last = time.monotonic()
        self.pending: checkpoint.PendingSave | None = None

    def due(self, step: int) -> bool:
        """At a step boundary: rename a background save that every rank has written; whether a save is due."""
        if self.every_seconds is None and self.pending is None:
            return step % self.every_steps == 0
        due = time.monotonic() - self.last >= self.every_seconds if self.every_seconds else step % self.every_steps == 0
        unwritten = self.pending is not None and not self.pending.written()
        # Every rank must agree: the save and the rename are collective.
        flags = self.fabric.all_reduce(torch.tensor([float(due), float(unwritten)], device=self.fabric.device), reduce_op="max")
        if self.pending is not None and flags[1] == 0:
            self.finish()
        return bool(flags[0] > 0)

    def save(self, step: int, tokens: int) -> None:
        self.pause()
        self.finish()  # at most one save in flight
        run = self.run
        state = run.state
        state.update(step=step, tokens=tokens, sampler=run.sampler.state_dict(), rng=checkpoint.rng_state())
        if run.scaler is not None:
            state["grad_scaler"] = run.scaler.state_dict()
        _check_finite(self.fabric, run.model)
        meta = run.meta | {"step": step, "tokens": tokens}
        self.pending = checkpoint.start_save(self.fabric, run.out_dir, step, state, meta, run.tokenizer, asynchronous=run.config.async_checkpoint)
        self.last = time.monotonic()
        if not run.config.async_checkpoint:
            self.finish()

    def finish(self) -> None:
        """Complete the save in flight, if any (waiting for its write)."""
        if self.pending is not None:
            self.pause()
            pending, self.pending = self.pending, None
            self.say(f"saved {pending.finish(self.fabric, self.run.config.keep_last)}")


def _check_finite(fabric, model) -> None:
    """Refuse to save non-finite weights; every rank decides together (the save is collective)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(local(p)).all()]
    if fabric.all_reduce(torch.tensor(float(bool(bad)), device=fabric.device), reduce_op="max") > 0:
        raise PajamaError(f"parameter {bad[0] if bad else 'on another rank'} holds non-finite values; not saving a checkpoint")


def resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (see --resume); None for a fresh start."""
    if config.resume == "none":
        return None
    if config.resume == "auto":
        found = checkpoint.list_checkpoints(Path(config.out_dir).expanduser().resolve())
        return found[-1] if found else None
    return checkpoint.resolve(Path(config.resume))


def resume(fabric, path: Path, out_dir: Path, state: dict, meta: dict) -> None:
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
    for key in ("seed", "val_fraction", "val_data_dir"):
        if earlier["train"].get(key) != meta["train"][key]:
            problems.append(f"--{key} was {earlier['train'].get(key)}, now {meta['train'][key]}")
    # Data stages change the data on purpose, at their start; the stage a checkpoint is in cannot change under it.
    before, now = earlier.get("stage") or {"index": 0, "mixture": earlier["train"].get("mixture")}, meta["stage"]
    if before["index"] != now["index"]:
        problems.append(f"its step {earlier['step']:,} is in data stage {before['index']}, but in stage {now['index']} of this run's --stages (a stage the run has reached cannot move)")
    elif before.get("mixture") != now["mixture"]:
        problems.append(f"--mixture was {before['mixture']}, now {now['mixture']}" if now["index"] == 0 else f"stage {now['index']}'s mixture was {before['mixture']}, now {now['mixture']}")
    if problems:
        # The advice must work as given: --resume none refuses an out_dir that holds checkpoints.
        raise PajamaError(
            f"cannot resume from {path}: {'; '.join(problems)}. To start a new run, use another --out_dir, or delete {out_dir / checkpoint.CHECKPOINTS} first"
        )
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
