"""pajama: pre-train LLaMA-architecture language models on the RedPajama corpus."""

import os

__version__ = "0.1.0"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a SLURM or container limit), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class PajamaError(Exception):
    """A problem with the user's input or environment.

    The CLI prints it as one line (``pajama: error: ...``) and exits non-zero, without a
    traceback. The message names the file (and line) and the problem.
    """
