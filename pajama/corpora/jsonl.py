"""Reading jsonl files (plain, ``.zst`` or ``.gz``): one JSON object per line, the text under a key.

Anything but an object with a string text is a bad line, reported as ``file:line: problem``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import zstandard

from pajama import PajamaError
from pajama.corpora.common import BadLines, Document, SourceFile, UnreadableInput
from pajama.corpora.subsets import SET_NAME_FIELD, SET_NAMES

BLOCK = 1 << 20  # bytes read (or decompressed) at a time


class DocumentReader:
    """The documents of one jsonl file, or of a byte range of a plain one, in order.

    Iterating yields every line that is a JSON object with a non-empty string text (under
    ``source.text_field``; for a routed file also a known ``meta.redpajama_set_name``, whose
    subset the document carries; documents of subsets not kept are counted in ``excluded``).
    Any other line is a bad line: counted in ``bad`` (with its ``file:line``) and skipped, or,
    with ``strict``, raised as :class:`PajamaError`. Empty texts are skipped and counted in
    ``empty``: there is nothing to train on. A file that cannot be read to its end (a directory, an empty file,
    corrupt or truncated compressed data) raises :class:`UnreadableInput` after every complete
    line before the damage has been yielded. ``position`` is how far into the file on disk
    the reading has got (compressed bytes for a compressed file), for progress reports.
    """

    def __init__(self, source: SourceFile, start: int = 0, end: int | None = None, strict: bool = False, bad: BadLines | None = None) -> None:
        self.source, self.start, self.end, self.strict = source, start, end, strict
        self.bad = bad if bad is not None else BadLines()
        self.position = start
        self.lines_read = 0
        self.empty = 0  # records whose text is empty
        self.excluded: dict[str, int] = {}  # documents of subsets not kept, by subset
        self._base: int | None = 0 if start == 0 else None  # lines before ``start``, counted only if needed

    @property
    def consumed(self) -> int:
        """Bytes of the range on disk read so far."""
        return self.position - self.start

    def where(self, line: int) -> str:
        """``file:line`` of the ``line``-th line of the range (1-based), counted from the file's start."""
        if self._base is None:
            self._base = count_lines_before(self.source.path, self.start)
        return f"{self.source.path}:{self._base + line}"

    def __iter__(self) -> Iterator[Document]:
        path = self.source.path
        try:
            raw = open(path, "rb")
        except IsADirectoryError:
            raise UnreadableInput(f"{path}: is a directory, expected a jsonl file") from None
        except OSError as e:
            raise UnreadableInput(f"{path}: cannot open: {e.strerror}") from None
        with raw:
            if self.start == 0 and self.end is None and os.fstat(raw.fileno()).st_size == 0:
                raise UnreadableInput(f"{path}: empty file (0 bytes; an interrupted download?)")
            yield from self._documents(_lines(self._blocks(raw)))

    def _blocks(self, raw: BinaryIO) -> Iterator[bytes]:
        name = self.source.path.name
        if name.endswith(".zst"):
            yield from self._decompress(raw, "zstd", zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError)
        elif name.endswith(".gz"):
            yield from self._decompress(raw, "gzip", lambda: zlib.decompressobj(wbits=31), zlib.error)
        else:
            raw.seek(self.start)
            left = None if self.end is None else self.end - self.start
            while left is None or left > 0:
                block = raw.read(BLOCK if left is None else min(BLOCK, left))
                if not block:
                    return
                self.position += len(block)
                if left is not None:
                    left -= len(block)
                yield block

    def _decompress(self, raw: BinaryIO, kind: str, new: Callable, error: type[Exception]) -> Iterator[bytes]:
        """Decompressed blocks of a stream of one or more frames (members); raises at a
        corrupt frame or when the data ends inside one (a truncated file)."""
        decompressor, fed = new(), False
        while True:
            data = raw.read(BLOCK)
            if not data:
                break
            self.position += len(data)
            while data:
                try:
                    out = decompressor.decompress(data)
                except error as e:
                    raise UnreadableInput(f"{self.where(self.lines_read + 1)}: corrupt {kind} data ({e})") from None
                fed = True
                if out:
                    yield out
                if decompressor.eof:  # end of a frame: any bytes left start the next one
                    data, decompressor, fed = decompressor.unused_data, new(), False
                else:
                    data = b""
        if fed:
            raise UnreadableInput(f"{self.where(self.lines_read + 1)}: truncated {kind} data (the file ends inside a compressed frame; an interrupted download?)")

    def _documents(self, lines: Iterator[bytes]) -> Iterator[Document]:
        loads = json.loads
        key = self.source.text_field
        routed, keep, excluded = self.source.routed, self.source.keep, self.excluded
        for raw in lines:
            self.lines_read += 1
            try:  # the common case, as few steps as possible
                line = raw.decode("utf-8")
                record = loads(line)
                text = record[key]
                # A surrogate escape may leave an unpaired surrogate, which is not Unicode:
                # those lines are checked below. An ASCII text (the flag is free to read) has none.
                if text.__class__ is str and (text.isascii() or ("\\ud" not in line and "\\uD" not in line)):
                    if not text:
                        self.empty += 1
                        continue
                    if not routed:
                        yield Document(text, self.lines_read)
                        continue
                    subset = SET_NAMES.get(record["meta"][SET_NAME_FIELD])
                    if subset is not None:
                        if subset in keep:
                            yield Document(text, self.lines_read, subset)
                        else:
                            excluded[subset] = excluded.get(subset, 0) + 1
                        continue
            except (ValueError, TypeError, KeyError, RecursionError):
                pass
            problem, text, subset = _check(raw, key, routed)
            if problem is None:  # a surrogate pair escape, which is fine
                if not text:
                    self.empty += 1
                elif subset is not None and subset not in keep:
                    excluded[subset] = excluded.get(subset, 0) + 1
                else:
                    yield Document(text, self.lines_read, subset)
                continue
            message = f"{self.where(self.lines_read)}: {problem}"
            if self.strict:
                raise PajamaError(message)
            self.bad.add(message)


def _check(raw: bytes, key: str, routed: bool) -> tuple[str | None, str | None, str | None]:
    """(what is wrong with a line or None, its text, its subset if routed)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 (byte {e.start + 1} of the line)", None, None
    try:
        record = json.loads(line)
    except ValueError as e:
        return (f"not valid JSON ({e.msg}, column {e.colno})" if line.strip() else "empty line"), None, None
    except RecursionError:
        return "not valid JSON (nested too deeply)", None, None
    if not isinstance(record, dict):
        return "not a JSON object", None, None
    text = record.get(key)
    if not isinstance(text, str):
        return f'no string "{key}" field', None, None
    if not _encodable(text):
        return f'"{key}" holds an unpaired surrogate escape (not valid Unicode)', None, None
    if not routed or not text:
        return None, text, None
    meta = record.get("meta")
    name = meta.get(SET_NAME_FIELD) if isinstance(meta, dict) else None
    if not isinstance(name, str):
        return f'no string "meta"."{SET_NAME_FIELD}" field (the subset of the document)', None, None
    if name not in SET_NAMES:
        return f'unknown "{SET_NAME_FIELD}" {name!r} (known: {", ".join(SET_NAMES)})', None, None
    return None, text, SET_NAMES[name]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a stream of blocks, without their newline; a last line without one too.
    A line longer than a block is joined once, however many blocks it spans."""
    parts: list[bytes] = []
    for block in blocks:
        if b"\n" not in block:
            parts.append(block)
            continue
        lines = block.split(b"\n")
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
        tail = lines.pop()
        parts = [tail] if tail else []
        yield from lines
    if parts:
        yield b"".join(parts)


def count_lines_before(path, offset: int) -> int:
    """Newlines in the first ``offset`` bytes of a plain file (to report absolute line numbers)."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 24))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count
