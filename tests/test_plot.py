"""pajama plot: a PNG of loss, learning rate and throughput from a run's metrics.csv."""

import csv
import sys

import pytest

from pajama import PajamaError
from pajama.metrics import COLUMNS
from pajama.plot import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir, steps=30, eval_every=10):
    """metrics.csv as pretrain writes it: validation columns filled only at evaluation steps."""
    columns = COLUMNS + ["val_loss/arxiv", "val_loss/c4"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerow({"step": 0, "tokens": 0, "val_loss": 6.2, "val_ppl": 490.0, "val_loss/arxiv": 6.1, "val_loss/c4": 6.3})
        for step in range(1, steps + 1):
            row = {"step": step, "tokens": step * 512, "loss": 6.0 - step * 0.05, "lr": 1e-3 * min(1, step / 5), "grad_norm": 1.0, "tokens_per_sec": 4000 + step}
            if step % eval_every == 0:
                row |= {"val_loss": 6.1 - step * 0.05, "val_ppl": 400.0, "val_loss/arxiv": 6.0 - step * 0.05, "val_loss/c4": 6.2 - step * 0.05}
            writer.writerow(row)


def test_plot_writes_a_png_matplotlib_reads_back(tmp_path):
    import matplotlib.image as image
    write_metrics(tmp_path / "run")
    out = plot(tmp_path / "run")
    assert out == tmp_path / "run" / "loss.png"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(out)
    assert pixels.ndim == 3 and pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert pixels.std() > 0.01  # something was drawn

    custom = plot(tmp_path / "run", output=tmp_path / "plots" / "run.png")
    assert custom.is_file() and custom.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_errors(tmp_path, monkeypatch):
    with pytest.raises(PajamaError, match="metrics.csv: not found"):
        plot(tmp_path)
    (tmp_path / "metrics.csv").write_text("step,tokens,loss\n1,512,abc\n")
    with pytest.raises(PajamaError, match="not a number"):
        plot(tmp_path)
    write_metrics(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(PajamaError, match=r"pip install 'pajama\[plot\]'"):
        plot(tmp_path)
