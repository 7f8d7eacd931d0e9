"""Checkpoints: one directory per save, written atomically, the last K kept.

Layout of ``<out_dir>/checkpoints/step-00001000/``:

* ``meta.json``: step, tokens seen, model and training config, tokenizer checksum;
* ``state``: model, optimizer, step, data-loader position and RNG states, as Fabric saves
  them: one ``torch.save`` file on a single device or DDP, a sharded distributed-checkpoint
  directory under FSDP;
* the tokenizer the data was prepared with (``tokenizer.model`` or ``tokenizer.json``, with
  the files beside it), when the prepared directory keeps one: a checkpoint is usable alone.

Everything is written under a hidden temporary name and renamed when every rank has
finished (with ``--async_checkpoint``, at the first step boundary after the background write
completes), so a kill during a save leaves the previous checkpoint as the newest one.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import shutil
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from pajama import PajamaError
from pajama.model_config import ModelConfig

CHECKPOINTS = "checkpoints"
META = "meta.json"
STATE = "state"


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step-{step:08d}"


def step_of(path: Path) -> int:
    """The step of a checkpoint directory, from its name."""
    return int(path.name.removeprefix("step-"))


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and (p / META).is_file() and (p / STATE).exists()]
    return sorted(found, key=step_of)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the random states of ``state``; on fewer GPUs than it was saved on, those of the
    GPUs present, with a warning naming what could not be restored."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda", [])
    kept, note = restorable_cuda_states(cuda_states, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for device, cuda_state in enumerate(kept):
        torch.cuda.set_rng_state(cuda_state, device)
    if note:
        warnings.warn(note, stacklevel=2)


def restorable_cuda_states(states: list, device_count: int) -> tuple[list, str | None]:
    """The saved per-GPU random states that ``device_count`` visible GPUs can take (the first
    ones), and a note naming those dropped. ``torch.cuda.set_rng_state_all`` would fail with an
    IndexError on a machine (or CUDA_VISIBLE_DEVICES) with fewer GPUs than the saving one."""
    if len(states) <= device_count:
        return list(states), None
    dropped = len(states) - device_count
    return list(states[:device_count]), (
        f"the checkpoint holds the random states of {len(states)} GPUs and {device_count} are visible here: "
        f"those of the other {dropped} are not restored (random draws on the GPU will differ from the uninterrupted run)"
    )


def save(fabric, out_dir: Path, step: int, state: dict, meta: dict, keep_last: int, tokenizer=None) -> Path:
    """Save ``state`` (through Fabric, so each strategy writes its own way), ``meta`` and a
    copy of ``tokenizer``; rename into place once all ranks are done; keep the ``keep_last`` newest."""
    return start_save(fabric, out_dir, step, state, meta, tokenizer).finish(fabric, keep_last)


def start_save(fabric, out_dir: Path, step: int, state: dict, meta: dict, tokenizer=None, asynchronous: bool = False) -> PendingSave:
    """Write a checkpoint under its temporary name; ``asynchronous``: copy the state to CPU memory
    and write it in the background. ``finish`` renames it into place (collective)."""
    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    pending = PendingSave(final, tmp)
    with pending.unwritable():
        if fabric.global_rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        fabric.barrier()
        if asynchronous:
            pending.writing = _save_state_async(fabric, tmp / STATE, state)
        else:
            fabric.save(tmp / STATE, state)
        if fabric.global_rank == 0:
            (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
            if tokenizer is not None:
                tokenizer.copy_to(tmp)
    return pending


@dataclass
class PendingSave:
    """A checkpoint written under its temporary name, its state maybe still being written."""

    final: Path
    tmp: Path
    writing: Future | None = None  # the background write of the state, under --async_checkpoint

    def written(self) -> bool:
        return self.writing is None or self.writing.done()

    def finish(self, fabric, keep_last: int) -> Path:
        """Wait for the write, rename into place once every rank is done, keep the ``keep_last`` newest."""
        with self.unwritable():
            if self.writing is not None:
                self.writing.result()
            fabric.barrier()
            if fabric.global_rank == 0:
                _fsync_tree(self.tmp)  # on disk before the name says complete
                if self.final.exists():  # an older save of the same step (a rerun): replace it
                    shutil.rmtree(self.final)
                os.replace(self.tmp, self.final)
                _fsync_dir(self.final.parent)
                out_dir, step = self.final.parent.parent, step_of(self.final)
                earlier = [p for p in list_checkpoints(out_dir) if step_of(p) <= step]
                for old in earlier[:-keep_last] if keep_last > 0 else []:
                    shutil.rmtree(old, ignore_errors=True)
        fabric.barrier()
        return self.final

    @contextmanager
    def unwritable(self):
        """A full disk (or quota, or file-size limit): the partial save goes, the previous checkpoint stays."""
        try:
            yield
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            previous = [p for p in list_checkpoints(self.final.parent.parent) if step_of(p) < step_of(self.final)]
            kept = f"the newest complete checkpoint, {previous[-1]}, is kept" if previous else "no earlier checkpoint exists"
            raise PajamaError(
                f"could not write checkpoint {self.final} ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); {kept}. "
                "Free space on that disk (or raise the quota), then rerun the same command to resume"
            ) from None


def _save_state_async(fabric, path: Path, state: dict) -> Future:
    """Start writing ``state`` as ``fabric.save`` would, from a copy in CPU memory, in the background.

    Under FSDP: torch.distributed.checkpoint's async save of the model and optimizer shards (it
    stages them to CPU memory), over a process group of its own (its writer thread must not
    interleave collectives with training's), and the rest beside them in Lightning's layout.
    Otherwise rank 0 copies the full state to CPU memory and ``torch.save``s it in a thread."""
    from lightning.fabric.strategies import ModelParallelStrategy
    from lightning.fabric.wrappers import _unwrap_objects

    state = _unwrap_objects(state)
    if isinstance(fabric.strategy, ModelParallelStrategy):
        import torch.distributed.checkpoint as dcp
        from lightning.fabric.strategies.fsdp import _METADATA_FILENAME
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        model, options = state["model"], StateDictOptions(cpu_offload=True)
        shards = {"model": get_model_state_dict(model, options=options), "optimizer": get_optimizer_state_dict(model, state["optimizer"], options=options)}
        path.mkdir(parents=True, exist_ok=True)
        writing = dcp.async_save(shards, checkpoint_id=path, process_group=_checkpoint_group())
        if fabric.global_rank == 0:
            torch.save({k: v for k, v in state.items() if k not in shards}, path / _METADATA_FILENAME)
        return writing
    strategy = fabric.strategy
    converted = {
        k: strategy.get_module_state_dict(v) if isinstance(v, torch.nn.Module) else strategy.get_optimizer_state(v) if isinstance(v, torch.optim.Optimizer) else v
        for k, v in state.items()
    }
    if fabric.global_rank != 0:
        done: Future = Future()
        done.set_result(None)
        return done
    # The previous save's copy is reused once written: no fresh memory to fault in at every save.
    previous = _staged.pop("last", None)
    staged = _cpu_copy(converted, previous[1] if previous and previous[0].done() else None)
    writing = _writer().submit(torch.save, staged, path)
    _staged["last"] = (writing, staged)
    return writing


_staged: dict = {}  # "last": (its write, the CPU copy of the state it writes)


def _cpu_copy(value, into=None):
    """``value`` with every tensor copied to CPU memory (into the tensors of ``into``, an earlier copy,
    where they match): training changes the originals from the next step on."""
    if isinstance(value, torch.Tensor):
        if isinstance(into, torch.Tensor) and into.shape == value.shape and into.dtype == value.dtype:
            return into.copy_(value.detach())
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        into = into if isinstance(into, dict) else {}
        return {k: _cpu_copy(v, into.get(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        into = into if isinstance(into, (list, tuple)) and len(into) == len(value) else [None] * len(value)
        return type(value)(_cpu_copy(v, i) for v, i in zip(value, into))
    return copy.deepcopy(value)


@functools.cache
def _writer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")


@functools.cache
def _checkpoint_group():
    return torch.distributed.new_group(backend="gloo")


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(path: Path) -> dict:
    path = resolve(path) / META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PajamaError(f"{path}: unreadable ({e}); use another checkpoint (--resume PATH)") from None
    if not isinstance(meta, dict) or not {"model", "step", "train"} <= set(meta):
        raise PajamaError(f"{path}: not a pajama checkpoint description (no model, step or train entries)")
    return meta


def resolve(path: Path) -> Path:
    """A checkpoint directory from a checkpoint, a run's ``out_dir`` (its newest) or ``state``."""
    path = Path(path).expanduser()
    if path.name == STATE:
        path = path.parent
    if (path / META).is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    raise PajamaError(f"{path}: no checkpoint found (expected a {CHECKPOINTS}/step-* directory with {META} and {STATE})")


def load_model_weights(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """(model config, full model state dict on CPU, meta) of a checkpoint, without GPUs and
    without unpickling anything but tensors; works for full and sharded checkpoints."""
    path = resolve(path)
    meta = read_meta(path)
    config = ModelConfig(**meta["model"])
    state_path = path / STATE
    if state_path.is_dir():
        weights = _load_sharded_model(state_path)
    else:
        weights = torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)["model"]
    return config, weights, meta


def _load_sharded_model(state_path: Path) -> dict[str, torch.Tensor]:
    """The model entries of a distributed (DCP) checkpoint, loaded in this one process."""
    import warnings

    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(state_path))
    metadata = reader.read_metadata()
    prefix = "model."
    state = {}
    for key, item in metadata.state_dict_metadata.items():
        if key.startswith(prefix) and hasattr(item, "size"):
            state[key] = torch.empty(item.size, dtype=item.properties.dtype)
    with warnings.catch_warnings():  # "torch.distributed is disabled": one process is the point here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {k[len(prefix) :]: v for k, v in state.items()}


def load_tokenizer_of(path: Path, meta: dict, tokenizer_path: Path | None = None):
    """The tokenizer checkpoint ``path``'s data was prepared with: ``tokenizer_path`` when
    given (its checksum must be the checkpoint's), else the copy kept in the checkpoint
    directory or in its run directory."""
    from pajama.tokenizer import find_tokenizer, load_tokenizer

    expected = meta.get("tokenizer_sha256")
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(Path(tokenizer_path).expanduser())
        if expected and tokenizer.sha256 != expected:
            raise PajamaError(
                f"{tokenizer.path}: not the tokenizer {path} was trained with "
                f"(sha256 {tokenizer.sha256[:16]}..., the checkpoint's data used {expected[:16]}...)"
            )
    else:
        places = [path, path.parent.parent]  # the checkpoint, its run directory (out_dir)
        tokenizer = next((t for t in (find_tokenizer(p, expected) for p in places) if t is not None), None)
        if tokenizer is None:
            others = [t for t in (find_tokenizer(p) for p in places) if t is not None]
            extra = f" ({others[0].path} has another checksum)" if others else ""
            raise PajamaError(f"{path}: no tokenizer kept with the checkpoint or its run{extra}; pass --tokenizer_path, the tokenizer its data was prepared with")
    if not expected:
        print(f"note: {path} records no tokenizer checksum; using {tokenizer.path} unchecked")
    return tokenizer
