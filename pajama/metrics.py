"""Training metrics: ``metrics.csv`` (always), TensorBoard and W&B (optional), console lines,
and the hardware numbers that MFU and memory reports need."""

from __future__ import annotations

import csv
import hashlib
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from pajama import PajamaError

# Dense bf16 peak per device, TFLOP/s (vendor data sheets).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "H800": 989.0, "A10G": 125.0, "L4": 121.0, "L40S": 362.0}

COLUMNS = [
    "step", "tokens", "loss", "val_loss", "val_ppl", "lr", "grad_norm", "tokens_per_sec",
    "tokens_per_sec_per_device", "mfu", "step_time", "data_wait", "peak_memory_gb", "skipped", "loss_scale",
]  # fmt: skip


LOGGERS = ("csv", "tensorboard", "wandb")


def parse_loggers(logger: str | Sequence[str]) -> list[str]:
    """The loggers ``--logger`` names, comma-separated or as a list; csv is always among them."""
    names = [n.strip() for item in ([logger] if isinstance(logger, str) else logger) for n in str(item).split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise PajamaError(f"--logger: unknown {', '.join(map(repr, unknown))}; choose among {', '.join(LOGGERS)}, several comma-separated (csv is always written)")
    return list(dict.fromkeys(["csv", *names]))


def wandb_init_args(out_dir: Path, project: str | None, run_name: str | None, environ: Mapping[str, str] = os.environ) -> dict:
    """The arguments of ``wandb.init``: a flag given wins over W&B's environment variables
    (WANDB_PROJECT, WANDB_NAME, WANDB_ENTITY, WANDB_MODE, WANDB_DIR, WANDB_RUN_ID, WANDB_RESUME),
    which win over pajama's defaults: project pajama, the run named after out_dir, its files in
    out_dir, and one W&B run per out_dir (its resolved path, so out/a/run and out/b/run differ),
    continued on resume."""
    out_dir = Path(out_dir)
    return {
        "project": project or environ.get("WANDB_PROJECT") or "pajama",
        "name": run_name or environ.get("WANDB_NAME") or out_dir.name,
        "entity": environ.get("WANDB_ENTITY") or None,
        "mode": environ.get("WANDB_MODE") or None,
        "dir": environ.get("WANDB_DIR") or str(out_dir),
        "id": environ.get("WANDB_RUN_ID") or hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16],
        "resume": environ.get("WANDB_RESUME") or "allow",
    }


def task_parts(m: dict[str, float]) -> list[str]:
    """Console pieces for downstream-task metrics (``task/<task>/<metric>``), if any."""
    tasks = [f"{k.removeprefix('task/')} {v:.3f}" for k, v in m.items() if k.startswith("task/")]
    return [f"tasks: {', '.join(tasks)} ({m['eval_task_time']:.1f} s)"] if tasks and "eval_task_time" in m else tasks


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: the override, else a known GPU's, else None (no MFU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory allocated (GPU), or the process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


class MetricsLog:
    """One CSV row per logged optimizer step, continued across resumes (rows past the resumed
    step, from a run that died after its last checkpoint, are dropped); the same numbers go to
    TensorBoard and W&B where ``logger`` names them."""

    def __init__(
        self, out_dir: Path, val_subsets: list[str], logger: str | Sequence[str], resume_step: int, enabled: bool, extra_columns: Sequence[str] = (),
        wandb_project: str | None = None, run_name: str | None = None,
    ) -> None:  # fmt: skip
        self.enabled = enabled
        self.columns = COLUMNS + [f"val_loss/{s}" for s in val_subsets] + list(extra_columns)
        self.extras = []  # TensorBoard's SummaryWriter, W&B's run
        if not enabled:
            return
        self.path = Path(out_dir) / "metrics.csv"
        rows = []
        if self.path.exists() and resume_step > 0:
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The kept rows go to a new file that replaces the old one whole: a kill now loses no history.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.file = open(tmp, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()
        os.fsync(self.file.fileno())
        os.replace(tmp, self.path)
        loggers = parse_loggers(logger)
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise PajamaError("--logger tensorboard needs the tensorboard package: pip install 'pajama[tensorboard]'") from None
            self.extras.append(SummaryWriter(str(Path(out_dir) / "tensorboard")))
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError:
                raise PajamaError("--logger wandb needs the wandb package: pip install 'pajama[wandb]'") from None
            self.extras.append(wandb.init(**wandb_init_args(out_dir, wandb_project, run_name)))

    def write(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.writer.writerow({"step": step, "tokens": tokens, **metrics})
        self.file.flush()
        for extra in self.extras:
            if hasattr(extra, "add_scalar"):
                for k, v in metrics.items():
                    extra.add_scalar(k, v, step)
            else:
                extra.log({"tokens": tokens, **metrics}, step=step)

    def console_line(self, step: int, tokens: int, m: dict[str, float]) -> str:
        parts = [f"step {step}", f"tokens {tokens:,}", f"loss {m['loss']:.4f}"]
        if "val_loss" in m:
            parts.append(f"val {m['val_loss']:.4f} (ppl {m['val_ppl']:.1f})")
        parts += task_parts(m)
        parts += [f"lr {m['lr']:.2e}", f"grad {m['grad_norm']:.2f}", f"{m['tokens_per_sec']:,.0f} tok/s"]
        if "mfu" in m:
            parts.append(f"MFU {m['mfu']:.1%}")
        if "loss_scale" in m:
            parts.append(f"scale {m['loss_scale']:g}")
        parts.append(f"{m['step_time'] * 1000:.0f} ms/step")
        return " | ".join(parts)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            for extra in self.extras:
                (extra.close if hasattr(extra, "close") else extra.finish)()
