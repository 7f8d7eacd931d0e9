"""Progress bars (tqdm on stderr) that suit a terminal and a log file alike."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(**kwargs) -> tqdm:
    """A tqdm bar. A log file (a SLURM job's output, say) keeps every redraw, so there the bar
    redraws at most once a minute; in a terminal as often as tqdm likes."""
    if not sys.stderr.isatty():
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), 60.0)
    return tqdm(**kwargs)
