"""What every layout and file format shares: a source file, its documents, and what goes wrong reading them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

from pajama import PajamaError
from pajama.corpora.subsets import short_name

JSONL_EXTENSIONS = (".jsonl", ".jsonl.zst", ".jsonl.gz")
PARQUET_EXTENSION = ".parquet"
SPLITS = ("train", "validation", "test")  # SlimPajama's, and those of Hugging Face's Parquet exports
# Numbers in the names of numbered files (SlimPajama's ``example_train_<i>``) are padded to
# this many digits in output names, so that names sort in the files' numeric order.
NUMBER_WIDTH = 5


class UnreadableInput(PajamaError):
    """A file that cannot be read to its end: not a file, empty, corrupt or truncated."""


@dataclass(frozen=True)
class SourceFile:
    """One input file and how to read it.

    ``subset`` is the subset of all its documents, or None when every document names its own
    (``meta.redpajama_set_name``, as in SlimPajama): then the documents of the subsets in
    ``keep`` are read and those of others skipped and counted. ``text_field`` is the JSON key
    or Parquet column holding the text. ``numbered`` files are ordered (and their output
    named) by the numbers in their names.
    """

    subset: str | None
    path: Path  # absolute
    relpath: str  # relative to the corpus root, "/"-separated
    text_field: str = "text"
    keep: frozenset[str] = frozenset()
    numbered: bool = False

    @property
    def routed(self) -> bool:
        """Each document goes to the subset its record names."""
        return self.subset is None

    @property
    def format(self) -> str:
        return "parquet" if self.relpath.endswith(PARQUET_EXTENSION) else "jsonl"

    @property
    def compressed(self) -> bool:
        return self.relpath.endswith((".zst", ".gz", PARQUET_EXTENSION))

    @property
    def prefix(self) -> str:
        """Output prefix: the subset's short name (none for a routed file: its chunk files
        are per subset), then the file's path, so names never collide."""
        stem = self.relpath
        for ext in (*JSONL_EXTENSIONS, PARQUET_EXTENSION):
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
                break
        if self.numbered:
            stem = re.sub(r"\d+", lambda m: m[0].zfill(NUMBER_WIDTH), stem)
        parts = stem.split("/")
        if self.subset is None:
            return "_".join(parts)
        if parts[0] == self.subset:  # RedPajama's layout: the subset folder is implied by the prefix
            parts = parts[1:]
        name = "_".join(parts)
        short = short_name(self.subset)
        return name if name.startswith(short + "_") else f"{short}_{name}"


class Document(NamedTuple):
    text: str
    line: int  # 1-based line (or row of a Parquet file, from 0), counted from the start of the range read
    subset: str | None = None  # a routed file's document: its subset


@dataclass
class BadLines:
    """Records skipped in one file: a count and the first few ``file:line: problem`` messages."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: ClassVar[int] = 5

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)
