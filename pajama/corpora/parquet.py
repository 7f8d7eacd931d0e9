"""A directory of Parquet files, read row group by row group.

Two kinds are understood, told apart by their columns:

* SlimPajama's Parquet samples: a ``text`` column and a ``meta`` struct whose
  ``redpajama_set_name`` routes every document to its subset, as in SlimPajama-627B;
* anything else, e.g. a code corpus such as StarCoder's (text in a ``content`` column:
  ``--text_field content``): one subset, named after the directory or ``--subset_name``.

Files are found anywhere under the directory. When some name a split (a folder
``train``/``validation``/``test``, or a name starting ``train-`` ..., as Hugging Face's
exports do), only those of ``--split`` are read. Memory stays flat in the size of a file:
one row group's compressed columns and a batch of its rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pajama import PajamaError
from pajama.corpora.common import PARQUET_EXTENSION, SPLITS, BadLines, Document, SourceFile, UnreadableInput
from pajama.corpora.subsets import SET_NAME_FIELD, SET_NAMES, SUBSETS, check_subset_name, subset_name_of

META = "meta"
BATCH_ROWS = 1024  # rows decoded at a time: a few MB of text


def find_files(root: Path, subsets: list[str] | None, split: str, text_field: str, subset_name: str | None) -> list[SourceFile]:
    """The Parquet files of ``split`` under ``root``, in numeric order of their names."""
    found = sorted(p for p in root.rglob(f"*{PARQUET_EXTENSION}") if not p.name.startswith(".") and (p.is_file() or p.is_dir()))
    if not found:
        raise PajamaError(f"{root}: no {PARQUET_EXTENSION} files found")
    rel = {p: p.relative_to(root).as_posix() for p in found}
    marked = {p: _split_of(r) for p, r in rel.items()}
    if any(s is not None for s in marked.values()):
        found = [p for p in found if marked[p] == split]
        if not found:
            present = sorted({s for s in marked.values() if s})
            raise PajamaError(f"{root}: no Parquet files of the {split} split (splits present: {', '.join(present)})")
    elif split != "train":
        raise PajamaError(f"{root}: no Parquet file names a split (a folder or a name starting {split}-), so there is no {split} split to read")
    routed = subset_name is None and _routed(found)
    if routed:
        keep = _wanted(subsets, SUBSETS)
        files = [SourceFile(None, p, rel[p], text_field=text_field, keep=keep, numbered=True) for p in found]
    else:
        subset = check_subset_name(subset_name) if subset_name is not None else subset_name_of(root.name)
        if subsets and subset not in subsets:
            raise PajamaError(f"{root}: no files for requested subset(s) {', '.join(sorted(subsets))}: this Parquet corpus is one subset, {subset}")
        files = [SourceFile(subset, p, rel[p], text_field=text_field, numbered=True) for p in found]
    return sorted(files, key=lambda f: f.prefix)


def _wanted(subsets: list[str] | None, known: tuple[str, ...]) -> frozenset[str]:
    for name in subsets or []:
        if name not in known:
            raise PajamaError(f"unknown subset {name!r}; known subsets: {', '.join(known)}")
    return frozenset(subsets or known)


def _split_of(relpath: str) -> str | None:
    """The split a file's path names, if any."""
    *folders, name = relpath.split("/")
    for split in SPLITS:
        if split in folders or name.startswith((f"{split}-", f"{split}_", f"{split}.")):
            return split
    return None


def _routed(files: list[Path]) -> bool:
    """Whether the corpus's documents name their subsets (SlimPajama's ``meta`` struct): read
    from the first file whose schema can be read."""
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException):
            continue
        index = schema.get_field_index(META)
        if index < 0:
            return False
        kind = schema.field(index).type
        return pa.types.is_struct(kind) and kind.get_field_index(SET_NAME_FIELD) >= 0
    return False


def _columns(source: SourceFile) -> list[str]:
    return [source.text_field] + ([f"{META}.{SET_NAME_FIELD}"] if source.routed else [])


def _is_text(kind: pa.DataType) -> bool:
    t = pa.types
    # A column of nulls only is typed null: its rows are bad rows, not a wrong column.
    return t.is_string(kind) or t.is_large_string(kind) or t.is_binary(kind) or t.is_large_binary(kind) or t.is_string_view(kind) or t.is_binary_view(kind) or t.is_null(kind)


def _column_problem(schema: pa.Schema, source: SourceFile) -> str | None:
    """What keeps the text (and for a routed file, the subset) from being read, if anything."""
    index = schema.get_field_index(source.text_field)
    if index < 0:
        return f"no column {source.text_field!r} (its columns: {', '.join(schema.names)}); pass --text_field to name the text's"
    if not _is_text(schema.field(index).type):
        return f"column {source.text_field!r} holds {schema.field(index).type}, not text"
    if source.routed:
        index = schema.get_field_index(META)
        kind = schema.field(index).type if index >= 0 else None
        if kind is None or not pa.types.is_struct(kind) or kind.get_field_index(SET_NAME_FIELD) < 0:
            return f"no {META}.{SET_NAME_FIELD} column, which the corpus's other files have (the subset of each document)"
    return None


def row_group_ranges(source: SourceFile, unit_bytes: int) -> list[tuple[int, int | None, int]]:
    """Runs of row groups of about ``unit_bytes`` compressed bytes of the columns read, as
    (first, end or None for the last, bytes); a file whose footer cannot be read is one
    run, of the file's size (reading it reports the damage). A file without the text column
    is an error: the corpus is not what the settings say."""
    path = source.path
    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException):
        try:
            return [(0, None, path.stat().st_size)]
        except OSError as e:
            raise PajamaError(f"{path}: cannot read: {e.strerror}") from None
    problem = _column_problem(schema, source)
    if problem is not None:
        raise PajamaError(f"{path}: {problem}")
    sizes = group_sizes(metadata, _columns(source))
    runs, first, size = [], 0, 0
    for group, n in enumerate(sizes):
        size += n
        if size >= unit_bytes and group + 1 < len(sizes):
            runs.append((first, group + 1, size))
            first, size = group + 1, 0
    runs.append((first, None if not runs else len(sizes), size))
    return runs


def group_sizes(metadata: pq.FileMetaData, columns: list[str]) -> list[int]:
    """Compressed bytes of ``columns`` (dotted paths) in each row group."""
    wanted = [j for j in range(metadata.num_columns) if metadata.schema.column(j).path in columns]
    return [sum(metadata.row_group(g).column(j).total_compressed_size for j in wanted) for g in range(metadata.num_row_groups)]


class ParquetReader:
    """The documents of a Parquet file, or of its row groups [``start``, ``end``), in order.

    Reads one row group at a time, in batches of ``BATCH_ROWS`` rows, so memory does not grow
    with the file. A row whose text is null or not valid UTF-8 (or, in a routed file, whose
    subset is missing or unknown) is a bad record, named ``file:row N`` (rows counted from
    0, as pyarrow does): counted in ``bad`` and skipped, or raised with ``strict``. Empty texts
    are skipped and counted in ``empty``. A file whose footer cannot be read (truncated: Parquet keeps its
    index at the end, so no row of it can be found) raises :class:`UnreadableInput` at once; a
    corrupt row group raises it after every row before the damage has been yielded.
    ``consumed`` is the compressed bytes of the row groups read so far, for progress reports.
    """

    def __init__(self, source: SourceFile, start: int = 0, end: int | None = None, strict: bool = False, bad: BadLines | None = None) -> None:
        self.source, self.start, self.end, self.strict = source, start, end, strict
        self.bad = bad if bad is not None else BadLines()
        self.lines_read = 0  # rows read
        self.empty = 0  # rows whose text is empty
        self.consumed = 0
        self.row_groups_read = 0
        self.excluded: dict[str, int] = {}

    def where(self, row: int) -> str:
        return f"{self.source.path}:row {row}"

    def _open(self) -> pq.ParquetFile:
        path = self.source.path
        if path.is_dir():
            raise UnreadableInput(f"{path}: is a directory, expected a Parquet file")
        try:
            size = path.stat().st_size
            if size == 0:
                raise UnreadableInput(f"{path}: empty file (0 bytes; an interrupted download?)")
            # Page checksums, where the writer stored them, catch damage that decompresses.
            return pq.ParquetFile(path, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as e:
            if isinstance(e, FileNotFoundError) or not path.exists():
                raise UnreadableInput(f"{path}: cannot open: {getattr(e, 'strerror', None) or e}") from None
            raise UnreadableInput(f"{path}: truncated or not a Parquet file ({e}); Parquet keeps its index at the end, so none of its rows can be read (an interrupted download?)") from None

    def __iter__(self) -> Iterator[Document]:
        file = self._open()
        try:
            yield from self._documents(file)
        finally:
            file.close()

    def _documents(self, file: pq.ParquetFile) -> Iterator[Document]:
        source, path = self.source, self.source.path
        problem = _column_problem(file.schema_arrow, source)
        if problem is not None:
            raise UnreadableInput(f"{path}: {problem}")
        metadata = file.metadata
        columns = _columns(source)
        sizes = group_sizes(metadata, columns)
        end = metadata.num_row_groups if self.end is None else min(self.end, metadata.num_row_groups)
        row = sum(metadata.row_group(g).num_rows for g in range(self.start))
        routed, keep, excluded = source.routed, source.keep, self.excluded
        for group in range(self.start, end):
            batches = file.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=columns, use_threads=False)
            while True:
                try:
                    batch = next(batches, None)
                except (OSError, pa.ArrowException) as e:
                    raise UnreadableInput(f"{self.where(row)}: corrupt Parquet data in row group {group} of {metadata.num_row_groups} ({e})") from None
                if batch is None:
                    break
                texts = _texts(batch.column(0))
                names = pc.struct_field(batch.column(1), SET_NAME_FIELD).to_pylist() if routed else None
                for i, text in enumerate(texts):
                    self.lines_read += 1
                    if text.__class__ is str:
                        if not text:
                            self.empty += 1
                        elif not routed:
                            yield Document(text, row + i)
                        else:
                            subset = SET_NAMES.get(names[i])
                            if subset is None:
                                self._bad(
                                    row + i,
                                    f"no {META}.{SET_NAME_FIELD} (the subset of the document)" if names[i] is None else f"unknown {SET_NAME_FIELD} {names[i]!r} (known: {', '.join(SET_NAMES)})",
                                )
                            elif subset in keep:
                                yield Document(text, row + i, subset)
                            else:
                                excluded[subset] = excluded.get(subset, 0) + 1
                    elif text is None:
                        self._bad(row + i, f"{source.text_field!r} is null")
                    else:
                        self._bad(row + i, f"{source.text_field!r} is not valid UTF-8 (byte {text.start + 1} of the value)")
                row += len(texts)
            self.consumed += sizes[group]
            self.row_groups_read += 1

    def _bad(self, row: int, problem: str) -> None:
        message = f"{self.where(row)}: {problem}"
        if self.strict:
            raise PajamaError(message)
        self.bad.add(message)


def _texts(column: pa.Array) -> list:
    """The values of a text column as ``str``, ``None`` for a null and a
    :class:`UnicodeDecodeError` for a value that is not UTF-8."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        try:
            return column.to_pylist()  # the common case: valid UTF-8, decoded in one go
        except UnicodeDecodeError:  # Parquet does not check it on write: find the bad values
            column = column.cast(pa.large_binary())
    out = []
    for value in column.to_pylist():
        if value is not None:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                value = e
        out.append(value)
    return out
