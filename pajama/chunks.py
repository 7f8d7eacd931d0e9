"""Packed chunk files in lit-llama's format.

A chunk file is a 24-byte little-endian header (magic ``LITPKDS``, version 1, dtype code,
chunk size in tokens) followed by exactly ``chunk_size`` tokens. Files are named
``<prefix>_<counter:010d>.bin``. The last chunk of a prefix is padded up to ``chunk_size``
with a filler token; how many tokens of each file are real is recorded in the manifest
(see :mod:`pajama.prepare`), which is how training never reads the padding.

The writer also keeps the CRC-32 of every ``CHECKSUM_BLOCK`` bytes of each file it writes
(computed from memory, so no second read), which prepare records: a file damaged or
overwritten later is found, and the block where it differs named (:func:`damaged_offset`).
"""

from __future__ import annotations

import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np

from pajama import PajamaError

MAGIC = b"LITPKDS"
VERSION = 1
HEADER_SIZE = 24
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float32, 7: np.float64, 8: np.uint16}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
CHECKSUM = "crc32"  # of each block of a chunk file: zlib's, a few GB/s, against ~10 MB/s of tokens that prepare writes
CHECKSUM_BLOCK = 1 << 20  # bytes per checksum, so that a damage is placed within a MiB


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits with room to spare (as lit-llama decides), else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def chunk_name(prefix: str, counter: int) -> str:
    return f"{prefix}_{counter:010d}.bin"


def encode_header(dtype: np.dtype, chunk_size: int) -> bytes:
    return MAGIC + struct.pack("<QBQ", VERSION, CODES[np.dtype(dtype)], chunk_size)


def read_header(path: Path) -> tuple[np.dtype, int]:
    """(dtype, chunk_size) of a chunk file; a clear error if it is not one."""
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_SIZE)
    except OSError as e:
        raise PajamaError(f"{path}: cannot read chunk file: {e.strerror}") from None
    if len(header) < HEADER_SIZE or header[:7] != MAGIC:
        raise PajamaError(f"{path}: not a packed chunk file (no {MAGIC.decode()} header)")
    version, code, chunk_size = struct.unpack("<QBQ", header[7:])
    if version != VERSION:
        raise PajamaError(f"{path}: chunk format version {version}, expected {VERSION}")
    if code not in DTYPES:
        raise PajamaError(f"{path}: unknown dtype code {code}")
    dtype = np.dtype(DTYPES[code])
    expected = HEADER_SIZE + chunk_size * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise PajamaError(f"{path}: {size} bytes, expected {expected} for {chunk_size} {dtype} tokens (truncated?)")
    return dtype, chunk_size


def open_chunk(path: Path) -> np.memmap:
    """The tokens of a chunk file, memory-mapped read-only (the OS page cache does the rest)."""
    dtype, chunk_size = read_header(path)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(chunk_size,))


def block_checksums(*parts: bytes | memoryview | np.ndarray, block: int = CHECKSUM_BLOCK) -> list[int]:
    """CRC-32 of each ``block`` bytes (the last one may be shorter) of the parts written one
    after the other: the checksums of a file written from them."""
    crcs, crc, filled = [], 0, 0
    for part in parts:
        view = memoryview(part).cast("B")
        pos = 0
        while pos < len(view):
            take = min(len(view) - pos, block - filled)
            crc = zlib.crc32(view[pos : pos + take], crc)
            pos += take
            filled += take
            if filled == block:
                crcs.append(crc)
                crc, filled = 0, 0
    if filled:
        crcs.append(crc)
    return crcs


def damaged_offset(path: Path, crcs: list[int], block: int = CHECKSUM_BLOCK) -> int | None:
    """The byte offset of the first block of ``path`` whose CRC-32 is not the recorded one
    (a file longer than recorded: where the extra bytes start), or None when every block matches."""
    try:
        with open(path, "rb") as f:
            for i, want in enumerate(crcs):
                if zlib.crc32(f.read(block)) != want:
                    return i * block
            if f.read(1):
                return len(crcs) * block
    except OSError as e:
        raise PajamaError(f"{path}: cannot read chunk file: {e.strerror}") from None
    return None


def write_atomic(path: Path, *data: bytes | memoryview | np.ndarray, shared: bool = False) -> None:
    """Write ``data`` (one or more buffers, in order) to a temporary name in the same folder,
    fsync, then rename: a file under its final name is always complete.

    ``shared``: several processes (on several machines) may write this file at once, so the
    temporary name is made unique to this process.
    """
    unique = f".{socket.gethostname()}.{os.getpid()}" if shared else ""
    tmp = path.with_name(f".{path.name}{unique}.tmp")
    try:
        with open(tmp, "wb") as f:
            for buffer in data:
                f.write(buffer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PajamaError(f"{path}: cannot write: {e.strerror}") from None


class ChunkWriter:
    """Packs a stream of token arrays into consecutive chunk files of one prefix."""

    def __init__(self, directory: Path, prefix: str, chunk_size: int, dtype: np.dtype, filler: int) -> None:
        self.directory, self.prefix = directory, prefix
        self.chunk_size, self.dtype, self.filler = chunk_size, np.dtype(dtype), filler
        self.buffer = np.empty(chunk_size, dtype=self.dtype)
        self.fill = 0
        self.files: list[tuple[str, int]] = []  # (file name, real tokens in it)
        self.checksums: dict[str, list[int]] = {}  # file name -> CRC-32 of each CHECKSUM_BLOCK bytes

    def add(self, tokens: np.ndarray) -> None:
        start = 0
        while start < len(tokens):
            take = min(len(tokens) - start, self.chunk_size - self.fill)
            self.buffer[self.fill : self.fill + take] = tokens[start : start + take]
            self.fill += take
            start += take
            if self.fill == self.chunk_size:
                self._flush()

    def close(self) -> list[tuple[str, int]]:
        """Write the last, padded chunk; return every file written with its real token count."""
        if self.fill:
            self.buffer[self.fill :] = self.filler
            self._flush()
        return self.files

    def _flush(self) -> None:
        name = chunk_name(self.prefix, len(self.files))
        header = encode_header(self.dtype, self.chunk_size)
        write_atomic(self.directory / name, header, self.buffer)
        self.checksums[name] = block_checksums(header, self.buffer)
        self.files.append((name, self.fill))
        self.fill = 0
