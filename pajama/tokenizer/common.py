"""What every kind of tokenizer shares: framing documents as ``BOS ids EOS`` in bounded
batches, the checksum, and keeping a copy of its files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pajama import PajamaError
from pajama.chunks import write_atomic

# Characters encoded per call of encode_batches' output: bounds memory, and is small enough
# (about a tenth of a second of work) that a worker left alone at the end soon encodes on
# the cores the others have freed.
BATCH_CHARS = 1_000_000


def read_checked(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, which must still hash to ``sha256``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PajamaError(f"{path}: cannot read the tokenizer: {e.strerror}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise PajamaError(f"{path}: the tokenizer file changed while in use")
    return data


class FramingTokenizer:
    """The part of a tokenizer that does not depend on its library.

    A subclass sets ``kind``, ``file_name`` (the name its main file gets in a copy),
    ``split_above``, and in ``__init__`` ``path``, ``sha256``, ``vocab_size``, ``bos_id``,
    ``eos_id``, ``splittable`` and ``side_files``; it implements ``encode``, ``decode``,
    ``split`` and ``_encode_pieces``.
    """

    kind: str
    file_name: str
    split_above: int
    path: Path
    sha256: str
    vocab_size: int
    bos_id: int
    eos_id: int
    splittable: bool
    side_files: list[Path]  # files beside the main one that belong to the tokenizer

    @property
    def files(self) -> list[Path]:
        """The files that make up this tokenizer: the main one first."""
        return [self.path, *self.side_files]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, eos_id={self.eos_id})"

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def _encode_pieces(self, pieces: list[str], dtype: np.dtype, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of ``pieces`` back to back as one array of ``dtype``, and how many each has."""
        raise NotImplementedError

    def encode_batches(self, texts: Iterable[str], dtype: np.dtype, max_chars: int = BATCH_CHARS, num_threads: int = 1) -> Iterator[np.ndarray]:
        """Every text framed as ``BOS ids EOS``, as arrays of the concatenated stream, each from
        about ``max_chars`` characters of text, so memory stays bounded however long a text is.

        Long texts are encoded in pieces when the tokenizer allows it exactly (see ``split``);
        ``num_threads`` threads encode each batch.
        """
        pieces: list[str] = []
        at: list[int] = []  # where each document's BOS and EOS go, in order: before pieces[i] is i
        inside = False  # the batch starts inside a document, so with its EOS
        size = 0
        split_above = self.split_above if self.splittable else None
        for text in texts:
            at.append(len(pieces))
            if split_above is None or len(text) <= split_above:  # the common case, kept cheap
                pieces.append(text)
                size += len(text)
            else:
                parts = self.split(text)
                last = len(parts) - 1
                for i, part in enumerate(parts):  # one by one, so a huge text is encoded in bounded steps
                    pieces.append(part)
                    size += len(part)
                    if size >= max_chars and i < last:
                        yield self._frame(pieces, at, inside, dtype, num_threads)
                        pieces, at, inside, size = [], [], True, 0
            at.append(len(pieces))
            if size >= max_chars:
                yield self._frame(pieces, at, inside, dtype, num_threads)
                pieces, at, inside, size = [], [], False, 0
        if pieces:
            yield self._frame(pieces, at, inside, dtype, num_threads)

    def _frame(self, pieces: list[str], at: list[int], inside: bool, dtype: np.dtype, num_threads: int) -> np.ndarray:
        """The ids of ``pieces`` back to back, with BOS and EOS inserted at ``at`` (piece
        boundaries, in order). They alternate, from an EOS if the first piece continues a
        document (``inside``), else from a BOS."""
        ids, lengths = self._encode_pieces(pieces, dtype, num_threads)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        marks = np.resize(np.array([self.eos_id, self.bos_id] if inside else [self.bos_id, self.eos_id], dtype), len(at))
        return np.insert(ids, offsets[at], marks)  # several at one offset keep their order

    def copy_to(self, directory: Path) -> None:
        """Keep a copy of the tokenizer in ``directory``: its main file as ``file_name``, the
        files beside it under their own names.

        Each file is written to a name unique to this process and renamed into place, so
        several processes (on several machines) may copy at once; a file already there with
        the same bytes is left alone. The main file comes last: once it is there, the copy
        is complete.
        """
        directory = Path(directory)
        copies = []
        for source in self.side_files:
            try:
                copies.append((source.name, source.read_bytes()))
            except OSError as e:
                raise PajamaError(f"{source}: cannot read: {e.strerror}") from None
        copies.append((self.file_name, read_checked(self.path, self.sha256)))
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in copies:
            target = directory / name
            try:
                if target.read_bytes() == data:
                    continue
            except OSError:
                pass  # not there yet
            write_atomic(target, data, shared=True)
