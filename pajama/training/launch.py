"""Starting the processes: the device, the precision, Fabric with its strategy, and FSDP2's sharding.

Lightning is imported only here, where a run starts: it takes seconds to import, which every
other command, and ``--help``, can skip. (Not even for type hints: the CLI's signature parser
runs ``if TYPE_CHECKING:`` blocks.) Functions take that ``lightning.Fabric`` as ``fabric``.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import timedelta

import torch

from pajama import PajamaError, checkpoint, memory, usable_cpus
from pajama.hardware import device_type
from pajama.loader import load_training_data
from pajama.model import LLaMA
from pajama.precision import choose_precision, compute_dtype
from pajama.training.checkpointing import resume_path
from pajama.training.config import TrainConfig, collective_timeout, model_config_for

# fp16 loss scaling: the scale doubles after this many steps without overflow (PyTorch's default).
LOSS_SCALE_GROWTH_INTERVAL = 2000
# Seconds the processes of a run have to find each other.
STARTUP_TIMEOUT = 600.0


def choose_run_precision(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with its precision decided (see pajama.precision), and lines to print once
    the processes are up. A resumed run keeps the precision it began with, so that resuming
    stays exact even if this machine would measure differently today."""
    resuming = resume_path(config)
    if config.precision is None and resuming is not None:
        earlier = checkpoint.read_meta(resuming)["train"].get("precision")
        if earlier:
            return replace(config, precision=earlier), [f"precision {earlier}, as the run began"]
    device = device_type(config.accelerator)
    if device == "cpu":
        torch.set_num_threads(cpu_threads(config.devices))  # probe on the threads training will use
    model_config = model_config_for(config, load_training_data(config.train_data_dir)[0], resuming)
    micro = config.micro_batch_size if config.micro_batch_size != "auto" else 8
    choice = choose_precision(config.precision, device, model_config, tokens=micro * model_config.block_size)
    return replace(config, precision=choice.precision), [choice.reason] + ([f"warning: {choice.warning}"] if choice.warning else [])


def make_fabric(config: TrainConfig):
    import lightning as L
    from lightning.fabric.plugins.precision import MixedPrecision
    from lightning.fabric.strategies import DDPStrategy, ModelParallelStrategy

    world = config.devices * config.num_nodes
    strategy = config.strategy
    resuming = resume_path(config)
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
    gather_dtype = compute_dtype(precision) if precision in memory.MIXED else None  # FSDP's, see shard_model
    # Starting up (imports, the other nodes' start) may take longer than any step: the process group
    # gets this long to form, then --collective_timeout for every collective (faults.failures_named).
    timeout = timedelta(seconds=max(collective_timeout(config), STARTUP_TIMEOUT))
    strategies = {
        "single": "auto",
        "ddp": lambda: DDPStrategy(timeout=timeout),
        "fsdp": lambda: ModelParallelStrategy(
            parallelize_fn=functools.partial(shard_model, gather_dtype=gather_dtype), data_parallel_size=world, tensor_parallel_size=1, timeout=timeout
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


def shard_model(model: LLaMA, device_mesh, gather_dtype: torch.dtype | None) -> LLaMA:
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


def cpu_threads(devices: int) -> int:
    """On CPU, the cores this process may run on, split between this node's processes
    (oversubscription is 3-6x slower). Set by every rank: Fabric's launcher does so only for some."""
    return max(1, usable_cpus() // devices)


def check_same_precision(fabric, precision: str) -> None:
    """Processes that measured this CPU each chose a precision: they must have chosen the same."""
    code = torch.tensor(float(memory.PRECISIONS.index(precision)), device=fabric.device)
    if fabric.all_reduce(code, reduce_op="max") != fabric.all_reduce(code, reduce_op="min"):
        raise PajamaError("the processes of this run chose different precisions (a CPU measured at the margin); give --precision")
