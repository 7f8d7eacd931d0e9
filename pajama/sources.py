"""The RedPajama corpus on disk: which files belong to which subset, and reading their documents.

Two layouts are understood:

* RedPajama-Data-1T: one folder per subset, ``common_crawl/<dump>/*.jsonl.zst`` nested,
  the others plain ``.jsonl`` (``.jsonl.gz`` and ``.jsonl.zst`` are accepted everywhere);
* RedPajama-Data-1T-Sample: 11 flat ``<name>_sample.jsonl`` files (``--sample True``).

Every line is one JSON object with a string ``"text"``; anything else is a bad line, reported
as ``file:line: problem``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar, NamedTuple

import zstandard

from pajama import PajamaError


class UnreadableInput(PajamaError):
    """A file that cannot be read to its end: not a file, empty, corrupt or truncated."""


# LLaMA's pre-training mixture (LLaMA paper, table 1), sampling proportions in percent.
LLAMA_WEIGHTS = {
    "common_crawl": 67.0,
    "c4": 15.0,
    "github": 4.5,
    "wikipedia": 4.5,
    "book": 4.5,
    "arxiv": 2.5,
    "stackexchange": 2.0,
}
SUBSETS = tuple(sorted(LLAMA_WEIGHTS))
# Chunk-file prefixes start with these, so lit-llama's training globs (``cc*`` ...) match.
SHORT_NAMES = {s: ("cc" if s == "common_crawl" else s) for s in SUBSETS}

SAMPLE_FILES = {
    "arxiv_sample.jsonl": "arxiv",
    "book_sample.jsonl": "book",
    "c4_sample.jsonl": "c4",
    "cc_2019-30_sample.jsonl": "common_crawl",
    "cc_2020-05_sample.jsonl": "common_crawl",
    "cc_2021-04_sample.jsonl": "common_crawl",
    "cc_2022-05_sample.jsonl": "common_crawl",
    "cc_2023-06_sample.jsonl": "common_crawl",
    "github_sample.jsonl": "github",
    "stackexchange_sample.jsonl": "stackexchange",
    "wikipedia_sample.jsonl": "wikipedia",
}
# Older revisions of the Sample name the last Common Crawl file after 2023-05.
SAMPLE_ALIASES = {"cc_2023-06_sample.jsonl": "cc_2023-05_sample.jsonl"}
EXTENSIONS = (".jsonl", ".jsonl.zst", ".jsonl.gz")


@dataclass(frozen=True)
class SourceFile:
    subset: str
    path: Path  # absolute
    relpath: str  # relative to the corpus root, "/"-separated

    @property
    def compressed(self) -> bool:
        return self.relpath.endswith((".zst", ".gz"))

    @property
    def prefix(self) -> str:
        """Output prefix: the subset's short name, then the file's path, so names never collide."""
        stem = self.relpath
        for ext in EXTENSIONS:
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
        parts = stem.split("/")
        if parts[0] == self.subset:  # full layout: the subset folder is implied by the prefix
            parts = parts[1:]
        name = "_".join(parts)
        short = SHORT_NAMES[self.subset]
        return name if name.startswith(short + "_") else f"{short}_{name}"


def subset_of_prefix(name: str) -> str | None:
    """The subset a chunk file belongs to, from its name (lit-llama's and pajama's prefixes)."""
    for subset in sorted(SUBSETS, key=len, reverse=True):
        for start in {subset, SHORT_NAMES[subset]}:
            if name.startswith(start + "_") or name.startswith(start + "-"):
                return subset
    return None


def find_source_files(source_path: Path, sample: bool = False, subsets: list[str] | None = None) -> list[SourceFile]:
    """Every input file of the corpus at ``source_path``, sorted by subset then path.

    A subset absent from the download (usually ``book``) is reported and skipped, unless
    it was asked for in ``subsets``: then it is an error.
    """
    root = Path(source_path).expanduser().resolve()
    if not root.is_dir():
        raise PajamaError(f"{source_path}: source directory not found")
    for name in subsets or []:
        if name not in SUBSETS:
            raise PajamaError(f"unknown subset {name!r}; known subsets: {', '.join(SUBSETS)}")
    wanted = set(subsets or SUBSETS)
    files: list[SourceFile] = []
    if sample:
        for name, subset in sorted(SAMPLE_FILES.items()):
            if subset not in wanted:
                continue
            path = root / name
            if not path.exists() and name in SAMPLE_ALIASES:
                path = root / SAMPLE_ALIASES[name]
            if not path.exists():  # a directory of that name is kept: reading it reports the problem
                raise PajamaError(f"{root / name}: Sample file missing (the Sample layout has these 11 files: {', '.join(sorted(SAMPLE_FILES))})")
            files.append(SourceFile(subset, path, path.name))
    else:
        missing = []
        for subset in sorted(wanted):
            folder = root / subset
            found = sorted(
                p for p in (folder.rglob("*") if folder.is_dir() else []) if p.name.endswith(EXTENSIONS) and not p.name.startswith(".")
            )
            if not found:
                missing.append(subset)
                continue
            for p in found:
                files.append(SourceFile(subset, p, p.relative_to(root).as_posix()))
        if missing and subsets:
            raise PajamaError(f"{root}: no files for requested subset(s) {', '.join(missing)}")
        if not files:
            hint = " (it looks like the Sample layout: pass --sample True)" if any((root / n).is_file() for n in SAMPLE_FILES) else ""
            raise PajamaError(f"{root}: no RedPajama subset folders with .jsonl/.jsonl.zst/.jsonl.gz files found{hint}")
        if missing:
            print(f"note: subset(s) absent from {root}, skipped: {', '.join(missing)}")
    seen: dict[str, SourceFile] = {}
    for f in files:
        other = seen.setdefault(f.prefix, f)
        if other is not f:
            raise PajamaError(f"{f.path}: its output prefix {f.prefix!r} is the same as that of {other.path}; rename one of them")
    return files


BLOCK = 1 << 20  # bytes read (or decompressed) at a time


@dataclass
class BadLines:
    """Lines skipped in one file: a count and the first few ``file:line: problem`` messages."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: ClassVar[int] = 5

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)


class Document(NamedTuple):
    text: str
    line: int  # 1-based line number, counted from the start of the range read


class DocumentReader:
    """The documents of one source file, or of a byte range of a plain one, in order.

    Iterating yields every line that is a JSON object with a non-empty string ``"text"``.
    Any other line is a bad line: counted in ``bad`` (with its ``file:line``) and skipped, or,
    with ``strict``, raised as :class:`PajamaError`. Empty texts are skipped silently: there is
    nothing to train on. A file that cannot be read to its end (a directory, an empty file,
    corrupt or truncated compressed data) raises :class:`UnreadableInput` after every complete
    line before the damage has been yielded. ``position`` is how far into the file on disk
    the reading has got (compressed bytes for a compressed file), for progress reports.
    """

    def __init__(self, source: SourceFile, start: int = 0, end: int | None = None, strict: bool = False, bad: BadLines | None = None) -> None:
        self.source, self.start, self.end, self.strict = source, start, end, strict
        self.bad = bad if bad is not None else BadLines()
        self.position = start
        self.lines_read = 0
        self._base: int | None = 0 if start == 0 else None  # lines before ``start``, counted only if needed

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
        for raw in lines:
            self.lines_read += 1
            try:  # the common case, as few steps as possible
                line = raw.decode("utf-8")
                text = loads(line)["text"]
                # A surrogate escape may leave an unpaired surrogate, which is not Unicode:
                # those lines are checked below. An ASCII text (the flag is free to read) has none.
                if text.__class__ is str and (text.isascii() or ("\\ud" not in line and "\\uD" not in line)):
                    if text:
                        yield Document(text, self.lines_read)
                    continue
            except (ValueError, TypeError, KeyError, RecursionError):
                pass
            problem = _problem(raw)
            if problem is None:  # a surrogate pair escape, which is fine
                text = loads(raw)["text"]
                if text:
                    yield Document(text, self.lines_read)
                continue
            message = f"{self.where(self.lines_read)}: {problem}"
            if self.strict:
                raise PajamaError(message)
            self.bad.add(message)


def _problem(raw: bytes) -> str | None:
    """What is wrong with a line, if anything."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 (byte {e.start + 1} of the line)"
    try:
        record = json.loads(line)
    except ValueError as e:
        return f"not valid JSON ({e.msg}, column {e.colno})" if line.strip() else "empty line"
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    if not isinstance(record, dict):
        return "not a JSON object"
    text = record.get("text")
    if not isinstance(text, str):
        return 'no string "text" field'
    if not _encodable(text):
        return '"text" holds an unpaired surrogate escape (not valid Unicode)'
    return None


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


def count_lines_before(path: Path, offset: int) -> int:
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
