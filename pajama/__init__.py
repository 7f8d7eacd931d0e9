"""pajama: pre-train LLaMA-architecture language models on the RedPajama corpus."""

__version__ = "0.1.0"


class PajamaError(Exception):
    """A problem with the user's input or environment.

    The CLI prints it as one line (``pajama: error: ...``) and exits non-zero, without a
    traceback. The message names the file (and line) and the problem.
    """
