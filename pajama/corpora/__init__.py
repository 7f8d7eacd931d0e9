"""Corpora on disk: which files a corpus has, which subset each document belongs to, and reading them.

One module per layout, each finding its files::

    redpajama.py   RedPajama-Data-1T (a folder per subset) and its 11-file Sample
    slimpajama.py  SlimPajama-627B: split/chunk<N>/example_*_<i>.jsonl.zst, subsets mixed in every file
    parquet.py     a directory of Parquet files: SlimPajama's Parquet samples, code corpora (StarCoder)
    redpajama_v2.py  RedPajama-Data-V2: documents/<snapshot>/<shard>/<lang>_<part>.json.gz, filtered
                   on its quality signals (``quality.py``) and deduplicated on its duplicate lists

and one per file format, each reading documents: ``jsonl.py`` (plain, ``.zst``, ``.gz``) and
``parquet.py``. ``subsets.py`` has the subset names and LLaMA's mixture, ``common.py`` what
they all share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pajama import PajamaError
from pajama.corpora import redpajama, redpajama_v2, slimpajama
from pajama.corpora.common import PARQUET_EXTENSION, SPLITS, BadLines, Document, SourceFile, UnreadableInput
from pajama.corpora.jsonl import DocumentReader
from pajama.corpora.redpajama import SAMPLE_FILES
from pajama.corpora.subsets import LLAMA_WEIGHTS, SET_NAMES, SHORT_NAMES, SUBSETS, short_name, subset_of_prefix

if TYPE_CHECKING:
    from pajama.corpora.parquet import ParquetReader
    from pajama.corpora.redpajama_v2 import V2Reader

LAYOUTS = ("auto", "redpajama", "sample", "slimpajama", "parquet", "redpajama_v2")

__all__ = [
    "LAYOUTS", "LLAMA_WEIGHTS", "SAMPLE_FILES", "SET_NAMES", "SHORT_NAMES", "SPLITS", "SUBSETS",
    "BadLines", "Document", "DocumentReader", "SourceFile", "UnreadableInput",
    "detect_layout", "find_source_files", "open_documents", "short_name", "subset_of_prefix",
]  # fmt: skip


def detect_layout(root: Path) -> str:
    """The layout of the corpus at ``root``: SlimPajama's split/chunk folders, RedPajama's
    subset folders, else Parquet files anywhere; RedPajama's when none is found (its error
    then says what was expected). The Sample is never guessed: it takes ``--sample True``.
    RedPajama-Data-V2 is a ``documents`` folder holding snapshot folders."""
    if redpajama_v2.looks_like_v2(root):
        return "redpajama_v2"
    if slimpajama.looks_like_slimpajama(root):
        return "slimpajama"
    if redpajama.has_subset_folders(root):
        return "redpajama"
    if next(root.rglob(f"*{PARQUET_EXTENSION}"), None) is not None:
        return "parquet"
    return "redpajama"


def find_source_files(
    source_path: Path,
    sample: bool = False,
    subsets: list[str] | None = None,
    layout: str = "auto",
    split: str = "train",
    text_field: str = "text",
    subset_name: str | None = None,
    snapshots: list[str] | None = None,
    languages: list[str] | None = None,
    partitions: list[str] | None = None,
    rules: tuple = (),
    dedup: bool = False,
) -> list[SourceFile]:
    """Every input file of the corpus at ``source_path``, in reading order.

    ``layout`` is one of ``LAYOUTS`` (``sample`` is also ``sample=True``); ``subsets`` keeps
    only those subsets (in SlimPajama and its Parquet samples, documents of the others are
    skipped and counted); ``split`` picks SlimPajama's (or a Parquet corpus's) split;
    ``text_field`` is the JSON key or column of the text; ``subset_name`` names the one subset
    of a Parquet corpus whose rows do not name theirs. For RedPajama-Data-V2, ``snapshots``,
    ``languages`` and ``partitions`` choose its files, ``rules`` (:class:`quality.Rule`) filter
    its documents on their quality signals and ``dedup`` drops its listed duplicates.
    """
    root = Path(source_path).expanduser().resolve()
    if not root.is_dir():
        raise PajamaError(f"{source_path}: source directory not found")
    if layout not in LAYOUTS:
        raise PajamaError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if sample:
        if layout not in ("auto", "sample"):
            raise PajamaError(f"--sample True is the sample layout, not --layout {layout}")
        layout = "sample"
    elif layout == "auto":
        layout = detect_layout(root)
        if layout == "redpajama" and slimpajama.chunk_folders(root):
            raise PajamaError(f"{root}: holds chunk<N> folders, as one split of SlimPajama-627B does: pass the folder above it, with --split {root.name}")
    if split not in SPLITS:
        raise PajamaError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if not text_field:
        raise PajamaError("--text_field must name a field")
    if layout == "redpajama_v2":
        if subsets:
            raise PajamaError(f"{root}: RedPajama-Data-V2's subsets are its languages (rpv2_en ...): choose them with --languages, not --subsets")
        if split != "train" or text_field != "text" or subset_name is not None:
            raise PajamaError(f"{root}: RedPajama-Data-V2 takes no --split, --text_field or --subset_name (its text is raw_content, its subsets are its languages)")
        return redpajama_v2.find_files(root, snapshots, languages, partitions, tuple(rules), dedup)
    if snapshots or languages or partitions or rules or dedup:
        raise PajamaError(f"--snapshots, --languages, --partitions, --filters, --filter_rules and --dedup apply to RedPajama-Data-V2; {root} has the {layout} layout")
    if subset_name is not None and layout != "parquet":
        raise PajamaError(f"--subset_name names the subset of a Parquet corpus; {root} has the {layout} layout")
    if layout == "parquet":
        from pajama.corpora import parquet  # pyarrow takes 0.2 s to import: only for Parquet corpora

        files = parquet.find_files(root, subsets, split, text_field, subset_name)
    else:
        for name in subsets or []:
            if name not in SUBSETS:
                raise PajamaError(f"unknown subset {name!r}; known subsets: {', '.join(SUBSETS)}")
        wanted = frozenset(subsets or SUBSETS)
        if layout == "slimpajama":
            files = slimpajama.find_files(root, split, wanted, text_field)
        elif split != "train":
            raise PajamaError(f"{root}: RedPajama-Data-1T has no {split} split (SlimPajama-627B's layout has train, validation and test)")
        elif layout == "sample":
            files = redpajama.find_sample_files(root, set(wanted), text_field)
        else:
            files = redpajama.find_full_files(root, set(wanted), asked=bool(subsets), text_field=text_field)
    seen: dict[str, SourceFile] = {}
    for f in files:
        other = seen.setdefault(f.prefix, f)
        if other is not f:
            raise PajamaError(f"{f.path}: its output prefix {f.prefix!r} is the same as that of {other.path}; rename one of them")
    return files


def open_documents(source: SourceFile, start: int = 0, end: int | None = None, strict: bool = False, bad: BadLines | None = None) -> DocumentReader | ParquetReader | V2Reader:
    """A reader of the documents of ``source`` (of a byte range of a plain jsonl file, or of
    a range of row groups of a Parquet file), by its format; iterate it for :class:`Document`.
    Both readers count bad records in ``bad``, documents of subsets not kept in ``excluded``,
    and the bytes on disk read so far in ``consumed``."""
    if source.format == "parquet":
        from pajama.corpora.parquet import ParquetReader

        return ParquetReader(source, start, end, strict=strict, bad=bad)
    if source.format == redpajama_v2.LAYOUT:
        return redpajama_v2.V2Reader(source, start, end, strict=strict, bad=bad)
    return DocumentReader(source, start, end, strict=strict, bad=bad)
