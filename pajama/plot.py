"""Plot a training run's ``metrics.csv``: loss, learning rate and throughput against tokens seen."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pajama import PajamaError

METRICS = "metrics.csv"


def plot(run_dir: Path, output: Path | None = None) -> Path:
    """Plot a run's training and validation loss, learning rate and throughput to a PNG.

    Runs with ``--eval_tasks`` also get their downstream-task curves (``task/...`` columns).

    Reads ``metrics.csv`` of a pajama pretrain out_dir; the x axis is tokens seen. Needs
    matplotlib (pip install 'pajama[plot]').

    Args:
        run_dir: the training out_dir holding metrics.csv.
        output: image to write (default: run_dir/loss.png); the suffix picks the format.
    """
    run_dir = Path(run_dir).expanduser()
    path = run_dir / METRICS
    if not path.is_file():
        raise PajamaError(f"{path}: not found (pajama pretrain writes it into its --out_dir)")
    columns, rows = _read(path)
    x_name = "tokens" if "tokens" in columns else "step"
    if x_name not in columns:
        raise PajamaError(f"{path}: no tokens or step column")

    def series(name: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for line, row in rows:
            x, y = _number(path, line, x_name, row.get(x_name)), _number(path, line, name, row.get(name))
            if x is not None and y is not None and math.isfinite(y):
                xs.append(x)
                ys.append(y)
        return xs, ys

    train, val = series("loss"), series("val_loss")
    if not train[0] and not val[0]:
        raise PajamaError(f"{path}: no loss logged yet")
    subsets = sorted(c for c in columns if c.startswith("val_loss/"))
    task_curves = [(c, series(c)) for c in columns if c.startswith("task/")]  # pretrain --eval_tasks
    task_curves = [(c, data) for c, data in task_curves if data[0]]

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PajamaError("plotting needs matplotlib: pip install 'pajama[plot]'") from None

    # A bare Figure on the Agg canvas: no pyplot, so no global backend is chosen or changed.
    fig = Figure(figsize=(9, 13 if task_curves else 10), layout="constrained")
    FigureCanvasAgg(fig)
    if task_curves:
        ax_loss, ax_tasks, ax_lr, ax_speed = fig.subplots(4, 1, sharex=True, height_ratios=(2, 1.5, 1, 1))
        for name, data in task_curves:
            ax_tasks.plot(*data, "o-", lw=1, ms=3, label=name.removeprefix("task/"))
        ax_tasks.set_ylabel("downstream tasks")
        ax_tasks.grid(alpha=0.3)
        ax_tasks.legend(fontsize="small")
    else:
        ax_loss, ax_lr, ax_speed = fig.subplots(3, 1, sharex=True, height_ratios=(2, 1, 1))
    fig.suptitle(f"pajama: {run_dir.resolve().name}")
    if train[0]:
        ax_loss.plot(*train, lw=1, alpha=0.8, label="training loss")
    for name in subsets:
        xs, ys = series(name)
        if xs:
            ax_loss.plot(xs, ys, lw=0.8, ls="--", alpha=0.6, label=f"validation: {name.split('/', 1)[1]}")
    if val[0]:
        ax_loss.plot(*val, "o-", color="black", lw=1.5, ms=3, label="validation loss (mixture)")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize="small")
    _panel(ax_lr, series("lr"), "learning rate")
    _panel(ax_speed, series("tokens_per_sec"), "tokens / s")
    ax_speed.set_xlabel("tokens seen" if x_name == "tokens" else "step")

    output = Path(output).expanduser() if output is not None else run_dir / "loss.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(output, dpi=110)
    except (OSError, ValueError) as e:
        raise PajamaError(f"{output}: cannot write the plot: {e}") from None
    print(f"wrote {output}")
    return output


def _panel(ax, data: tuple[list[float], list[float]], label: str) -> None:
    if data[0]:
        ax.plot(*data, lw=1)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PajamaError(f"{path}: cannot read: {e}") from None


def _number(path: Path, line: int, column: str, value: str | None) -> float | None:
    """A cell as a number; None where blank (not logged at that step)."""
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise PajamaError(f"{path}:{line}: column {column}: {value!r} is not a number") from None
