"""Checkpoints: one directory per save, written atomically, the last K kept.

Layout of ``<out_dir>/checkpoints/step-00001000/``:

* ``meta.json``: step, tokens seen, model and training config, tokenizer checksum;
* ``state``: model, optimizer, step, data-loader position and RNG states, as Fabric saves
  them: one ``torch.save`` file on a single device or DDP, a sharded distributed-checkpoint
  directory under FSDP;
* the tokenizer the data was prepared with (``tokenizer.model`` or ``tokenizer.json``, with
  the files beside it), when the prepared directory keeps one: a checkpoint is usable alone.

Everything is written under a hidden temporary name and renamed when every rank has
finished, so a kill during a save leaves the previous checkpoint as the newest one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
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
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(fabric, out_dir: Path, step: int, state: dict, meta: dict, keep_last: int, tokenizer=None) -> Path:
    """Save ``state`` (through Fabric, so each strategy writes its own way), ``meta`` and a
    copy of ``tokenizer``; rename into place once all ranks are done; keep the ``keep_last`` newest."""
    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if fabric.global_rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    fabric.barrier()
    fabric.save(tmp / STATE, state)
    if fabric.global_rank == 0:
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
        if tokenizer is not None:
            tokenizer.copy_to(tmp)
    fabric.barrier()
    if fabric.global_rank == 0:
        _fsync_tree(tmp)  # on disk before the name says complete
        if final.exists():  # an older save of the same step (a rerun): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        earlier = [p for p in list_checkpoints(out_dir) if step_of(p) <= step]
        for old in earlier[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    fabric.barrier()
    return final


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
