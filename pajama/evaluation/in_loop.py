"""lm-evaluation-harness tasks during pre-training (``pajama pretrain --eval_tasks``).

The tasks are loaded once, at setup, on every process (rank 0 first, so that a dataset is
fetched once and the others read the cache). At each evaluation every process builds the
same requests, computes its share of them with the training model (sharded or not), and the
results are summed across processes; every process then scores them with the harness's own
metrics. So the numbers are those ``pajama evaluate --tasks`` gives on the checkpoint of the
same step, whatever the number of devices.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import torch

from pajama import PajamaError
from pajama.evaluation.harness import PajamaLM, Share, flatten, load_tasks, run_tasks
from pajama.precision import compute_dtype


class TrainingTasks:
    """The tasks a run evaluates at every ``eval_interval``.

    Args:
        fabric: the run's Fabric (for its ranks and device).
        names: tasks, as ``--eval_tasks`` gives them.
        limit: examples per task (None: all).
        include_path: directory of local task YAML files.
        model_config: the model's shape.
        tokenizer: the data's tokenizer.
        batch_size: sequences per forward pass (the training micro-batch: it fits).
        precision: the run's precision (the KV cache of generative tasks is in its compute dtype).
    """

    def __init__(self, fabric, names, limit: int | None, include_path: Path | None, model_config, tokenizer, batch_size: int, precision: str) -> None:
        if tokenizer is None:
            raise PajamaError("--eval_tasks needs the data's tokenizer, and the prepared directory keeps none (prepare it with pajama prepare)")
        self.limit, self.model_config, self.tokenizer = limit, model_config, tokenizer
        self.batch_size, self.cache_dtype = batch_size, compute_dtype(precision)
        self.share = Share(fabric.global_rank, fabric.world_size)
        self.tasks = None
        self.truncation_reported = False  # the same contexts are cut at every evaluation: said once
        if fabric.global_rank == 0:
            self.tasks = load_tasks(names, include_path)
        fabric.barrier()
        if self.tasks is None:
            self.tasks = load_tasks(names, include_path)
        self.columns = self.tasks.columns() + ["eval_task_time"]
        fabric.print(f"eval tasks: {', '.join(self.tasks.names)}" + (f", {limit} examples each" if limit else ", all examples"))

    @torch.no_grad()
    def evaluate(self, fabric, model) -> dict[str, float]:
        """``task/<task>/<metric>`` for every task and group, and ``eval_task_time`` (seconds);
        the first evaluation says how many contexts were cut from the left to fit the model."""
        start = time.perf_counter()
        model.eval()
        # Fabric's module runs the forward in the run's precision (autocast) itself.
        lm = PajamaLM(model, self.model_config, self.tokenizer, fabric.device, batch_size=self.batch_size, cache_dtype=self.cache_dtype, share=self.share, progress=False)
        # Without the harness's progress bars (one per task on every process): training's own lines stay readable.
        with contextlib.redirect_stderr(io.StringIO()):
            results = run_tasks(lm, self.tasks, limit=self.limit, bootstrap_iters=0, log_samples=False)
        model.train()
        if lm.truncation_note() and not self.truncation_reported:
            fabric.print(f"{lm.truncation_note()} (at every task evaluation)")
            self.truncation_reported = True
        return flatten(results) | {"eval_task_time": time.perf_counter() - start}
