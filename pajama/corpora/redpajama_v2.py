"""RedPajama-Data-V2's layout, with its quality signals and exact-duplicate lists.

Relative to the corpus root, for each snapshot (``2023-06``), shard (``0000``), language
(en de fr es it) and CCNet perplexity partition (head middle tail)::

    documents/<snapshot>/<shard>/<lang>_<part>.json.gz                 gzip jsonl, text in raw_content
    quality_signals/<snapshot>/<shard>/<lang>_<part>.signals.json.gz   line i: signals of document i
    duplicates/<snapshot>/<shard>/<lang>_<part>.duplicates.parquet     doc_id: later copies, to drop

The tail partition has neither signals nor duplicate lists, so it can be prepared only
unfiltered. A document's id is ``<snapshot>/<shard>/<lang>_<part>.json.gz/<row>`` (row from 0).

Subsets are per language, ``rpv2_<lang>`` (``rpv2_en``): a training mixture weighs languages
against each other and against other corpora, while snapshots and the head/middle buckets are
slices of one distribution that a mixture has no reason to weigh apart (the chunk files'
names still carry snapshot, shard and partition, for anyone who wants to).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pajama import PajamaError
from pajama.corpora.common import BadLines, Document, SourceFile, UnreadableInput
from pajama.corpora.jsonl import BLOCK, DocumentReader, _lines
from pajama.corpora.quality import Rule, judge

LAYOUT = "redpajama_v2"
TEXT_FIELD = "raw_content"
LANGUAGES = ("en", "de", "fr", "es", "it")
PARTITIONS = ("head", "middle", "tail")
DEFAULT_LANGUAGES = ("en",)
DEFAULT_PARTITIONS = ("head", "middle")
UNFILTERED_PARTITIONS = ("tail",)  # no quality signals, no duplicate lists
SNAPSHOT = re.compile(r"\d{4}-\d{2}")
SHARD = re.compile(r"\d+")
DOCUMENT_FILE = re.compile(r"(?P<lang>[a-z]+)_(?P<part>[a-z]+)\.json\.gz")
DUPLICATE = "exact_duplicate"  # the pseudo-rule of exact deduplication, in the report
NO_SIGNALS = "missing_signals"  # a document whose signals line is missing: it cannot be judged
SAMPLE_REJECTED, SAMPLE_KEPT, SAMPLE_CHARS = 6, 3, 400  # the per-unit sample for ``data inspect``
EXAMPLE_IDS = 3  # document ids kept per rule in the report


def subset_of(language: str) -> str:
    return f"rpv2_{language}"


@dataclass(frozen=True)
class V2File(SourceFile):
    """One documents file of RedPajama-Data-V2, with where its signals and duplicate list
    are, and the filters to apply (``rules``; ``dedup``: drop the listed duplicates)."""

    snapshot: str = ""
    shard: str = ""
    language: str = ""
    partition: str = ""
    signals: Path | None = None
    duplicates: Path | None = None
    rules: tuple[Rule, ...] = ()
    dedup: bool = False

    @property
    def format(self) -> str:
        return LAYOUT

    @property
    def compressed(self) -> bool:
        return True

    @property
    def prefix(self) -> str:
        return f"{self.subset}_{self.snapshot}_{self.shard}_{self.partition}"

    @property
    def document_id_prefix(self) -> str:
        return f"{self.snapshot}/{self.shard}/{self.language}_{self.partition}.json.gz"

    @property
    def filtered(self) -> bool:
        return bool(self.rules) or self.dedup

    @property
    def root(self) -> Path:
        """The corpus root, which ``relpath`` is relative to."""
        return self.path.parents[len(self.relpath.split("/")) - 1]


def looks_like_v2(root: Path) -> bool:
    """A ``documents`` folder holding a snapshot folder."""
    folder = root / "documents"
    return folder.is_dir() and any(p.is_dir() and SNAPSHOT.fullmatch(p.name) for p in folder.iterdir())


def find_files(
    root: Path,
    snapshots: list[str] | None = None,
    languages: list[str] | None = None,
    partitions: list[str] | None = None,
    rules: tuple[Rule, ...] = (),
    dedup: bool = False,
) -> list[V2File]:
    """The documents files of the chosen snapshots (default: all present), languages
    (default: en) and partitions (default: head and middle), in snapshot, shard, language,
    partition order. Filters (``rules``, ``dedup``) on a tail file are refused, naming them:
    the tail has no signals or duplicate lists."""
    folder = root / "documents"
    if not folder.is_dir():
        raise PajamaError(f"{root}: no documents/ folder (RedPajama-Data-V2's layout: documents/<snapshot>/<shard>/<lang>_<part>.json.gz)")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and SNAPSHOT.fullmatch(p.name))
    for name, values, known in (("--languages", languages, LANGUAGES), ("--partitions", partitions, PARTITIONS)):
        for value in values or []:
            if value not in known:
                raise PajamaError(f"{name}: unknown {value!r}; RedPajama-Data-V2 has {', '.join(known)}")
    missing = [s for s in snapshots or [] if s not in present]
    if missing:
        raise PajamaError(f"{folder}: no snapshot folder(s) {', '.join(missing)} (present: {', '.join(present) or 'none'})")
    wanted_languages = set(languages or DEFAULT_LANGUAGES)
    wanted_partitions = set(partitions or DEFAULT_PARTITIONS)
    files = []
    for snapshot in snapshots or present:
        for shard in sorted(p for p in (folder / snapshot).iterdir() if p.is_dir() and SHARD.fullmatch(p.name)):
            for path in sorted(shard.iterdir()):
                match = DOCUMENT_FILE.fullmatch(path.name)
                if match is None or match["lang"] not in wanted_languages or match["part"] not in wanted_partitions:
                    continue
                tag = f"{snapshot}/{shard.name}/{match['lang']}_{match['part']}"
                files.append(
                    V2File(
                        subset_of(match["lang"]),
                        path,
                        path.relative_to(root).as_posix(),
                        text_field=TEXT_FIELD,
                        snapshot=snapshot,
                        shard=shard.name,
                        language=match["lang"],
                        partition=match["part"],
                        signals=root / "quality_signals" / f"{tag}.signals.json.gz",
                        duplicates=root / "duplicates" / f"{tag}.duplicates.parquet",
                        rules=tuple(rules),
                        dedup=dedup,
                    )
                )
    if not files:
        raise PajamaError(
            f"{folder}: no documents files of languages {', '.join(sorted(wanted_languages))} and partitions {', '.join(sorted(wanted_partitions))} "
            f"in snapshot(s) {', '.join(snapshots or present) or '(none present)'}"
        )
    tail = [f for f in files if f.partition in UNFILTERED_PARTITIONS]
    if tail and (rules or dedup):
        asked = ", ".join(filter(None, [f"{len(rules)} filter rule(s)" if rules else "", "--dedup" if dedup else ""]))
        raise PajamaError(
            f"{len(tail)} tail file(s) selected ({', '.join(f.relpath for f in tail[:3])}{' ...' if len(tail) > 3 else ''}): "
            f"the tail partition has no quality signals or duplicate lists, so {asked} cannot apply to it; "
            "leave tail out (--partitions head,middle) or prepare it without filters and dedup"
        )
    return files


@dataclass
class FilterReport:
    """What the filters of one unit removed: documents read, kept and removed, and per rule
    the documents and characters it removed (a document removed by several rules counts under
    each, and once in ``removed``), how many had a null value, and a few document ids; the
    tokens removed too when ``count_tokens``, which costs tokenizing every removed document."""

    rules: list[str]
    count_tokens: bool = False
    missing: list[str] = field(default_factory=list)  # signals files and duplicate lists not there, relative to the corpus root
    read: int = 0
    kept: int = 0
    removed_documents: int = 0
    removed_characters: int = 0
    removed_tokens: int = 0
    by_rule: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.rules:  # every rule is reported, those that removed nothing too
            self.rule(name)

    def rule(self, name: str) -> dict:
        return self.by_rule.setdefault(name, {"documents": 0, "characters": 0, "tokens": 0, "null": 0, "examples": []})

    def as_record(self) -> dict:
        order = [*self.rules, *sorted(n for n in self.by_rule if n not in self.rules)]
        removed = {"documents": self.removed_documents, "characters": self.removed_characters}
        if self.count_tokens:
            removed["tokens"] = self.removed_tokens
        return {
            "rules": self.rules,
            "read": self.read,
            "kept": self.kept,
            "removed": removed,
            "by_rule": {n: {k: v for k, v in self.by_rule[n].items() if k != "tokens" or self.count_tokens} for n in order if n in self.by_rule},
            "notes": self.notes,
            "missing": self.missing,
            "samples": self.samples,
        }


class V2Reader:
    """The documents of one RedPajama-Data-V2 file that its filters keep, in order.

    Reads the documents with :class:`DocumentReader` (bad lines and damage as for any jsonl
    file) and, when filters are asked for, the signals file line by line beside it: line i
    should be document i, which its ``id`` confirms; at the first line that does not match,
    the rest is found by joining on ``id`` instead. A document is removed when it is listed as
    a duplicate (``dedup``), when a rule rejects it, or when it has no signals line (it cannot
    be judged). A missing or unreadable duplicate list is a note, and its documents are kept.
    A missing signals file (some are missing upstream) is a note too, and its documents are left
    out, counted under ``missing_signals``: they cannot be judged. Either is listed in the
    report's ``missing``, so that prepare redoes the unit once the file is there. A damaged
    signals file stops the unit there, as a damaged documents file does: the documents judged
    before the damage are kept, those after it are left out, and the error is recorded, so that
    a rerun redoes the unit.

    Removed documents are counted in characters; :meth:`count_removed_tokens` has their tokens
    counted too. ``report`` holds the :class:`FilterReport` (with a small
    seeded sample of kept and removed documents).
    """

    def __init__(self, source: V2File, start: int = 0, end: int | None = None, strict: bool = False, bad: BadLines | None = None) -> None:
        self.source = source
        self.documents = DocumentReader(source, start, end, strict=strict, bad=bad)
        self.bad = self.documents.bad
        self.excluded: dict[str, int] = {}
        self.report = FilterReport([r.name for r in source.rules] + ([DUPLICATE] if source.dedup else []))
        self.count_tokens: Callable[[list[str]], list[int]] | None = None
        self._pending: list[tuple[str, list[str]]] = []  # removed texts whose tokens are not counted yet
        self._pending_chars = 0
        self._rng = random.Random(source.relpath)
        self._seen_removed = self._seen_kept = 0

    @property
    def consumed(self) -> int:
        return self.documents.consumed

    def count_removed_tokens(self, count: Callable[[list[str]], list[int]]) -> None:
        """Count the tokens of the removed documents too, with ``count`` (texts -> token counts)."""
        self.count_tokens = count
        self.report.count_tokens = True

    @property
    def lines_read(self) -> int:
        return self.documents.lines_read

    @property
    def empty(self) -> int:
        return self.documents.empty

    def __iter__(self) -> Iterator[Document]:
        source, report = self.source, self.report
        if not source.filtered:
            for doc in self.documents:
                report.read += 1
                report.kept += 1
                yield doc
            return
        duplicates = self._duplicates() if source.dedup else frozenset()
        signals = None
        if source.rules:
            if source.signals is not None and source.signals.is_file():
                signals = _SignalsFile(source)
            else:
                self._missing(source.signals, f"no signals file; its documents cannot be judged and were left out (counted under {NO_SIGNALS})")
        prefix = source.document_id_prefix
        try:
            for doc in self.documents:
                doc_id = f"{prefix}/{doc.line - 1}"
                hits = [DUPLICATE] if doc_id in duplicates else []
                if source.rules:
                    found = signals.of(doc.line - 1, doc_id) if signals is not None else None
                    if found is None:
                        hits.append(NO_SIGNALS)
                    else:
                        rejected, null = judge(source.rules, found)
                        for name in null:
                            report.rule(name)["null"] += 1
                        hits[:0] = rejected
                report.read += 1  # judged: a document whose signals are damaged is not
                if hits:
                    self._remove(doc, doc_id, hits)
                else:
                    report.kept += 1
                    self._sample(doc.text, doc_id, [])
                    yield doc
        finally:
            self.flush()

    def _missing(self, path: Path | None, what: str) -> None:
        """Note an input file that is not there (missing upstream, or not downloaded yet)."""
        rel = path.relative_to(self.source.root).as_posix() if path is not None else "none"
        self.report.missing.append(rel)
        self.report.notes.append(f"{self.source.relpath}: {what} ({rel} missing)")

    def _duplicates(self) -> frozenset[str]:
        path = self.source.duplicates
        if path is None or not path.is_file():
            self._missing(path, "no duplicate list; its documents were kept without exact deduplication")
            return frozenset()
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            # ParquetFile, not read_table: that imports pyarrow.dataset, and pandas with it (0.2 s a process)
            with pq.ParquetFile(path) as file:
                return frozenset(str(v) for v in file.read(columns=["doc_id"]).column(0).to_pylist() if v is not None)
        except (OSError, pa.ArrowException, KeyError) as e:
            self.report.notes.append(f"{path}: unreadable duplicate list ({' '.join(str(e).split())[:200]}); the documents of {self.source.relpath} were kept without exact deduplication")
            return frozenset()

    def _remove(self, doc: Document, doc_id: str, hits: list[str]) -> None:
        report = self.report
        report.removed_documents += 1
        report.removed_characters += len(doc.text)
        for name in hits:
            entry = report.rule(name)
            entry["documents"] += 1
            entry["characters"] += len(doc.text)
            if len(entry["examples"]) < EXAMPLE_IDS:
                entry["examples"].append(doc_id)
        self._sample(doc.text, doc_id, hits)
        if self.count_tokens is not None:
            self._pending.append((doc.text, hits))
            self._pending_chars += len(doc.text)
            if self._pending_chars >= 1 << 22:
                self.flush()

    def flush(self) -> None:
        """Count the tokens of the removed documents not counted yet."""
        if not self._pending or self.count_tokens is None:
            return
        counts = self.count_tokens([text for text, _ in self._pending])
        for (_, hits), n in zip(self._pending, counts):
            self.report.removed_tokens += n
            for name in hits:
                self.report.by_rule[name]["tokens"] += n
        self._pending, self._pending_chars = [], 0

    def _sample(self, text: str, doc_id: str, hits: list[str]) -> None:
        """Reservoir sampling (seeded by the file) of removed and of kept documents."""
        if hits:
            self._seen_removed += 1
            seen, size = self._seen_removed, SAMPLE_REJECTED
        else:
            self._seen_kept += 1
            seen, size = self._seen_kept, SAMPLE_KEPT
        pool = [s for s in self.report.samples if bool(s["rules"]) == bool(hits)]
        entry = {"id": doc_id, "rules": hits, "characters": len(text), "text": text[:SAMPLE_CHARS]}
        if len(pool) < size:
            self.report.samples.append(entry)
        else:
            j = self._rng.randrange(seen)
            if j < size:
                self.report.samples[self.report.samples.index(pool[j])] = entry


class _SignalsFile:
    """The quality signals of a documents file, looked up by row and id."""

    def __init__(self, source: V2File) -> None:
        self.source = source
        self.path = source.signals
        self.lines: Iterator[bytes] | None = None
        self.next_row = 0
        self.index: dict[str, dict] | None = None  # by id, once the lines are found not to align

    def of(self, row: int, doc_id: str) -> dict | None:
        """The signals of document ``row`` (ids checked), or None if it has none."""
        if self.index is not None:
            return self.index.get(doc_id)
        if self.lines is None:
            self.lines = _lines(_gunzip(self.path, "signals"))
        line = None
        while self.next_row <= row:
            line = next(self.lines, None)
            if line is None:
                return None  # fewer signal lines than documents
            self.next_row += 1
        if line is None:  # asked for a row already passed: documents are read in order, so not expected
            return None
        record = _parse(line)
        if record is not None and record.get("id") == doc_id:
            return _signals(record)
        self.index = {}
        for other in _lines(_gunzip(self.path, "signals")):
            record = _parse(other)
            if record is not None and isinstance(record.get("id"), str):
                self.index[record["id"]] = _signals(record)
        return self.index.get(doc_id)


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _signals(record: dict) -> dict | None:
    signals = record.get("quality_signals")
    return signals if isinstance(signals, dict) else None


def _gunzip(path: Path | None, what: str) -> Iterator[bytes]:
    """Decompressed blocks of a gzip file of one or more members; raises
    :class:`UnreadableInput` naming the file at damage, after the blocks before it."""
    if path is None or not path.is_file():
        raise UnreadableInput(f"{path}: {what} file missing; the documents it covers cannot be judged and were left out (download it and rerun)")
    with open(path, "rb") as raw:
        decompressor, fed = zlib.decompressobj(wbits=31), False
        while data := raw.read(BLOCK):
            while data:
                try:
                    out = decompressor.decompress(data)
                except zlib.error as e:
                    raise UnreadableInput(f"{path}: corrupt gzip data in the {what} file ({e}); documents past this point were left out") from None
                fed = True
                if out:
                    yield out
                if decompressor.eof:
                    data, decompressor, fed = decompressor.unused_data, zlib.decompressobj(wbits=31), False
                else:
                    data = b""
        if fed:
            raise UnreadableInput(f"{path}: truncated gzip data in the {what} file; documents past this point were left out")
