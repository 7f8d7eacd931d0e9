"""Start-up time of the ``pajama`` command: wall clock of a fresh process, median of N runs.

Run by hand: ``python bench/startup_bench.py [--runs 10]``.

Each command runs as ``python -m pajama.cli ...`` (what the ``pajama`` launcher does, without
the launcher's own start), output discarded, after one untimed run that warms the file cache.
The commands take turns, run after run, so that a change in the machine's load touches them
all alike. The interpreter alone and ``import torch`` are the baselines: a command that does
not need torch should cost about the interpreter plus a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time

from pajama.hardware import cpu_info

PYTHON = [sys.executable]
PAJAMA = [sys.executable, "-m", "pajama.cli"]
COMMANDS = {
    "python -c pass": [*PYTHON, "-c", "pass"],
    'python -c "import torch"': [*PYTHON, "-c", "import torch"],
    "pajama --help": [*PAJAMA, "--help"],
    "pajama model 7B": [*PAJAMA, "model", "7B"],
    "pajama prepare --help": [*PAJAMA, "prepare", "--help"],
    "pajama data verify --help": [*PAJAMA, "data", "verify", "--help"],
    "pajama quickstart --help": [*PAJAMA, "quickstart", "--help"],
    "pajama export --help": [*PAJAMA, "export", "--help"],
    "pajama pretrain --help": [*PAJAMA, "pretrain", "--help"],
}


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    for command in COMMANDS.values():
        wall_time(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(wall_time(command))
    print(f"CPU: {cpu_info().describe()}")
    print(f"Python {platform.python_version()}, torch {importlib.metadata.version('torch')}, load average {load:.2f} at start, {args.runs} runs each")
    print("\n| command | median | min | max |\n|---|---|---|---|")
    for name, runs in times.items():
        print(f"| `{name}` | {statistics.median(runs):.3f} s | {min(runs):.3f} s | {max(runs):.3f} s |")


if __name__ == "__main__":
    main()
