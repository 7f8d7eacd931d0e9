"""The RedPajama corpus on disk: which files belong to which subset, and reading their documents.

Two layouts are understood:

* RedPajama-Data-1T: one folder per subset, ``common_crawl/<dump>/*.jsonl.zst`` nested,
  the others plain ``.jsonl`` (``.jsonl.gz`` and ``.jsonl.zst`` are accepted everywhere);
* RedPajama-Data-1T-Sample: 11 flat ``<name>_sample.jsonl`` files (``--sample True``).

Every line is one JSON object with a string ``"text"``; anything else is a bad line, reported
as ``file:line: problem``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from pajama import PajamaError


class UnreadableInput(PajamaError):
    """A file that cannot be read to its end: missing, not a file, corrupt or truncated."""

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
            if not path.is_file():
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
        if not files:
            hint = " (it looks like the Sample layout: pass --sample True)" if any((root / n).is_file() for n in SAMPLE_FILES) else ""
            raise PajamaError(f"{root}: no RedPajama subset folders with .jsonl/.jsonl.zst/.jsonl.gz files found{hint}")
        if missing:
            if subsets:
                raise PajamaError(f"{root}: no files for requested subset(s) {', '.join(missing)}")
            print(f"note: subset(s) absent from {root}, skipped: {', '.join(missing)}")
    return files


@dataclass
class BadLines:
    """Lines skipped in one file: a count and the first few ``file:line: problem`` messages."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)


@dataclass(frozen=True)
class Document:
    text: str
    line: int  # 1-based line number, counted from the start of the range read


def open_lines(path: Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Raw lines of a (possibly compressed) jsonl file; ``start``/``end`` are byte offsets of
    the uncompressed plain file and must be line boundaries."""
    name = path.name
    try:
        raw = open(path, "rb")
    except IsADirectoryError:
        raise UnreadableInput(f"{path}: is a directory, expected a jsonl file") from None
    except OSError as e:
        raise UnreadableInput(f"{path}: cannot open: {e.strerror}") from None
    with raw:
        if name.endswith(".zst"):
            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), 1 << 20)
        elif name.endswith(".gz"):
            stream = io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20)
        else:
            raw.seek(start)
            stream = raw
        remaining = None if end is None else end - start
        for line in stream:
            if remaining is not None:
                if remaining <= 0:
                    break
                remaining -= len(line)
            yield line


def read_documents(
    source: SourceFile,
    start: int = 0,
    end: int | None = None,
    strict: bool = False,
    bad: BadLines | None = None,
) -> Iterator[Document]:
    """Documents of ``source`` (between byte offsets ``start`` and ``end`` of a plain file).

    A bad line is counted in ``bad`` and skipped, or raises with ``strict``. Empty texts are
    skipped silently: there is nothing to train on. A compressed stream that is truncated or
    corrupt raises after yielding every document before the damage.
    """
    bad = bad if bad is not None else BadLines()
    line_no = 0
    base: int | None = 0 if start == 0 else None  # lines before ``start``, counted only if needed

    def where() -> str:
        nonlocal base
        if base is None:
            base = count_lines_before(source.path, start)
        return f"{source.path}:{base + line_no}"

    lines = open_lines(source.path, start, end)
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except (zstandard.ZstdError, EOFError, gzip.BadGzipFile, OSError) as e:
            line_no += 1
            raise UnreadableInput(f"{where()}: corrupt or truncated data ({e})") from None
        line_no += 1
        problem = None
        try:
            record = json.loads(raw)
        except UnicodeDecodeError:
            problem = "invalid UTF-8"
        except ValueError as e:
            problem = f"not valid JSON ({e.msg})" if raw.strip() else "empty line"
            record = None
        if problem is None:
            if not isinstance(record, dict):
                problem = "not a JSON object"
            elif not isinstance(record.get("text"), str):
                problem = 'no string "text" field'
        if problem is not None:
            message = f"{where()}: {problem}"
            if strict:
                raise PajamaError(message)
            bad.add(message)
            continue
        if record["text"]:
            yield Document(record["text"], line_no)


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


def file_size(path: Path) -> int:
    return os.stat(path).st_size
