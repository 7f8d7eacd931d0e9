"""Pre-training, one concern per module, in the order a run meets them:

* ``config``: the flags (``TrainConfig``), their checks, the model shape they resolve to;
* ``launch``: device, precision, Fabric and FSDP2 sharding;
* ``setup``: data, model, optimizer, resumed state;
* ``micro_batch``: ``--micro_batch_size auto``;
* ``step``: one optimizer step; ``schedule``: its learning rate;
* ``validation``: held-out loss and harness tasks during training;
* ``checkpointing``: save and resume; ``faults``: stopping cleanly on signals and time limits;
* ``loop``: ``pretrain``, the loop that ties them together.
"""

import importlib

# Imported on first use: finding ``pajama.training.loop`` (as the CLI does for --help, without
# importing it) imports this package, which must not import torch.
_EXPORTS = {"TrainConfig": "config", "pretrain": "loop", "EXIT_INTERRUPTED": "faults", "EXIT_PREEMPTED": "faults", "EXIT_RANK_FAILED": "faults"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
