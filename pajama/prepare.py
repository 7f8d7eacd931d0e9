"""Prepare: tokenize a RedPajama directory into packed chunk files, on all cores, resumably.

The unit of work and of output is a *unit*: a whole compressed file, or a byte range of a
plain ``.jsonl`` file cut on line boundaries. Each unit writes its own chunk files
(``<unit>_<counter>.bin``) and, once they are all renamed into place, a record
``units/<unit>.json``. So the output depends only on the input, the tokenizer and the chunk
size, never on how many workers or nodes did the work; a killed run resumes by redoing the
units without a record; and nodes need no coordinator: each takes the units whose index is
its rank modulo the node count, and whichever finishes last writes ``manifest.json``.

Each document becomes ``BOS ids EOS``; documents are packed back to back. The last chunk of
every unit is padded with EOS up to the chunk size; the manifest records how many tokens of
each chunk file are real, and training reads only those.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pajama import PajamaError
from pajama.chunks import ChunkWriter, dtype_for_vocab, write_atomic
from pajama.sources import BadLines, SourceFile, UnreadableInput, file_size, find_source_files, read_documents
from pajama.tokenizer import Tokenizer

MANIFEST = "manifest.json"
SETTINGS = "prepare.json"
UNITS = "units"
DEFAULT_CHUNK_SIZE = 2049 * 1024
BATCH_BYTES = 4 << 20  # texts encoded together: amortises the call, bounds memory


@dataclass(frozen=True)
class Unit:
    source: SourceFile
    index: int
    start: int
    end: int | None  # None: to the end of the file

    @property
    def name(self) -> str:
        return f"{self.source.prefix}-{self.index:04d}"

    @property
    def size(self) -> int:
        return (self.end if self.end is not None else file_size(self.source.path)) - self.start


def plan_units(files: list[SourceFile], unit_bytes: int) -> list[Unit]:
    """Cut plain files into ranges of about ``unit_bytes`` on line boundaries; a compressed
    file is one unit (it cannot be entered in the middle)."""
    units = []
    for source in files:
        try:
            size = file_size(source.path)
        except OSError as e:
            raise PajamaError(f"{source.path}: cannot read: {e.strerror}") from None
        if source.compressed or size <= unit_bytes:
            units.append(Unit(source, 0, 0, None))
            continue
        cuts = [0]
        with open(source.path, "rb") as f:
            while cuts[-1] + unit_bytes < size:
                f.seek(cuts[-1] + unit_bytes)
                f.readline()  # move to the start of the next line
                cut = f.tell()
                if cut >= size:
                    break
                cuts.append(cut)
        cuts.append(size)
        units.extend(Unit(source, i, a, b) for i, (a, b) in enumerate(zip(cuts, cuts[1:])))
    return units


# -- worker side -----------------------------------------------------------------------

_worker: dict = {}


def _init_worker(tokenizer_path: str, progress: "mp.Queue | None") -> None:
    _worker["tokenizer"] = Tokenizer(tokenizer_path)
    _worker["progress"] = progress


def prepare_unit(unit: Unit, destination: Path, chunk_size: int, strict: bool) -> dict:
    """Tokenize one unit into its chunk files and write its record; returns the record.

    A file that cannot be read to its end keeps every document before the damage; the record
    names the error (and, unless ``strict``, the job goes on with the other units).
    """
    tokenizer: Tokenizer = _worker["tokenizer"]
    progress = _worker["progress"]
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    writer = ChunkWriter(destination, unit.name, chunk_size, dtype, filler=tokenizer.eos_id)
    bad = BadLines()
    documents = tokens = reported = pending = 0
    error = None
    texts: list[str] = []

    def flush() -> None:
        nonlocal documents, tokens, reported, pending
        if not texts:
            return
        ids = tokenizer.encode_documents(texts, dtype)
        writer.add(ids)
        documents += len(texts)
        tokens += len(ids)
        # Characters stand in for bytes read; a compressed unit reports its size when done.
        advance = 0 if unit.source.compressed else min(pending, unit.size - reported)
        reported += advance
        progress.put((advance, len(ids)))
        texts.clear()
        pending = 0

    try:
        for doc in read_documents(unit.source, unit.start, unit.end, strict=strict, bad=bad):
            texts.append(doc.text)
            pending += len(doc.text)
            if pending >= BATCH_BYTES:
                flush()
    except UnreadableInput as e:
        if strict:
            raise
        error = str(e)
    flush()
    files = writer.close()
    progress.put((unit.size - reported, 0))
    record = {
        "unit": unit.name,
        "subset": unit.source.subset,
        "source": unit.source.relpath,
        "start": unit.start,
        "end": unit.end,
        "documents": documents,
        "tokens": tokens,
        "bytes": unit.size,
        "bad_lines": bad.count,
        "bad_examples": bad.examples,
        "error": error,
        "chunks": [{"file": name, "tokens": n} for name, n in files],
    }
    write_atomic(destination / UNITS / f"{unit.name}.json", json.dumps(record, indent=1).encode())
    return record


def _run_unit(args: tuple) -> dict:
    return prepare_unit(*args)


# -- driver side -----------------------------------------------------------------------


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
    unit_mb: int = 256,
    strict: bool = False,
    overwrite: bool = False,
) -> None:
    """Tokenize a RedPajama directory into packed chunk files (lit-llama's format) plus a manifest.

    Resumable: rerun the same command after a crash and only unfinished work is redone.
    Output is identical whatever the number of workers and nodes.

    Args:
        source_path: RedPajama-Data-1T directory (one folder per subset), or with --sample True
            the RedPajama-Data-1T-Sample directory of 11 files.
        tokenizer_path: SentencePiece ``tokenizer.model`` (or the directory holding it).
        destination_path: output directory for chunk files, ``manifest.json`` and ``units/``.
        sample: the source has the Sample's flat layout.
        chunk_size: tokens per chunk file (the howto: 2049 * 1024).
        subsets: only these subsets (default: every subset present; an absent one is skipped).
        num_workers: worker processes (default: all cores).
        num_nodes: nodes sharing the job (default: from SLURM, else 1).
        node_rank: this node's rank in [0, num_nodes) (default: from SLURM, else 0).
        unit_mb: plain files larger than this many MB are split into units of about this size.
        strict: stop at the first bad line instead of skipping and counting it.
        overwrite: delete earlier output in destination_path and start over.
    """
    started = time.time()
    destination = Path(destination_path).expanduser().resolve()
    tokenizer = Tokenizer(Path(tokenizer_path).expanduser().resolve())
    if chunk_size < 1:
        raise PajamaError(f"--chunk_size must be positive, got {chunk_size}")
    num_nodes, node_rank = _node_share(num_nodes, node_rank)
    files = find_source_files(source_path, sample=sample, subsets=subsets)
    settings = {
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "chunk_size": chunk_size,
        "dtype": str(dtype_for_vocab(tokenizer.vocab_size)),
        "unit_mb": unit_mb,
    }
    _claim_destination(destination, settings, overwrite)
    units = plan_units(files, unit_mb << 20)
    mine = [u for i, u in enumerate(units) if i % num_nodes == node_rank]
    todo = [u for u in mine if not _is_done(_record(destination, u))]
    workers = max(1, min(num_workers or _cpu_count(), len(todo) or 1))
    print(
        f"prepare: {len(files)} files in {len(units)} units"
        + (f", node {node_rank}/{num_nodes}: {len(mine)} units" if num_nodes > 1 else "")
        + f"; {len(mine) - len(todo)} already done, {len(todo)} to do with {workers} worker(s)"
    )
    _run_units(todo, destination, tokenizer, chunk_size, strict, workers)
    records = [r for r in (_record(destination, u) for u in units) if r is not None]
    mine_records = [r for r in records if r["unit"] in {u.name for u in mine}]
    _print_summary(mine_records, time.time() - started)
    if len(records) == len(units):
        manifest = build_manifest(records, settings, tokenizer)
        write_atomic(destination / MANIFEST, json.dumps(manifest, indent=1).encode())
        print(f"wrote {destination / MANIFEST}: {manifest['tokens']:,} tokens in {len(manifest['chunks'])} chunk files")
    else:
        print(f"{len(units) - len(records)} units of other nodes not done yet: the last node to finish writes {MANIFEST}")
    errors = [r for r in mine_records if r["error"]]
    if errors:
        lines = "\n  ".join(r["error"] for r in errors)
        raise PajamaError(f"{len(errors)} file(s) could not be read completely (every good document before the damage was kept):\n  {lines}")


def _node_share(num_nodes: int | None, node_rank: int | None) -> tuple[int, int]:
    env = os.environ
    if num_nodes is None:
        num_nodes = int(env.get("SLURM_ARRAY_TASK_COUNT") or env.get("SLURM_NNODES") or 1)
    if node_rank is None:
        if "SLURM_ARRAY_TASK_ID" in env:
            node_rank = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        else:
            node_rank = int(env.get("SLURM_NODEID", 0))
    if not 0 <= node_rank < num_nodes:
        raise PajamaError(f"--node_rank {node_rank} is outside [0, {num_nodes})")
    return num_nodes, node_rank


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _claim_destination(destination: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix output of a different tokenizer or chunk size into one destination."""
    path = destination / SETTINGS
    if overwrite and destination.exists():
        for name in (MANIFEST, SETTINGS):
            (destination / name).unlink(missing_ok=True)
        shutil.rmtree(destination / UNITS, ignore_errors=True)
        for chunk in destination.glob("*.bin"):
            chunk.unlink()
    if path.exists():
        earlier = json.loads(path.read_text())
        changed = [k for k in settings if earlier.get(k) != settings[k]]
        if changed:
            what = ", ".join(f"{k} {earlier.get(k)} -> {settings[k]}" for k in changed)
            raise PajamaError(f"{destination} holds output prepared with other settings ({what}); use a new destination or --overwrite")
    (destination / UNITS).mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(settings, indent=1).encode())


def _record(destination: Path, unit: Unit) -> dict | None:
    """The unit's record, if it finished and its chunk files are all there."""
    path = destination / UNITS / f"{unit.name}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if all((destination / c["file"]).exists() for c in record["chunks"]) else None


def _is_done(record: dict | None) -> bool:
    """Finished without a read error (a unit of a damaged file is redone: it may be fixed by now)."""
    return record is not None and record["error"] is None


def _run_units(todo: list[Unit], destination: Path, tokenizer: Tokenizer, chunk_size: int, strict: bool, workers: int) -> None:
    """Run the units with a progress bar; largest first, so the tail of the job stays parallel."""
    todo = sorted(todo, key=lambda u: (-u.size, u.name))
    args = [(u, destination, chunk_size, strict) for u in todo]
    bar = tqdm(total=sum(u.size for u in todo), unit="B", unit_scale=True, unit_divisor=1024, desc="prepare", smoothing=0.05)
    tokens = 0

    def advance(nbytes: int, ntokens: int) -> None:
        nonlocal tokens
        tokens += ntokens
        bar.update(nbytes)
        elapsed = max(bar.format_dict["elapsed"], 1e-9)
        bar.set_postfix_str(f"{tokens / elapsed / 1e3:,.0f}k tok/s", refresh=False)

    try:
        if workers == 1:
            progress: queue.SimpleQueue = queue.SimpleQueue()
            _init_worker(str(tokenizer.path), progress)
            for a in args:
                _run_unit(a)
                while not progress.empty():
                    advance(*progress.get())
        else:
            ctx = mp.get_context("spawn")
            progress = ctx.Queue()
            done = threading.Event()

            def drain() -> None:
                while not done.is_set():
                    try:
                        advance(*progress.get(timeout=0.2))
                    except queue.Empty:
                        pass

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer.path), progress)) as pool:
                for _ in pool.imap_unordered(_run_unit, args):
                    pass
            done.set()
            drainer.join()
    except KeyboardInterrupt:
        bar.close()
        raise PajamaError("interrupted: finished units are kept; rerun the same command to resume") from None
    finally:
        bar.close()


def build_manifest(records: list[dict], settings: dict, tokenizer: Tokenizer) -> dict:
    """The manifest: settings, per-subset and per-source totals, and every chunk file with
    its subset and real token count. Deterministic: sorted, no timings."""
    records = sorted(records, key=lambda r: r["unit"])
    subsets: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    chunks = []
    for r in records:
        s = subsets.setdefault(r["subset"], {"documents": 0, "tokens": 0, "chunk_files": 0, "source_files": 0, "bytes": 0, "bad_lines": 0})
        src = sources.get(r["source"])
        if src is None:
            src = sources[r["source"]] = {"subset": r["subset"], "documents": 0, "tokens": 0, "bytes": 0, "bad_lines": 0, "bad_examples": [], "units": 0}
            s["source_files"] += 1
        for key in ("documents", "tokens", "bytes", "bad_lines"):
            s[key] += r[key]
            src[key] += r[key]
        src["units"] += 1
        src["bad_examples"] = (src["bad_examples"] + r["bad_examples"])[: BadLines.max_examples]
        s["chunk_files"] += len(r["chunks"])
        chunks.extend({"file": c["file"], "subset": r["subset"], "tokens": c["tokens"]} for c in r["chunks"])
    return {
        "format": "pajama-chunks/1",
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id},
        "chunk_size": settings["chunk_size"],
        "dtype": settings["dtype"],
        "filler": tokenizer.eos_id,
        "documents": sum(s["documents"] for s in subsets.values()),
        "tokens": sum(s["tokens"] for s in subsets.values()),
        "subsets": dict(sorted(subsets.items())),
        "sources": dict(sorted(sources.items())),
        "chunks": chunks,
    }


def _print_summary(records: list[dict], seconds: float) -> None:
    totals: dict[str, list[int]] = {}
    for r in records:
        t = totals.setdefault(r["subset"], [0, 0, 0, 0])
        for i, key in enumerate(("documents", "tokens", "bytes", "bad_lines")):
            t[i] += r[key]
    rows = sorted(totals.items()) + [("total", [sum(col) for col in zip(*totals.values())] if totals else [0, 0, 0, 0])]
    print(f"{'subset':<15}{'documents':>12}{'tokens':>16}{'MB read':>11}{'bad lines':>11}")
    for name, (docs, toks, nbytes, bad) in rows:
        print(f"{name:<15}{docs:>12,}{toks:>16,}{nbytes / 1e6:>11,.1f}{bad:>11,}")
    tokens = rows[-1][1][1]
    print(f"{seconds:.1f} s, {tokens / max(seconds, 1e-9):,.0f} tokens/s")
    for r in records:
        for example in r["bad_examples"]:
            print(f"skipped: {example}")
