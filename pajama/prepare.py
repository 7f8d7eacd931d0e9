"""Prepare: tokenize a corpus directory into packed chunk files, on all cores, resumably.

The unit of work and of output is a *unit*: a whole compressed file, a byte range of a
plain ``.jsonl`` file cut on line boundaries, or a run of row groups of a Parquet file. Each
unit writes its own chunk files (``<unit>_<counter>.bin``; a unit of a file that mixes
subsets, as SlimPajama's do, writes one series per subset, ``<short subset name>_<unit>_<counter>.bin``)
and, once they are all renamed into place, a record ``units/<unit>.json`` listing them with
their subsets. So the output depends only on the input, the tokenizer, the chunk size
and the unit size, never on how many workers or nodes did the work; a killed run resumes by
redoing the units without a record; and nodes need no coordinator: the units are dealt out
to the nodes by a deterministic rule (largest first, to the least loaded), and whichever node
finishes last writes ``manifest.json``.

A copy of the tokenizer stays beside the manifest (``tokenizer.model`` or ``tokenizer.json``,
see ``copy_to``), so the data can be decoded without looking for it.

Each document becomes ``BOS ids EOS``; documents are packed back to back. The last chunk of
every unit (of each of its subsets' series) is padded with EOS up to the chunk size; the manifest records how many tokens of
each chunk file are real, and training reads only those.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pajama import PajamaError, usable_cpus
from pajama.chunks import CHECKSUM, CHECKSUM_BLOCK, ChunkWriter, chunk_name, dtype_for_vocab, write_atomic
from pajama.progress import progress_bar
from pajama.corpora import SET_NAMES, BadLines, SourceFile, UnreadableInput, find_source_files, open_documents, short_name
from pajama.tokenizer import BATCH_CHARS, COPY_NAMES, AnyTokenizer, load_tokenizer

MANIFEST = "manifest.json"
SETTINGS = "prepare.json"
UNITS = "units"
FORMAT = "pajama-chunks/1"
DEFAULT_CHUNK_SIZE = 2049 * 1024
DEFAULT_UNIT_MB = 256
COMPRESSION_RATIO = 4  # a compressed byte is about this much text: to weigh units, never for output


@dataclass(frozen=True)
class Unit:
    source: SourceFile
    index: int
    start: int  # a byte offset; in a Parquet file, a row group
    end: int | None  # None: to the end of the file
    size: int  # bytes on disk: the range of a plain file, the whole of a compressed one, the columns read of a Parquet file's row groups

    @property
    def name(self) -> str:
        return f"{self.source.prefix}-{self.index:04d}"

    @property
    def work(self) -> int:
        """Estimated bytes of text, to balance units over nodes and workers."""
        return self.size * (COMPRESSION_RATIO if self.source.compressed else 1)


def unit_order(name: str) -> tuple[str, int]:
    """Sort key of unit names: by source prefix, then by index as a number."""
    prefix, _, index = name.rpartition("-")
    return (prefix, int(index)) if index.isdigit() else (name, -1)


def plan_units(files: list[SourceFile], unit_bytes: int) -> list[Unit]:
    """Cut plain files into ranges of about ``unit_bytes`` on line boundaries, and Parquet
    files into runs of row groups of about as many compressed bytes; a compressed jsonl file
    (or anything that is not a regular file) is one unit."""
    units = []
    for source in files:
        if source.format == "parquet":
            from pajama.corpora.parquet import row_group_ranges  # pyarrow, only for Parquet corpora

            units.extend(Unit(source, i, a, b, n) for i, (a, b, n) in enumerate(row_group_ranges(source, unit_bytes)))
            continue
        try:
            stat = source.path.stat()
        except OSError as e:
            raise PajamaError(f"{source.path}: cannot read: {e.strerror}") from None
        size = stat.st_size
        if source.compressed or size <= unit_bytes or not source.path.is_file():
            units.append(Unit(source, 0, 0, None, size))
            continue
        cuts = [0]
        with open(source.path, "rb") as f:
            while cuts[-1] + unit_bytes < size:
                f.seek(cuts[-1] + unit_bytes - 1)
                f.readline()  # to the start of the next line (a line starting exactly at the target is kept whole)
                cut = f.tell()
                if cut >= size:
                    break
                cuts.append(cut)
        cuts.append(size)
        units.extend(Unit(source, i, a, b, b - a) for i, (a, b) in enumerate(zip(cuts, cuts[1:])))
    return units


def share_units(units: list[Unit], num_nodes: int, node_rank: int) -> list[Unit]:
    """This node's units: largest first, each unit goes to the node with the least work so
    far (the lowest rank on a tie). Every node computes the same deal from the same plan."""
    loads = [(0, rank) for rank in range(num_nodes)]
    mine = []
    for unit in sorted(units, key=lambda u: (-u.work, u.name)):
        load, rank = heapq.heappop(loads)
        if rank == node_rank:
            mine.append(unit)
        heapq.heappush(loads, (load + unit.work, rank))
    return mine


# -- one unit ----------------------------------------------------------------------------


def prepare_unit(
    unit: Unit,
    destination: Path,
    chunk_size: int,
    strict: bool,
    tokenizer: AnyTokenizer,
    report: Callable[[int, int], None] | None = None,
    threads: Callable[[], int] = lambda: 1,
    count_removed_tokens: bool = False,
) -> dict:
    """Tokenize one unit into its chunk files, then write its record; returns the record.

    A unit of a routed file (whose documents name their subsets) writes one series of chunk
    files per subset; documents of subsets not asked for are counted in the record's
    ``excluded``. A file that cannot be read to its end keeps every document before the
    damage; the record names the error (with ``strict`` it raises instead, as does the first
    bad line). ``report(bytes, tokens)`` is called as the work advances; ``threads()`` says
    how many threads may encode the next batch. Documents that filters remove are reported in
    characters, and with ``count_removed_tokens`` in tokens too (which tokenizes them).
    """
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    source = unit.source
    bad = BadLines()
    reader = open_documents(source, unit.start, unit.end, strict=strict, bad=bad)
    filtering = getattr(reader, "report", None) if getattr(source, "filtered", False) else None  # RedPajama-Data-V2's filters
    if filtering is not None and count_removed_tokens:
        reader.count_removed_tokens(lambda batch: _token_counts(tokenizer, dtype, batch, threads()))
    writers: dict[str, ChunkWriter] = {}
    texts: dict[str | None, list[str]] = {}  # by the documents' own subset (None: the file's)
    chars: dict[str | None, int] = {}
    counts: dict[str, list[int]] = {}  # subset -> [documents, tokens]
    reported = 0
    error = None

    def flush(key: str | None) -> None:
        nonlocal reported
        batch = texts.pop(key, [])
        chars.pop(key, None)
        subset = source.subset if key is None else key
        writer = writers.get(subset)
        if writer is None:
            writer = writers[subset] = ChunkWriter(destination, _series(unit, subset), chunk_size, dtype, filler=tokenizer.eos_id)
        added = 0
        for ids in tokenizer.encode_batches(batch, dtype, num_threads=threads()):
            writer.add(ids)
            added += len(ids)
        count = counts.setdefault(subset, [0, 0])
        count[0] += len(batch)
        count[1] += added
        if report is not None:
            advance = min(reader.consumed, unit.size) - reported
            reported += advance
            report(advance, added)

    try:
        for doc in reader:
            key = doc.subset
            batch = texts.get(key)
            if batch is None:
                batch, chars[key] = texts.setdefault(key, []), 0
            batch.append(doc.text)
            chars[key] += len(doc.text)
            if chars[key] >= BATCH_CHARS:
                flush(key)
    except UnreadableInput as e:
        if strict:
            raise
        error = str(e)
    for key in sorted(texts, key=str):
        flush(key)
    files = {subset: writers[subset].close() for subset in sorted(writers)}
    for subset in sorted(set(SET_NAMES.values()) | source.keep) if source.routed else [source.subset]:
        _remove_stale_chunks(destination, _series(unit, subset), len(files.get(subset, [])))
    if report is not None:
        report(unit.size - reported, 0)
    record = {
        "unit": unit.name,
        "subset": source.subset,
        "source": source.relpath,
        "start": unit.start,
        "end": unit.end,
        "bytes": unit.size,
        "lines": reader.lines_read,
        "documents": sum(c[0] for c in counts.values()),
        "tokens": sum(c[1] for c in counts.values()),
        "bad_lines": bad.count,
        "bad_examples": bad.examples,
        "empty": reader.empty,
        "error": error,
    }
    if filtering is not None:
        record["filtering"] = filtering.as_record()
    crc32 = {name: crcs for writer in writers.values() for name, crcs in writer.checksums.items()}
    if source.routed:
        record["chunks"] = [{"file": name, "subset": subset, "tokens": n, "crc32": crc32[name]} for subset, chunks in files.items() for name, n in chunks]
        record["subsets"] = {subset: {"documents": c[0], "tokens": c[1]} for subset, c in sorted(counts.items())}
        record["excluded"] = dict(sorted(reader.excluded.items()))
    else:
        record["chunks"] = [{"file": name, "tokens": n, "crc32": crc32[name]} for name, n in files.get(source.subset, [])]
    write_atomic(destination / UNITS / f"{unit.name}.json", json.dumps(record, indent=1).encode())
    return record


def _token_counts(tokenizer: AnyTokenizer, dtype, texts: list[str], num_threads: int) -> list[int]:
    """Tokens each text would take in a chunk file (with its BOS and EOS): the tokens filters remove."""
    import numpy as np

    stream = np.concatenate([np.zeros(0, dtype), *tokenizer.encode_batches(texts, dtype, num_threads=num_threads)])
    starts = np.flatnonzero(stream == tokenizer.bos_id)
    if len(starts) == len(texts) and tokenizer.bos_id != tokenizer.eos_id:
        return np.diff(np.append(starts, len(stream))).tolist()
    # BOS ids that are not all frames (a tokenizer whose BOS is its EOS): one text at a time
    return [sum(len(ids) for ids in tokenizer.encode_batches([t], dtype)) for t in texts]


def _series(unit: Unit, subset: str) -> str:
    """The prefix of a unit's chunk files of ``subset``: the unit's name, after the subset's
    short name when the unit's documents go to several subsets."""
    return f"{short_name(subset)}_{unit.name}" if unit.source.routed else unit.name


def _remove_stale_chunks(destination: Path, unit: str, count: int) -> None:
    """Chunk files (and temporary files) of an earlier run of this unit beyond the ``count``
    it has now: there are some only if its input changed, e.g. a damaged file was replaced."""
    while True:
        name = chunk_name(unit, count)
        stale = [p for p in (destination / name, destination / f".{name}.tmp") if p.exists()]
        if not stale:
            return
        for path in stale:
            path.unlink(missing_ok=True)
        count += 1


# -- worker processes ----------------------------------------------------------------------


def _free_cores(idle, workers: int) -> int:
    """Threads a process that is still at work may encode with: its own core and its share of
    the cores of the ``idle`` ones (a shared count), which have no unit left to take."""
    return workers // (workers - idle.value)


def _helper(tokenizer: AnyTokenizer, destination: Path, chunk_size: int, strict: bool, count_removed_tokens: bool, tasks, results, idle, workers: int) -> None:
    """A helper process: prepare units from ``tasks`` until ``None``, reporting to ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what an interrupt does
    _exit_with_parent()
    unit_name = None
    try:
        while (unit := tasks.get()) is not None:
            unit_name = unit.name
            results.put(("start", os.getpid(), unit_name))
            prepare_unit(unit, destination, chunk_size, strict, tokenizer, lambda b, t: results.put(("progress", b, t)), lambda: _free_cores(idle, workers), count_removed_tokens)
            results.put(("done", os.getpid(), unit_name))
        with idle.get_lock():
            idle.value += 1
    except PajamaError as e:
        results.put(("error", os.getpid(), str(e)))
    except OSError as e:  # disk full, an I/O error: name it, not a traceback
        results.put(("error", os.getpid(), f"unit {unit_name}: {e}; finished units are kept, rerun to resume"))
    except BaseException:
        results.put(("crash", os.getpid(), f"unit {unit_name}:\n{traceback.format_exc()}"))


def _exit_with_parent() -> None:
    """Exit when the driver is gone (killed, say): an orphan would go on writing files that a
    rerun writes too."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_units(todo: list[Unit], destination: Path, tokenizer: AnyTokenizer, chunk_size: int, strict: bool, workers: int, count_removed_tokens: bool = False) -> None:
    """Run the units with a progress bar; largest first, so the tail of the job stays parallel.

    This process prepares units itself, next to ``workers - 1`` helper processes that take
    them from the same queue: it is at work from the start, while the helpers start up, and
    no core is left to a process that only waits for the others. Between two batches of its
    own it takes in the helpers' progress and notices one that failed. At the end, a process
    with no unit left lends its core: the others encode their next batches with more threads.
    """
    todo = sorted(todo, key=lambda u: (-u.work, u.name))
    bar = progress_bar(total=sum(u.size for u in todo), unit="B", unit_scale=True, unit_divisor=1024, desc="prepare", smoothing=0.05, mininterval=1.0)
    tokens = finished = 0
    ctx = mp.get_context("spawn")  # no fork: the driver may hold threads and open files
    tasks, results = ctx.Queue(), ctx.Queue()
    for unit in todo + [None] * workers:  # sent by a thread of the queue: this process goes on
        tasks.put(unit)
    idle = ctx.Value("i", 0)  # processes with no unit left
    helpers = [ctx.Process(target=_helper, args=(tokenizer, destination, chunk_size, strict, count_removed_tokens, tasks, results, idle, workers), daemon=True) for _ in range(workers - 1)]
    running: dict[int, str] = {}  # helper pid -> its unit

    def advance(nbytes: int, ntokens: int, units: int = 0) -> None:
        nonlocal tokens, finished
        tokens += ntokens
        finished += units
        bar.update(nbytes)
        elapsed = max(bar.format_dict["elapsed"], 1e-9)
        bar.set_postfix_str(f"{finished}/{len(todo)} units, {tokens / elapsed / 1e6:,.2f}M tok/s", refresh=False)

    def poll(timeout: float = 0.0) -> None:
        """Take in the helpers' messages, waiting up to ``timeout`` for the first; raise if
        a helper failed or died."""
        while True:
            try:
                kind, *payload = results.get(timeout=timeout) if timeout else results.get_nowait()
            except queue.Empty:
                break
            timeout = 0.0
            if kind == "progress":
                advance(*payload)
            elif kind == "start":
                running[payload[0]] = payload[1]
            elif kind == "done":
                running.pop(payload[0], None)
                advance(0, 0, units=1)
            elif kind == "error":
                raise PajamaError(payload[1])
            else:
                raise RuntimeError(f"a prepare worker failed on {payload[1]}")
        for p in helpers:
            if p.exitcode not in (None, 0):
                doing = f"while preparing unit {running[p.pid]} (out of memory?)" if p.pid in running else "while starting"
                how = f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exited with code {p.exitcode}"
                raise PajamaError(f"a worker process {how} {doing}; finished units are kept, rerun to resume")

    def report(nbytes: int, ntokens: int) -> None:
        advance(nbytes, ntokens)
        poll()

    def next_unit() -> Unit | None:
        while True:
            try:
                return tasks.get(timeout=1.0)
            except queue.Empty:  # the others hold the queue: or one died holding it, which poll finds
                poll()

    try:
        for p in helpers:
            p.start()
        while (unit := next_unit()) is not None:
            prepare_unit(unit, destination, chunk_size, strict, tokenizer, report, lambda: _free_cores(idle, workers), count_removed_tokens)
            advance(0, 0, units=1)
        with idle.get_lock():
            idle.value += 1
        while finished < len(todo):
            stopped = all(p.exitcode is not None for p in helpers)
            poll(timeout=1.0)
            if stopped and finished < len(todo):  # every message of a stopped helper was in the queue already
                raise PajamaError(f"the worker processes stopped with {len(todo) - finished} units left; rerun to resume")
    except KeyboardInterrupt:
        raise PajamaError("interrupted: finished units are kept; rerun the same command to resume") from None
    except OSError as e:
        raise PajamaError(f"{e}; finished units are kept, rerun to resume") from None
    finally:
        deadline = time.time() + (5 if finished == len(todo) else 0)  # finished helpers exit by themselves
        for p in helpers:
            if p.pid is not None:
                p.join(max(0.0, deadline - time.time()))
                if p.is_alive():
                    p.terminate()
                    p.join()
        # Units nobody took (after an error) may still be on their way into the queue's
        # pipe, which nobody reads now: drop them, or exiting would wait for them for ever.
        tasks.cancel_join_thread()
        tasks.close()
        results.close()
        bar.close()


# -- the command -----------------------------------------------------------------------------


def prepare(
    source_path: Path,
    tokenizer_path: Path,
    destination_path: Path,
    sample: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    subsets: list[str] | None = None,
    num_workers: int | None = None,
    num_nodes: int | None = None,
    node_rank: int | None = None,
    array_share: bool = False,
    unit_mb: float = DEFAULT_UNIT_MB,
    strict: bool = False,
    overwrite: bool = False,
    layout: Literal["auto", "redpajama", "sample", "slimpajama", "parquet", "redpajama_v2"] = "auto",
    split: Literal["train", "validation", "test"] = "train",
    text_field: str = "text",
    subset_name: str | None = None,
    snapshots: list[str] | str | None = None,
    languages: list[str] | str | None = None,
    partitions: list[str] | str | None = None,
    filters: list[str] | str | None = None,
    filter_rules: Path | None = None,
    dedup: bool = False,
    count_removed_tokens: bool = False,
) -> None:
    """Tokenize a corpus directory (RedPajama 1T or V2, SlimPajama, Parquet) into packed chunk files (lit-llama's format) plus a manifest.

    Resumable: rerun the same command after a crash and only unfinished work is redone.
    Output is identical whatever the number of workers and nodes.

    Args:
        source_path: RedPajama-Data-1T directory (one folder per subset), with --sample True
            the RedPajama-Data-1T-Sample directory of 11 files, a SlimPajama-627B directory
            (train/validation/test), a directory of Parquet files, or RedPajama-Data-V2
            (documents/, quality_signals/, duplicates/).
        tokenizer_path: SentencePiece tokenizer.model, Hugging Face tokenizer.json, or a directory
            holding one (both: the tokenizer.model). A copy is kept in destination_path.
        destination_path: output directory for chunk files, ``manifest.json``, ``units/`` and a copy
            of the tokenizer.
        sample: the source has the Sample's flat layout (the same as --layout sample).
        chunk_size: tokens per chunk file (the howto: 2049 * 1024).
        subsets: only these subsets (default: every subset present; an absent one is skipped).
            In SlimPajama, whose files mix subsets, the documents of the others are skipped and counted.
        num_workers: worker processes (default: every core this process may use).
        num_nodes: machines sharing the job (default: the tasks of an srun step; with
            --array_share, the SLURM job array's task count; else 1). Every node runs the same
            command over a shared destination; the last to finish writes the manifest.
        node_rank: this node's rank in [0, num_nodes) (default: from SLURM, else 0).
        array_share: share the corpus among the tasks of the SLURM job array this runs in (each
            prepares its share, from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT). Off by
            default, so that an array whose tasks prepare different corpora prepares each whole.
        unit_mb: plain files larger than this many MB are split into units of about this size,
            Parquet files into runs of row groups of about as many compressed MB (the unit of
            parallel work and of resumption; fixed for a destination).
        strict: stop at the first bad line or unreadable file instead of skipping and counting it.
        overwrite: delete earlier output in destination_path and start over (on one node).
        layout: the corpus's layout: redpajama (RedPajama-Data-1T), sample (its Sample),
            slimpajama (SlimPajama-627B: split/chunk<N>/example_*_<i>.jsonl.zst, each document's
            subset from meta.redpajama_set_name), parquet (.parquet files anywhere: SlimPajama's
            Parquet samples, routed the same way, or one subset such as a code corpus),
            redpajama_v2 (RedPajama-Data-V2: documents/<snapshot>/<shard>/<lang>_<part>.json.gz);
            auto tells them apart (all but the Sample).
        split: SlimPajama's (or a Parquet corpus's) split to prepare; prepare validation into its
            own destination for --val_data_dir.
        text_field: the JSON key or Parquet column holding each document's text (StarCoder's:
            content).
        subset_name: the subset of a Parquet corpus whose rows do not name theirs (default: the
            source directory's name, e.g. starcoder).
        snapshots: RedPajama-Data-V2: the snapshots to prepare, comma-separated (default: every
            one present).
        languages: RedPajama-Data-V2: the languages (en,de,fr,es,it), each its subset
            rpv2_<lang> (default: en).
        partitions: RedPajama-Data-V2: the perplexity partitions, of head,middle,tail
            (default: head,middle; tail has no quality signals or duplicate lists).
        filters: RedPajama-Data-V2: built-in quality-signal filters, comma-separated: gopher
            (Gopher's paper's rules, as far as the signals carry them), gopher_card (the dataset
            card's Gopher example), c4 (C4's page rules), refinedweb (RefinedWeb's).
        filter_rules: RedPajama-Data-V2: a YAML file of more rules, each {signal, op (< <= > >=
            == !=), threshold, aggregate (first, sum, mean), divide_by (a document-level signal
            the value is divided by), on_null (keep, reject), name}.
        dedup: RedPajama-Data-V2: drop the documents its duplicates/ lists name (exact
            duplicates; a missing list is noted and its file kept whole).
        count_removed_tokens: RedPajama-Data-V2 with filters: report what they removed in tokens
            as well as in documents and characters (tokenizing every removed document: slower).
    """
    started = time.time()
    destination = Path(destination_path).expanduser().resolve()
    tokenizer = load_tokenizer(Path(tokenizer_path).expanduser().resolve())
    if chunk_size < 1:
        raise PajamaError(f"--chunk_size must be positive, got {chunk_size}")
    if not unit_mb > 0:
        raise PajamaError(f"--unit_mb must be positive, got {unit_mb}")
    if num_workers is not None and num_workers < 1:
        raise PajamaError(f"--num_workers must be at least 1, got {num_workers}")
    num_nodes, node_rank = _node_share(num_nodes, node_rank, array_share)
    if overwrite and num_nodes > 1:
        raise PajamaError(f"--overwrite with {num_nodes} nodes would let one node delete another's output: delete {destination} first, or run --overwrite on one node")
    from pajama.corpora.quality import builtin_rules, check_unique, load_rules, split_names

    snapshots, languages, partitions = (split_names(v) or None for v in (snapshots, languages, partitions))
    rules = check_unique(builtin_rules(filters) + (load_rules(filter_rules) if filter_rules is not None else []))
    files = find_source_files(
        source_path, sample=sample, subsets=subsets, layout=layout, split=split, text_field=text_field, subset_name=subset_name,
        snapshots=snapshots, languages=languages, partitions=partitions, rules=tuple(rules), dedup=dedup,
    )  # fmt: skip
    settings = {
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "chunk_size": chunk_size,
        "dtype": str(dtype_for_vocab(tokenizer.vocab_size)),
        "unit_mb": float(unit_mb),
        "subsets": sorted(subsets) if subsets else None,
    }
    # Recorded only when not the default, so that destinations prepared before they existed still match.
    v2 = {"snapshots": snapshots, "languages": languages, "partitions": partitions, "dedup": dedup or None}
    if rules:  # their definitions: other thresholds are other output
        v2["filters"] = [{"name": r.name, "rule": r.describe(), "on_null": r.on_null} for r in rules]
    for key, value, default in (("split", split, "train"), ("text_field", text_field, "text"), ("subset_name", subset_name, None), *((k, v, None) for k, v in v2.items())):
        if value != default:
            settings[key] = value
    _claim_destination(destination, settings, overwrite, keep=tokenizer.files)
    tokenizer.copy_to(destination)  # every node, on every run: the same bytes, written only if missing
    units = plan_units(files, int(unit_mb * (1 << 20)))
    mine = share_units(units, num_nodes, node_rank)
    records = load_records(destination)
    present = {entry.name for entry in os.scandir(destination)}
    todo = [u for u in mine if not _is_done(u, records.get(u.name), present)]
    workers = max(1, min(num_workers or usable_cpus(), len(todo) or 1))
    print(
        f"prepare: {len(files)} files in {len(units)} units"
        + (f", node {node_rank} of {num_nodes}: {len(mine)} units" if num_nodes > 1 else "")
        + f"; {len(mine) - len(todo)} already done, {len(todo)} to do with {workers} worker(s)",
        flush=True,
    )
    if todo:
        (destination / MANIFEST).unlink(missing_ok=True)  # stale until every unit is done again
        _run_units(todo, destination, tokenizer, chunk_size, strict, workers, count_removed_tokens)
    records = load_records(destination)
    planned = {u.name for u in units}
    stray = sorted(set(records) - planned)
    if stray:
        print(f"note: {len(stray)} unit record(s) in {destination / UNITS} are not part of this plan (source files removed or renamed?), left out of the manifest: {', '.join(stray[:3])}{' ...' if len(stray) > 3 else ''}")
    mine_records = [records[u.name] for u in mine if u.name in records]
    done_now = {u.name for u in todo}
    _print_summary(mine_records, sum(r["tokens"] for r in mine_records if r["unit"] in done_now) if todo else None, time.time() - started)
    complete = [records[u.name] for u in sorted(units, key=lambda u: unit_order(u.name)) if _matches(u, records.get(u.name))]
    if len(complete) == len(units):
        manifest = build_manifest(complete, settings, tokenizer)
        write_atomic(destination / MANIFEST, json.dumps(manifest, indent=1).encode(), shared=True)
        print(f"wrote {destination / MANIFEST}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in {len(manifest['chunks'])} chunk files")
    else:
        print(f"{len(units) - len(complete)} units of other nodes not done yet: the last node to finish writes {MANIFEST} (or rerun this command once they are)")
    errors = [r["error"] for r in mine_records if r["error"]]
    if errors:
        more = f" (and {len(errors) - 1} more, listed above)" if len(errors) > 1 else ""
        raise PajamaError(f"{len(errors)} file(s) could not be read to the end; every document before the damage was kept: {errors[0]}{more}")


def _node_share(num_nodes: int | None, node_rank: int | None, array_share: bool = False) -> tuple[int, int]:
    """(num_nodes, node_rank): as given, else, with ``array_share``, from the SLURM job array
    (``--array=0-N``), else from the tasks of an ``srun`` step, else one node. A job array is
    never shared by default: its tasks may be preparing different corpora."""
    env = os.environ
    if array_share:
        if "SLURM_ARRAY_TASK_COUNT" not in env or "SLURM_ARRAY_TASK_ID" not in env:
            raise PajamaError("--array_share true: not running in a SLURM job array (no SLURM_ARRAY_TASK_COUNT / SLURM_ARRAY_TASK_ID); use --num_nodes and --node_rank")
        offset = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
        slurm = (int(env["SLURM_ARRAY_TASK_COUNT"]), offset // step)
    elif "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        slurm = (int(env["SLURM_STEP_NUM_TASKS"]), int(env["SLURM_PROCID"]))
    else:
        slurm = (1, 0)
    num_nodes = slurm[0] if num_nodes is None else num_nodes
    node_rank = (slurm[1] if num_nodes == slurm[0] else 0) if node_rank is None else node_rank
    if num_nodes < 1:
        raise PajamaError(f"--num_nodes must be at least 1, got {num_nodes}")
    if not 0 <= node_rank < num_nodes:
        raise PajamaError(f"--node_rank {node_rank} is outside [0, {num_nodes}) (a SLURM array must be --array=0-{num_nodes - 1} or similar, else pass --num_nodes and --node_rank)")
    if array_share:
        print(f"prepare: sharing the corpus among the {slurm[0]} tasks of SLURM job array {env.get('SLURM_ARRAY_JOB_ID', '?')} (--array_share): this is share {node_rank} of {num_nodes}", flush=True)
    return num_nodes, node_rank


def _claim_destination(destination: Path, settings: dict, overwrite: bool, keep: list[Path] = ()) -> None:
    """Refuse to mix output of other settings, or foreign chunk files, into one destination.
    ``overwrite`` deletes earlier output, the tokenizer copy included, but not the files in
    ``keep`` (the tokenizer in use, should it live there)."""
    path = destination / SETTINGS
    if overwrite and destination.exists():
        for name in (MANIFEST, SETTINGS):
            (destination / name).unlink(missing_ok=True)
        kept = {p.resolve() for p in keep}
        for name in COPY_NAMES:
            if (destination / name).resolve() not in kept:
                (destination / name).unlink(missing_ok=True)
        shutil.rmtree(destination / UNITS, ignore_errors=True)
        for p in destination.iterdir():
            if p.name.endswith(".bin") or (p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            raise PajamaError(f"{path}: not valid JSON; use a new destination or --overwrite") from None
        changed = [k for k in [*settings, *(k for k in earlier if k not in settings)] if earlier.get(k) != settings.get(k)]
        if changed:
            what = ", ".join(f"{k} {earlier.get(k)} -> {settings.get(k)}" for k in changed)
            raise PajamaError(f"{destination} holds output prepared with other settings ({what}); use a new destination or --overwrite")
    elif destination.is_dir() and any(p.name.endswith(".bin") for p in destination.iterdir()):
        raise PajamaError(f"{destination} holds chunk files that pajama prepare did not write (no {SETTINGS}); use a new destination or --overwrite")
    (destination / UNITS).mkdir(parents=True, exist_ok=True)
    if not path.exists() or json.loads(path.read_text()) != settings:
        write_atomic(path, json.dumps(settings, indent=1).encode(), shared=True)


def load_records(destination: Path) -> dict[str, dict]:
    """Every readable unit record in ``destination``, by unit name."""
    records = {}
    folder = destination / UNITS
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # written atomically, so only a hand-edited record is unreadable: redo the unit
        if isinstance(record, dict) and record.get("unit") == path.stem:
            records[path.stem] = record
    return records


def _is_done(unit: Unit, record: dict | None, present: set[str]) -> bool:
    """Finished, from the same bytes of the same file, without a read error (a unit of a
    damaged file is redone: it may be fixed by now), with no input that was missing then and
    is there now (a RedPajama-Data-V2 signals file or duplicate list), and its chunk files are
    all there."""
    if not (_matches(unit, record) and record["error"] is None and all(c["file"] in present for c in record["chunks"])):
        return False
    missing = (record.get("filtering") or {}).get("missing", [])
    return not any((unit.source.root / rel).exists() for rel in missing)


def _matches(unit: Unit, record: dict | None) -> bool:
    """The record is of this unit as planned now (a source file that changed size since is redone)."""
    return record is not None and (record["source"], record["start"], record["end"], record["bytes"]) == (unit.source.relpath, unit.start, unit.end, unit.size)


def record_subsets(record: dict) -> dict[str, dict]:
    """Documents and tokens of each subset in a unit record: one subset, or for a unit of a
    routed file (SlimPajama's) each subset its documents went to."""
    if record.get("subsets") is not None:
        return record["subsets"]
    return {record["subset"]: {"documents": record["documents"], "tokens": record["tokens"]}}


def chunk_subset(record: dict, chunk: dict) -> str:
    """The subset of one of a unit record's chunk files."""
    return chunk.get("subset") or record["subset"]


def manifest_chunk(record: dict, chunk: dict) -> dict:
    """The manifest's entry for one of a unit record's chunk files: its name, subset, real
    tokens and block checksums (absent in records written before prepare recorded them)."""
    entry = {"file": chunk["file"], "subset": chunk_subset(record, chunk), "tokens": chunk["tokens"]}
    if "crc32" in chunk:
        entry["crc32"] = chunk["crc32"]
    return entry


def _totals(records: list[dict]) -> tuple[dict[str, dict], dict[str, dict], dict | None]:
    """Per-subset and per-source totals of unit records, in unit order, and those of the
    files whose documents go to several subsets (None if there are none): their bytes, bad
    lines and errors belong to no one subset."""
    subsets: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    mixed: dict | None = None

    def subset(name: str) -> dict:
        return subsets.setdefault(name, {"documents": 0, "tokens": 0, "chunk_files": 0, "source_files": 0, "bytes": 0, "bad_lines": 0, "bad_examples": [], "empty": 0, "errors": 0})

    for r in sorted(records, key=lambda r: unit_order(r["unit"])):
        routed = r["subset"] is None
        s = mixed if routed else subset(r["subset"])
        if routed and s is None:
            s = mixed = {"source_files": 0, "bytes": 0, "bad_lines": 0, "bad_examples": [], "empty": 0, "errors": 0, "excluded": {}}
        src = sources.get(r["source"])
        if src is None:
            src = sources[r["source"]] = {"subset": r["subset"], "documents": 0, "tokens": 0, "bytes": 0, "bad_lines": 0, "bad_examples": [], "empty": 0, "errors": [], "units": []}
            if routed:
                src["subsets"], src["excluded"] = {}, {}
            s["source_files"] += 1
        for key in ("documents", "tokens", "bytes", "bad_lines", "empty"):
            value = r.get(key, 0)  # records written before empty texts were counted have no "empty"
            if key in s:
                s[key] += value
            src[key] += value
        src["units"].append(r["unit"])
        src["bad_examples"] = (src["bad_examples"] + r["bad_examples"])[: BadLines.max_examples]
        s["bad_examples"] = (s["bad_examples"] + r["bad_examples"])[: BadLines.max_examples]
        if r["error"]:
            src["errors"].append(r["error"])
            s["errors"] += 1
        if routed:
            for name, t in r["subsets"].items():
                entry = subset(name)
                if name not in src["subsets"]:
                    entry["source_files"] += 1
                    src["subsets"][name] = {"documents": 0, "tokens": 0}
                for key in ("documents", "tokens"):
                    entry[key] += t[key]
                    src["subsets"][name][key] += t[key]
            for name, n in r["excluded"].items():
                for where in (src["excluded"], mixed["excluded"]):
                    where[name] = where.get(name, 0) + n
        for c in r["chunks"]:
            subset(chunk_subset(r, c))["chunk_files"] += 1
    for entry in [*(src for src in sources.values() if "subsets" in src), *([mixed] if mixed else [])]:
        for key in ("subsets", "excluded"):
            if key in entry:
                entry[key] = dict(sorted(entry[key].items()))
    return subsets, sources, mixed


def build_manifest(records: list[dict], settings: dict, tokenizer: AnyTokenizer) -> dict:
    """The manifest: settings, per-subset and per-source totals (and those of files that mix
    subsets, under ``mixed``), and every chunk file with its subset, real token count and block
    checksums, in training order. Deterministic: sorted, no timings."""
    records = sorted(records, key=lambda r: unit_order(r["unit"]))
    subsets, sources, mixed = _totals(records)
    manifest = {
        "format": FORMAT,
        "tokenizer": {
            "kind": tokenizer.kind,
            "file": tokenizer.file_name,  # its copy, beside the manifest
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
        },
        "chunk_size": settings["chunk_size"],
        "dtype": settings["dtype"],
        "filler": tokenizer.eos_id,
        "unit_mb": settings["unit_mb"],
        "units": len(records),
        "documents": sum(s["documents"] for s in subsets.values()),
        "tokens": sum(s["tokens"] for s in subsets.values()),
        "bad_lines": sum(s["bad_lines"] for s in subsets.values()) + (mixed["bad_lines"] if mixed else 0),
        "empty": sum(s["empty"] for s in subsets.values()) + (mixed["empty"] if mixed else 0),
        "errors": [e for src in sources.values() for e in src["errors"]],
        "subsets": dict(sorted(subsets.items())),
    }
    if mixed is not None:  # absent for RedPajama-Data-1T, whose manifests stay as they were
        manifest["mixed"] = mixed
    filtering = filter_totals(records)
    if filtering is not None:  # RedPajama-Data-V2's filters and deduplication
        manifest["filtering"] = filtering
    manifest["sources"] = dict(sorted(sources.items()))
    manifest["checksums"] = {"kind": CHECKSUM, "block_bytes": CHECKSUM_BLOCK}  # of the chunk files, each its list
    manifest["chunks"] = [manifest_chunk(r, c) for r in records for c in r["chunks"]]
    return manifest


MIXED_ROW = "(mixed files)"
FILTER_EXAMPLES = 3  # document ids shown per rule
FILTER_NOTES = 100  # notes kept in the manifest (each file without a duplicate list has one), the rest counted
REMOVED_MEASURES = ("documents", "characters", "tokens")  # what removed documents are counted in; tokens only with --count_removed_tokens


def filter_totals(records: list[dict]) -> dict | None:
    """What RedPajama-Data-V2's filters removed over unit records (None when no record has
    filtering): documents read, kept and removed, and per rule the documents and characters
    (and tokens, where every unit counted them: ``--count_removed_tokens``) it removed (a
    document removed by several rules counts under each rule, once in the total), null values
    met, the first example document ids, and notes (missing signals files and duplicate lists)."""
    found = [r["filtering"] for r in sorted(records, key=lambda r: unit_order(r["unit"])) if r.get("filtering")]
    if not found:
        return None
    measures = [key for key in REMOVED_MEASURES if all(key in f["removed"] for f in found)]
    total = {"rules": [], "read": 0, "kept": 0, "removed": dict.fromkeys(measures, 0), "by_rule": {}, "notes": [], "notes_count": 0}
    for f in found:
        for name in f["rules"]:
            if name not in total["rules"]:
                total["rules"].append(name)
        total["read"] += f["read"]
        total["kept"] += f["kept"]
        for key in measures:
            total["removed"][key] += f["removed"][key]
        for name, entry in f["by_rule"].items():
            into = total["by_rule"].setdefault(name, {**dict.fromkeys(measures, 0), "null": 0, "examples": []})
            for key in (*measures, "null"):
                into[key] += entry[key]
            into["examples"] = (into["examples"] + entry["examples"])[:FILTER_EXAMPLES]
        total["notes_count"] += len(f["notes"])
        total["notes"].extend(f["notes"][: FILTER_NOTES - len(total["notes"])])
    order = [*total["rules"], *sorted(n for n in total["by_rule"] if n not in total["rules"])]
    total["by_rule"] = {n: total["by_rule"][n] for n in order if n in total["by_rule"]}
    return total


def filter_table(filtering: dict) -> list[str]:
    """Lines of the per-rule table of what filters removed, and the notes."""
    read = max(filtering["read"], 1)
    removed = filtering["removed"]
    measures = [key for key in REMOVED_MEASURES[1:] if key in removed]
    lines = [f"filters: {removed['documents']:,} of {filtering['read']:,} documents removed ({100 * removed['documents'] / read:.1f}%), " + ", ".join(f"{removed[k]:,} {k}" for k in measures) + f"; {filtering['kept']:,} kept"]
    lines.append(f"  {'rule':<34}{'documents':>12}" + "".join(f"{k:>14}" for k in measures) + f"{'null':>10}  examples")
    for name, entry in filtering["by_rule"].items():
        lines.append(f"  {name:<34}{entry['documents']:>12,}" + "".join(f"{entry[k]:>14,}" for k in measures) + f"{entry['null']:>10,}  {', '.join(entry['examples'][:2])}")
    lines.append("  (a document removed by several rules counts under each; null: documents whose value was null, kept unless the rule says on_null: reject)")
    lines.extend(f"note: {note}" for note in filtering["notes"][:10])
    count = filtering.get("notes_count", len(filtering["notes"]))
    if count > 10:
        lines.append(f"note: ... and {count - 10:,} more notes like these ({min(count, FILTER_NOTES)} of them in the manifest)")
    return lines


def summary_table(subsets: dict[str, dict], mixed: dict | None = None) -> list[str]:
    """Lines of a per-subset table (documents, tokens, chunk files, MB read, bad lines); the
    MB read and bad lines of files that mix subsets (``mixed``) on a row of their own."""
    keys = ("documents", "tokens", "chunk_files", "bytes", "bad_lines")
    rows = [(name, [s.get(k, 0) for k in keys]) for name, s in sorted(subsets.items())]
    if mixed is not None:
        rows = [(name, values[:3] + (values[3:] if values[3] or values[4] else [None, None])) for name, values in rows]
        rows.append((MIXED_ROW, [None, None, None, mixed["bytes"], mixed["bad_lines"]]))
    rows.append(("total", [sum(r[1][i] or 0 for r in rows) for i in range(len(keys))]))
    lines = [f"{'subset':<15}{'documents':>12}{'tokens':>16}{'chunk files':>13}{'MB read':>11}{'bad lines':>11}"]
    widths = (12, 16, 13, 11, 11)
    for name, values in rows:
        cells = ["-" if v is None else f"{v / 1e6:,.1f}" if i == 3 else f"{v:,}" for i, v in enumerate(values)]
        lines.append(f"{name:<15}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if mixed is not None:
        lines.append(f"{MIXED_ROW}: files whose documents go to several subsets; what was read of them and their bad lines are counted on that row")
    return lines


def empty_line(sources: dict[str, dict]) -> str | None:
    """One line on the records skipped for an empty text (None if there were none): how many, and where the most were."""
    counts = sorted(((src.get("empty", 0), name) for name, src in sources.items() if src.get("empty")), reverse=True)
    if not counts:
        return None
    where = ", ".join(f"{name} {n:,}" for n, name in counts[:3]) + (f" and {len(counts) - 3} more files" if len(counts) > 3 else "")
    return f"skipped {sum(n for n, _ in counts):,} record(s) with an empty text (nothing to train on): {where}"


def _print_summary(records: list[dict], tokens_now: int | None, seconds: float) -> None:
    """The per-subset table, the rate of this run (None: it had nothing to do), documents of
    subsets left out, bad lines and errors."""
    subsets, sources, mixed = _totals(records)
    print("\n".join(summary_table(subsets, mixed)))
    if tokens_now is None:
        print("nothing to do: every unit was done by an earlier run")
    else:
        print(f"{seconds:.1f} s, {tokens_now:,} tokens tokenized in this run, {tokens_now / max(seconds, 1e-9):,.0f} tokens/s")
    if mixed and mixed["excluded"]:
        print(f"left out {sum(mixed['excluded'].values()):,} documents of subsets not asked for: " + ", ".join(f"{name} {n:,}" for name, n in mixed["excluded"].items()))
    filtering = filter_totals(records)
    if filtering is not None:
        print("\n".join(filter_table(filtering)))
    empty = empty_line(sources)
    if empty:
        print(empty)
    shown = 0
    for source, src in sources.items():
        if src["bad_lines"] and shown < 20:
            shown += 1
            print(f"skipped {src['bad_lines']:,} bad line(s) in {source}, e.g.:\n  " + "\n  ".join(src["bad_examples"][:3]))
        for error in src["errors"]:
            print(f"could not read to the end: {error}")
