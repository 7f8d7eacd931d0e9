"""Tokenizers: SentencePiece (LLaMA's ``tokenizer.model``) and Hugging Face (a ``tokenizer.json``,
such as Llama 3's), behind one interface.

Either kind has ``kind`` ("sentencepiece" or "huggingface"), ``path`` (its main file),
``files`` (what to copy to keep it), ``sha256`` (of the main file), ``vocab_size`` (above every
id it produces), ``bos_id`` and ``eos_id``, ``encode``, ``encode_batches``, ``decode`` and
``copy_to``; pickled, it is its path and what loading found out, read again and checked
against the hash on the other side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pajama import PajamaError
from pajama.tokenizer.common import BATCH_CHARS
from pajama.tokenizer.huggingface import CONFIG_FILES, HFTokenizer
from pajama.tokenizer.sentencepiece import SentencePieceTokenizer, is_tiktoken
from pajama.tokenizer.train import train_tokenizer

AnyTokenizer = SentencePieceTokenizer | HFTokenizer
KINDS = (SentencePieceTokenizer, HFTokenizer)  # in order of preference in a directory holding both
COPY_NAMES = tuple(kind.file_name for kind in KINDS) + CONFIG_FILES  # every name copy_to may write

__all__ = ["BATCH_CHARS", "COPY_NAMES", "AnyTokenizer", "HFTokenizer", "SentencePieceTokenizer", "find_tokenizer", "load_tokenizer", "train_tokenizer"]


def load_tokenizer(path: Path | str) -> SentencePieceTokenizer | HFTokenizer:
    """The tokenizer at ``path``: a SentencePiece model (``tokenizer.model``), a Hugging Face
    ``tokenizer.json``, or a directory holding one of them.

    A file is read as a Hugging Face tokenizer when its name ends in ``.json`` or it starts
    with ``{``, else as a SentencePiece model. A directory holding both is read as
    SentencePiece: Hugging Face's LLaMA 1 and 2 directories ship both, and data for them
    has been prepared with the ``tokenizer.model``. A missing or unreadable tokenizer is a
    PajamaError naming the path.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / kind.file_name for kind in KINDS if (path / kind.file_name).is_file()]
        if len(found) == 2 and _is_tiktoken_file(found[0]):  # Meta's Llama 3 tokenizer.model: not SentencePiece
            found.pop(0)
        if found:
            return load_tokenizer(found[0])
        raise PajamaError(f"{path}: tokenizer not found (no {' or '.join(k.file_name for k in KINDS)} in this directory)")
    if not path.is_file():
        raise PajamaError(f"{path}: tokenizer not found (expected a SentencePiece tokenizer.model, a Hugging Face tokenizer.json, or a directory holding one)")
    return (HFTokenizer if _looks_like_json(path) else SentencePieceTokenizer)(path)


def _is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return is_tiktoken(f.read(256))


def _looks_like_json(path: Path) -> bool:
    if path.suffix == ".json":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(64).lstrip().startswith(b"{")  # a SentencePiece model starts with a protobuf tag, never "{"
    except OSError:
        return False


def find_tokenizer(directory: Path | str, sha256: str | None = None) -> SentencePieceTokenizer | HFTokenizer | None:
    """The tokenizer kept in ``directory`` by ``copy_to`` (as ``tokenizer.model`` or
    ``tokenizer.json``) whose main file has checksum ``sha256`` (any, if None); None if
    there is none."""
    directory = Path(directory)
    for kind in KINDS:
        path = directory / kind.file_name
        if not path.is_file():
            continue
        if sha256 is None or hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return kind(path)
    return None
