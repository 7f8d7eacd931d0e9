"""Data preparation throughput, all measured in one run (run by hand, not by the tests).

Two corpora of real text, each with a tokenizer trained on it:

  redpajama  RedPajama-shaped: the standard library's docstrings and sources, repeated (short
             documents, code, book-length documents, a Common Crawl ``.jsonl.zst``); a
             32000-token BPE;
  mid        many mid-sized documents, 2-30 KB each: man pages (their roff source), manuals
             and other documentation under /usr/share/doc, the standard library's sources,
             whichever of them the machine has; an 8000-token BPE.

``--layout`` writes the same documents in other layouts too, each measured on its own:

  redpajama   RedPajama-Data-1T's (the default): a folder per subset;
  slimpajama  SlimPajama-627B's: the documents shuffled over ``train/chunk<N>/example_train_<i>.jsonl.zst``
              files, each naming its subset in ``meta.redpajama_set_name`` (prepare routes them back,
              with ``--chunk_size`` 2049 * 256, as the README advises for SlimPajama);
  parquet     a code corpus's: Parquet files (snappy, row groups of 1,000 rows) with the text in a
              ``content`` column beside another, prepared as one subset (``--text_field content``).
  redpajama_v2  RedPajama-Data-V2's: the documents shuffled over ``documents/2023-06/<shard>/en_head.json.gz``
              with their quality signals (the Gopher rules' ones, one span per line for the
              line-level signal, computed here) and a duplicate list of 2% of them, prepared with
              ``--filters gopher_card --dedup true`` (the dataset card's Gopher example: it removes
              most documents here); rates count the tokens kept, and the one-process loop applies
              the same rules.

The tokenizer is a SentencePiece BPE trained like LLaMA's (``--kind sentencepiece``, the
default) or a Hugging Face ``tokenizer.json`` (``--kind huggingface``): a byte-level BPE with
Llama 3's pre-tokenizer and special tokens, trained by the tokenizers library.

For each corpus it reports:

  (a) the ceiling: the tokenizer alone encoding the same texts in memory on every core
      (SentencePiece: arrays of ids; Hugging Face: its batches of about a million characters,
      each encoding's ids as a list);
  (b) ``pajama prepare`` end to end on every core, as a fraction of the ceiling;
  (c) a one-process loop in the style of lit-llama's prepare (read a line, json.loads, encode,
      append to an array, write chunks), and prepare's speed-up over it;
  (d) prepare's scaling from 1 worker to every core;

and once (e) the peak memory of a worker on one large ``.jsonl.zst``, for two file sizes.

``--filter_cost`` measures instead, in each layout that filters (redpajama_v2), only prepare on
every core with the removed documents counted in characters (the default) and in tokens too
(``--count_removed_tokens true``, which tokenizes them, as prepare always did before), and the
cost of the chunk files' checksums against prepare's rate.

Rates are tokens of text per second (BOS/EOS excluded), so every line counts the same work.
Every measurement runs in a process of its own (see ``fresh``), timed from its first call.
A busy machine makes absolute figures meaningless: compare the ratios, measured in one run.
Each row gives the cores other processes kept busy while it ran (and the load average is
printed before and after). The output starts with the machine: the CPU's model and features,
and any instruction-set cap set in the environment; ``--json`` writes all of it to a file.

    python bench/prepare_bench.py [--size_mb 150] [--cases redpajama mid] [--layout redpajama slimpajama parquet] [--json out.json]
        [--workdir /tmp/pajama-prepare-bench] [--kind sentencepiece|huggingface] [--tokenizer_path M] [--filter_cost]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import datetime
import functools
import gzip
import importlib
import inspect
import io
import itertools
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sentencepiece as spm
import tokenizers
import zstandard

from pajama.chunks import ChunkWriter, block_checksums, dtype_for_vocab, encode_header
from pajama.hardware import cpu_info, emulated_isa
from pajama.prepare import prepare
from pajama.corpora import SET_NAMES, find_source_files, open_documents
from pajama.tokenizer import BATCH_CHARS, load_tokenizer, train_tokenizer
from pajama.tokenizer.huggingface import PARALLELISM, SPLIT_PATTERNS

CC = "common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst"
SKIP_MODULES = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc", "webbrowser"}


def stdlib_docstrings() -> list[str]:
    texts, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names - SKIP_MODULES):
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            for obj in [module] + [o for _, o in sorted(vars(module).items()) if inspect.isclass(o) or inspect.isfunction(o)]:
                try:
                    doc = inspect.getdoc(obj)
                except Exception:
                    continue
                if doc and len(doc) > 40 and doc not in seen:
                    seen.add(doc)
                    texts.append(doc)
    return texts


def stdlib_sources() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(lib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            pass
    return texts


def write_jsonl(path: Path, texts: list[str], compress: bool = False) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps({"text": t, "meta": {"i": i}}).encode() + b"\n" for i, t in enumerate(texts))
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data) if compress else data)
    return len(data)


def take(pool: list[str], mb: float, rng: random.Random) -> list[str]:
    """Documents drawn (with repetition) from ``pool`` up to ``mb`` MB of text."""
    out, size = [], 0
    while size < mb * 1e6:
        t = rng.choice(pool)
        out.append(t)
        size += len(t)
    return out


def build_corpus(root: Path, size_mb: float) -> None:
    rng = random.Random(0)
    docs, code = stdlib_docstrings(), stdlib_sources()
    books = ["\n\n".join(take(docs + code, 1.0, rng)) for _ in range(max(1, int(size_mb * 0.15)))]
    share = size_mb / 100
    for i in range(3):
        write_jsonl(root / "c4" / f"c4-train.{i:05d}-of-01024.jsonl", take(docs, 10 * share, rng))
    write_jsonl(root / "github" / "filtered_0a1b2c.sampled.jsonl", take(code, 25 * share, rng))
    write_jsonl(root / "book" / "book.jsonl", books)
    write_jsonl(root / "wikipedia" / "wiki.jsonl", take(docs, 5 * share, rng))
    write_jsonl(root / CC, take(docs + code, 25 * share, rng), compress=True)


MID_SIZE = (2_000, 30_000)  # characters of a mid-sized document


def read_text(path: Path) -> str | None:
    """A file's text (a ``.gz`` one decompressed); None if it is not UTF-8 text."""
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def mid_sized_documents() -> list[str]:
    """Distinct texts of 2-30 KB: man pages, documentation under /usr/share/doc, and the
    standard library's sources."""
    share = Path("/usr/share")
    paths = sorted(share.glob("man/man[1-9]*/*")) + sorted(p for p in share.glob("doc/**/*") if p.suffix in (".txt", ".md", ".rst", ".gz"))
    texts, seen = [], set()
    for text in [read_text(p) for p in paths] + stdlib_sources():
        if text and MID_SIZE[0] <= len(text) <= MID_SIZE[1] and text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def build_mid_corpus(root: Path, size_mb: float) -> None:
    rng = random.Random(0)
    pool = mid_sized_documents()
    for i in range(3):
        write_jsonl(root / "github" / f"mid_{i}.jsonl", take(pool, size_mb / 4, rng))
    write_jsonl(root / CC, take(pool, size_mb / 4, rng), compress=True)


# name: (what it is, how to build it, vocabulary of the tokenizer trained on it)
CASES = {
    "redpajama": ("RedPajama-shaped: short documents, code, books, a Common Crawl .jsonl.zst", build_corpus, 32000),
    "mid": ("mid-sized documents (2-30 KB): man pages, manuals, source files", build_mid_corpus, 8000),
}


LAYOUTS = ("redpajama", "slimpajama", "parquet", "redpajama_v2")
# What prepare (and reading the corpus) is told about each layout.
LAYOUT_ARGS = {
    "redpajama": {},
    "slimpajama": {"layout": "slimpajama"},
    "parquet": {"layout": "parquet", "text_field": "content", "subset_name": "code"},
    "redpajama_v2": {"layout": "redpajama_v2", "filters": "gopher_card", "dedup": True},
}
V2_FILES = 8


def find_args(layout: str) -> dict:
    """LAYOUT_ARGS as find_source_files takes them: filter sets as their rules."""
    from pajama.corpora.quality import builtin_rules

    args = dict(LAYOUT_ARGS[layout])
    if "filters" in args:
        args["rules"] = tuple(builtin_rules(args.pop("filters")))
    return args


def v2_signals(text: str) -> dict:
    """The signals the dataset card's Gopher rules read, computed the plain way."""
    words = text.split()
    n = max(len(words), 1)
    chars = sum(map(len, words)) or 1
    top = max(collections.Counter(zip(words, words[1:])).items(), key=lambda kv: kv[1], default=None)
    lines, spans, start = text.split("\n"), [], 0
    for line in lines:
        spans.append([start, start + len(line), float(line.lstrip().startswith(("-", "*", "•")))])
        start += len(line) + 1

    def doc(value: float) -> list:
        return [[0, len(text), value]]

    return {
        "ccnet_nlines": doc(len(lines)),
        "rps_doc_word_count": doc(len(words)),
        "rps_doc_mean_word_length": doc(chars / n),
        "rps_doc_symbol_to_word_ratio": doc((text.count("#") + text.count("...")) / n),
        "rps_doc_frac_chars_top_2gram": doc(top[1] * (len(top[0][0]) + len(top[0][1])) / chars if top else 0.0),
        "rps_lines_start_with_bulletpoint": spans,
    }


SLIM_FILES = 8  # of the SlimPajama layout: units enough for 2 workers, each of some MB
PARQUET_FILES = 4
PARQUET_ROW_GROUP = 1000  # rows


def load_texts(root: Path, layout: str = "redpajama") -> list[str]:
    """The documents of a corpus, in the order prepare reads its files."""
    return [d.text for f in find_source_files(root, **find_args(layout)) for d in open_documents(f)]


def layout_chunk_size(layout: str) -> int:
    return 2049 * 256 if layout == "slimpajama" else 2049 * 1024


def write_layout(source: Path, root: Path, layout: str, files: int | None = None) -> None:
    """The documents of the RedPajama-layout corpus at ``source`` written in ``layout``:
    SlimPajama's (shuffled, each naming its subset) or a code corpus's Parquet files; in
    ``files`` files (default: ``SLIM_FILES`` or ``PARQUET_FILES``)."""
    docs = [(f.subset, d.text) for f in find_source_files(source) for d in open_documents(f)]
    if layout == "slimpajama":
        names = {subset: name for name, subset in SET_NAMES.items()}
        random.Random(0).shuffle(docs)
        for i, share in enumerate(s for s in contiguous_shares(docs, files or SLIM_FILES, size=lambda d: len(d[1])) if s):
            lines = b"".join(json.dumps({"text": t, "meta": {"redpajama_set_name": names[s]}}).encode() + b"\n" for s, t in share)
            path = root / "train" / f"chunk{i % 2 + 1}" / f"example_train_{i}.jsonl.zst"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))
    elif layout == "redpajama_v2":
        rng = random.Random(0)
        rng.shuffle(docs)
        for i, share in enumerate(s for s in contiguous_shares(docs, files or V2_FILES, size=lambda d: len(d[1])) if s):
            tag = f"2023-06/{i:04d}/en_head"
            for folder, name, records in (
                ("documents", f"{tag}.json.gz", ({"raw_content": t} for _, t in share)),
                ("quality_signals", f"{tag}.signals.json.gz", ({"id": f"{tag}.json.gz/{r}", "quality_signals": v2_signals(t)} for r, (_, t) in enumerate(share))),
            ):
                path = root / folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(gzip.compress(b"".join(json.dumps(rec).encode() + b"\n" for rec in records), compresslevel=6, mtime=0))
            ids = [f"{tag}.json.gz/{r}" for r in sorted(rng.sample(range(len(share)), len(share) // 50))]
            (root / "duplicates" / tag).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"doc_id": pa.array(ids, pa.string())}), root / "duplicates" / f"{tag}.duplicates.parquet")
    else:
        for i, share in enumerate(s for s in contiguous_shares(docs, files or PARQUET_FILES, size=lambda d: len(d[1])) if s):
            table = pa.table({"max_stars_repo_path": [f"{s}/{n}.py" for n, (s, _) in enumerate(share)], "content": [t for _, t in share]})
            (root / "data").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "data" / f"train-{i:05d}-of-{PARQUET_FILES:05d}.parquet", row_group_size=PARQUET_ROW_GROUP)


LLAMA3_PATTERN = next(p for p in SPLIT_PATTERNS if "{1,3}" in p)


def train_hf_tokenizer(corpus: Path, destination: Path, vocab_size: int, max_bytes: int = 30_000_000) -> Path:
    """A byte-level BPE ``tokenizer.json`` like Llama 3's (its pre-tokenizer, its BOS and
    EOS), trained by the tokenizers library on the first ``max_bytes`` of the corpus."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    texts, size = [], 0
    for text in load_texts(corpus):
        texts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    destination.mkdir(parents=True, exist_ok=True)
    tok.save(str(destination / "tokenizer.json"))
    return destination / "tokenizer.json"


def in_batches(texts: list[str], max_chars: int = BATCH_CHARS):
    """``texts`` in runs of about ``max_chars`` characters."""
    batch, size = [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def raw_encode(tok, texts: list[str], threads: int) -> int:
    """Tokens of ``texts`` encoded by the tokenizer's library alone, on ``threads`` threads
    of its own, ids taken out the fastest way it offers."""
    if tok.kind == "sentencepiece":
        return sum(len(ids) for ids in tok.processor.encode(texts, num_threads=threads, return_type="numpy"))
    # The library's threads are all or nothing (as many as cores), and its encodings hold a
    # few hundred bytes a token: batches bound the memory, as they do in prepare.
    os.environ[PARALLELISM] = "true" if threads > 1 else "false"
    encode = getattr(tok.backend, "encode_batch_fast", None) or tok.backend.encode_batch
    return sum(len(e.ids) for batch in in_batches(texts) for e in encode(batch, add_special_tokens=False))


# -- (a) the ceiling ---------------------------------------------------------------------------


def _encode_share(model: str, texts: list[str], barrier, results) -> None:
    tok = load_tokenizer(model)
    barrier.wait()
    start = time.perf_counter()
    n = raw_encode(tok, texts, threads=1)
    results.put((time.perf_counter() - start, n))


def contiguous_shares(items: list, parts: int, size=len) -> list[list]:
    """``items`` cut, in order, into ``parts`` runs of about equal ``size``."""
    ends = list(itertools.accumulate(map(size, items)))
    cuts = [bisect.bisect_left(ends, ends[-1] * k / parts) + 1 for k in range(1, parts)]
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def ceiling_processes(model: str, texts: list[str], cores: int, split: bool) -> tuple[float, int]:
    """Every core encoding an equal share in its own process: (seconds, tokens).

    The shares keep the corpus order, as prepare reads it: the corpus repeats documents, and
    SentencePiece encodes a copy that directly follows another about 20 % faster, so an order
    that brings copies together (sorting by length does) would inflate the ceiling.
    """
    if split:
        tok = load_tokenizer(model)
        texts = [p for t in texts for p in tok.split(t)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(cores), ctx.Queue()
    procs = [ctx.Process(target=_encode_share, args=(model, s, barrier, results)) for s in contiguous_shares(texts, cores)]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return max(t for t, _ in out), sum(n for _, n in out)


def ceiling_threads(model: str, texts: list[str], cores: int) -> tuple[float, int]:
    tok = load_tokenizer(model)
    start = time.perf_counter()
    n = raw_encode(tok, texts, threads=cores)
    return time.perf_counter() - start, n


# -- (c) a one-process loop as lit-llama's prepare does it --------------------------------------


def anchor_texts(f) -> Iterator[tuple[str | None, str]]:
    """(subset, text) of every record of a file, read the plain way: line by line and
    json.loads, or a Parquet file's batches as Python lists."""
    if f.format == "redpajama_v2":  # the same filters, the plain way
        from pajama.corpora.quality import judge

        duplicates = set(pq.read_table(f.duplicates, columns=["doc_id"]).column(0).to_pylist())
        with gzip.open(f.path, "rt", encoding="utf-8") as docs, gzip.open(f.signals, "rt", encoding="utf-8") as signals:
            for row, (line, signal_line) in enumerate(zip(docs, signals)):
                if f"{f.document_id_prefix}/{row}" not in duplicates and not judge(f.rules, json.loads(signal_line)["quality_signals"])[0]:
                    yield f.subset, json.loads(line)[f.text_field]
        return
    if f.format == "parquet":
        for batch in pq.ParquetFile(f.path).iter_batches(columns=[f.text_field]):
            for text in batch.column(0).to_pylist():
                yield f.subset, text
        return
    with open(f.path, "rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if f.path.name.endswith(".zst") else raw
        for line in io.TextIOWrapper(stream, encoding="utf-8"):
            record = json.loads(line)
            yield (f.subset or SET_NAMES[record["meta"]["redpajama_set_name"]]), record[f.text_field]


def anchor_loop(root: Path, model: str, destination: Path, chunk_size: int, layout: str) -> tuple[float, int]:
    start = time.perf_counter()
    tok = load_tokenizer(model)
    dtype = dtype_for_vocab(tok.vocab_size)
    destination.mkdir(parents=True)
    n = 0
    for f in find_source_files(root, **find_args(layout)):
        writers = {}
        for subset, text in anchor_texts(f):
            writer = writers.get(subset)
            if writer is None:
                writer = writers[subset] = ChunkWriter(destination, f"{subset}_{f.prefix}", chunk_size, dtype, filler=tok.eos_id)
            ids = tok.encode(text)
            writer.add(np.array(ids, dtype=dtype))
            n += len(ids) - 2
        for writer in writers.values():
            writer.close()
    return time.perf_counter() - start, n


def run_anchor(root: Path, model: str, destination: Path, chunk_size: int, layout: str = "redpajama") -> tuple[float, int]:
    shutil.rmtree(destination, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):
        return anchor_loop(root, model, destination, chunk_size, layout)


# -- (b), (d) prepare ---------------------------------------------------------------------------


def run_prepare(root: Path, model: str, destination: Path, workers: int, unit_mb: float, chunk_size: int, layout: str = "redpajama", **more) -> tuple[float, int]:
    shutil.rmtree(destination, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its summary and progress bar
        prepare(root, model, destination, num_workers=workers, unit_mb=unit_mb, chunk_size=chunk_size, **LAYOUT_ARGS[layout], **more)
    seconds = time.perf_counter() - start
    manifest = json.loads((destination / "manifest.json").read_text())
    return seconds, manifest["tokens"] - 2 * manifest["documents"]


def _report(measure, args: tuple, results) -> None:
    try:
        results.put(measure(*args))
    except BaseException as e:
        results.put(e)
        raise


def fresh(measure, *args) -> tuple[float, int]:
    """``measure(*args)`` (seconds, tokens) in a new Python process, as a command runs.

    A process that has loaded and used other tokenizer instances before encodes slower:
    with a tokenizer.json, ``pajama prepare`` in the process that had measured the ceilings
    and the runs before it was 10-25 % slower than from the command line (1.04 against 1.41 M
    tokens/s on mid, one worker), while one instance encoding the same corpus six times over
    keeps its speed.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=_report, args=(measure, args, results))
    process.start()
    out = results.get()
    process.join()
    if isinstance(out, BaseException):
        raise out
    return out


# -- (e) memory ---------------------------------------------------------------------------------

# The peak is read from /proc (VmHWM, this process's own high-water mark): getrusage's
# ru_maxrss would include the memory of the benchmark process it was forked from.
RSS_SCRIPT = """
import json, sys
from pajama.prepare import prepare
if sys.argv[4] == "prepare":
    prepare(sys.argv[1], sys.argv[2], sys.argv[3], num_workers=1, **json.loads(sys.argv[5]))
else:
    from pajama.tokenizer import load_tokenizer
    load_tokenizer(sys.argv[2])
status = open("/proc/self/status").read()
print("RSS", status.split("VmHWM:")[1].split()[0])
"""


def peak_rss_mb(root: Path, model: str, destination: Path, what: str, layout: str = "redpajama") -> float:
    shutil.rmtree(destination, ignore_errors=True)
    command = [sys.executable, "-c", RSS_SCRIPT, str(root), model, str(destination), what, json.dumps(LAYOUT_ARGS[layout])]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return int(out.split("RSS")[-1]) / 1024  # kB -> MB


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its
    finished children): their difference over a run is the work of other processes."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), sum(r.ru_utime + r.ru_stime for r in own)


def best_of(repeat: int, name: str, measure) -> dict:
    """Best of ``repeat`` runs of ``measure`` (a busy machine only ever slows a run down), printed
    as a row with the cores other processes kept busy during each run."""
    runs, others = [], []
    for _ in range(repeat):
        busy, own = cpu_seconds()
        runs.append(measure())
        busy_after, own_after = cpu_seconds()
        others.append(max(0.0, (busy_after - busy) - (own_after - own)) / runs[-1][0])
    seconds, tokens = min(runs)
    print(f"  {name:<55} {seconds:7.1f} s {tokens / 1e6:8.1f} M tokens {tokens / seconds / 1e6:7.2f} M tok/s  (runs: {', '.join(f'{t:.1f}' for t, _ in runs)} s; other processes: {', '.join(f'{o:.2f}' for o in others)} cores)", flush=True)
    return {"what": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "runs_s": [t for t, _ in runs], "other_processes_cores": others}


def default_tokenizer(work: Path, kind: str, vocab_size: int) -> Path:
    """Where the tokenizer trained on a corpus goes: one per kind and vocabulary."""
    return work / f"tokenizer-{kind}-{vocab_size}" / ("tokenizer.model" if kind == "sentencepiece" else "tokenizer.json")


def measure_case(name: str, args: argparse.Namespace, cores: int, layout: str = "redpajama") -> dict:
    """(a) to (d) on one corpus in one layout: its rows and ratios."""
    what, build, vocab_size = CASES[name]
    work = args.workdir / name
    corpus = work / "corpus"  # RedPajama's layout: the tokenizer is trained on it, the other layouts written from it
    chunk_size = layout_chunk_size(layout)
    print(f"\n== {name} in the {layout} layout: {what}")
    if not (corpus / CC).exists():
        print(f"building a {args.size_mb:.0f} MB corpus in {corpus} ...", flush=True)
        shutil.rmtree(corpus, ignore_errors=True)
        build(corpus, args.size_mb)
    vocab_size = args.vocab_size or vocab_size
    model = str(args.tokenizer_path or default_tokenizer(work, args.kind, vocab_size))
    if not Path(model).exists():
        print(f"training a {vocab_size}-token {args.kind} tokenizer on the corpus ...", flush=True)
        if args.kind == "sentencepiece":
            with contextlib.redirect_stdout(io.StringIO()):
                train_tokenizer(corpus, Path(model).parent, vocab_size=vocab_size, max_bytes=30_000_000)
        else:
            train_hf_tokenizer(corpus, Path(model).parent, vocab_size)
    if layout != "redpajama":
        source, corpus = corpus, work / f"corpus-{layout}"
        if not (corpus / ".built").exists():
            print(f"writing it in the {layout} layout in {corpus} ...", flush=True)
            shutil.rmtree(corpus, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):
                write_layout(source, corpus, layout)
            (corpus / ".built").write_text("")
    if args.filter_cost:
        return measure_filter_cost(corpus, model, work, args, cores, layout, chunk_size)
    tok = load_tokenizer(model)
    with contextlib.redirect_stdout(io.StringIO()):
        texts = load_texts(corpus, layout)
    chars = sum(map(len, texts))
    long = sum(len(t) for t in texts if len(tok.split(t)) > 1)
    corpus_info = {"layout": layout, "chunk_size": chunk_size, "documents": len(texts), "characters": chars, "share_in_pieces": long / chars, "tokenizer": tok.kind, "vocab_size": tok.vocab_size, "pieces_exact": tok.splittable}
    print(f"corpus: {len(texts):,} documents of {chars / len(texts) / 1e3:.1f} K characters on average, {chars / 1e6:.0f} M characters ({long / chars:.0%} in documents encoded in pieces); {tok.kind} tokenizer, vocab {tok.vocab_size}, pieces {'exact' if tok.splittable else 'off'}")
    row = functools.partial(best_of, args.repeat)

    print(f"(a) ceiling: the tokenizer alone, texts in memory (best of {args.repeat})")
    rows = {
        "ceiling_threads": row(f"encode(list, num_threads={cores})" if tok.kind == "sentencepiece" else f"encode_batch_fast, the library's {cores} threads", lambda: fresh(ceiling_threads, model, texts, cores)),
        "ceiling_processes": row(f"{cores} processes, whole documents", lambda: ceiling_processes(model, texts, cores, split=False)),
        "ceiling_pieces": row(f"{cores} processes, long documents in prepare's pieces", lambda: ceiling_processes(model, texts, cores, split=True)),
    }
    texts = None  # the corpus in memory is not needed by what follows
    print("(b), (d) pajama prepare, end to end")
    rows["prepare"] = row(f"prepare, {cores} workers (unit_mb {args.unit_mb:g})", lambda: fresh(run_prepare, corpus, model, work / "out", cores, args.unit_mb, chunk_size, layout))
    rows["prepare_1"] = row("prepare, 1 worker", lambda: fresh(run_prepare, corpus, model, work / "out1", 1, args.unit_mb, chunk_size, layout))
    print("(c) one process, line by line (lit-llama's way)")

    loop = "read Parquet batches, encode, np.array, write" if layout == "parquet" else "read, json.loads, encode, np.array, write"
    rows["loop"] = row(loop, lambda: fresh(run_anchor, corpus, model, work / "anchor", chunk_size, layout))
    rate = {k: r["tokens_per_s"] for k, r in rows.items()}
    ratios = {
        "prepare_vs_ceiling": rate["prepare"] / max(rate["ceiling_threads"], rate["ceiling_processes"]),
        "prepare_vs_ceiling_pieces": rate["prepare"] / rate["ceiling_pieces"],
        "prepare_vs_loop": rate["prepare"] / rate["loop"],
        "scaling_1_to_all": rate["prepare"] / rate["prepare_1"],
    }
    print(f"ratios ({name}, {layout} layout)")
    print(f"  prepare / ceiling (whole documents, best of threads and processes): {ratios['prepare_vs_ceiling']:.2f}   (goal >= 0.90)")
    print(f"  prepare / ceiling (documents in prepare's pieces):                  {ratios['prepare_vs_ceiling_pieces']:.2f}   (goal >= 0.90)")
    print(f"  prepare on {cores} cores / one-process loop:                            {ratios['prepare_vs_loop']:.2f}x  (goal >= 1.8x on 2 cores)")
    print(f"  prepare 1 -> {cores} workers:                                            {ratios['scaling_1_to_all']:.2f}x  (goal >= 1.85x on 2)", flush=True)
    return {"corpus": corpus_info, "rows": rows, "ratios": ratios}


def measure_filter_cost(corpus: Path, model: str, work: Path, args: argparse.Namespace, cores: int, layout: str, chunk_size: int) -> dict:
    """``--filter_cost``: prepare on every core, removed documents counted in characters (the
    default) against counted in tokens too (``--count_removed_tokens true``); and the chunk
    checksums' share of prepare's time per chunk file."""
    row = functools.partial(best_of, args.repeat)
    print(f"prepare, {cores} workers, rates of tokens kept (best of {args.repeat})")
    rows = {}
    for key, count in (("characters", False), ("tokens", True)):
        rows[key] = row(
            f"removed counted in {key}" + (" (--count_removed_tokens true)" if count else ""),
            lambda count=count: fresh(functools.partial(run_prepare, count_removed_tokens=count), corpus, model, work / "out", cores, args.unit_mb, chunk_size, layout),
        )
    filtering = json.loads((work / "out" / "manifest.json").read_text())["filtering"]
    removed = filtering["removed"]
    print(f"  the filters removed {removed['documents']:,} of {filtering['read']:,} documents, {removed['characters'] / 1e6:.1f} M characters, {removed['tokens'] / 1e6:.1f} M tokens")
    ratio = rows["characters"]["tokens_per_s"] / rows["tokens"]["tokens_per_s"]
    print(f"  kept tokens/s, characters / tokens counted: {ratio:.2f}x")
    # Checksums: CRC-32 of every block of a chunk file, from memory, as the writer does it.
    tok = load_tokenizer(model)
    dtype = dtype_for_vocab(tok.vocab_size)
    buffer = np.random.default_rng(0).integers(0, tok.vocab_size, chunk_size).astype(dtype)
    header = encode_header(dtype, chunk_size)
    start = time.perf_counter()
    for _ in range(20):
        block_checksums(header, buffer)
    crc_seconds = (time.perf_counter() - start) / 20
    per_worker = rows["characters"]["tokens_per_s"] / cores
    share = crc_seconds / (chunk_size / per_worker)
    print(f"  chunk checksums: {crc_seconds * 1e3:.2f} ms per chunk file of {buffer.nbytes / 1e6:.1f} MB ({buffer.nbytes / crc_seconds / 1e9:.1f} GB/s), {share:.2%} of the time a worker takes to fill one at the rate above", flush=True)
    return {"rows": rows, "ratio_characters_vs_tokens": ratio, "removed": removed, "read": filtering["read"], "checksum_seconds_per_chunk": crc_seconds, "checksum_share": share}


def measure_memory(args: argparse.Namespace, model: str, layout: str = "redpajama") -> dict:
    """(e): the peak RSS of one worker on one file (a ``.jsonl.zst``, or in the Parquet
    layout a Parquet file) of ``--rss_mb`` and twice as many MB of text."""
    kind = "Parquet file" if layout == "parquet" else ".jsonl.zst"
    print(f"\n(e) peak memory of one worker on one {kind} ({layout} layout)")
    rng = random.Random(1)
    pool = stdlib_docstrings() + stdlib_sources()
    rss = {}
    for mb in (args.rss_mb, 2 * args.rss_mb):
        base_root = args.workdir / f"rss{mb:g}"
        if not (base_root / CC).exists():
            write_jsonl(base_root / CC, take(pool, mb, rng) + ["\n\n".join(take(pool, 2.0, rng))], compress=True)
        root = base_root
        if layout != "redpajama":
            root = args.workdir / f"rss{mb:g}-{layout}"
            if not (root / ".built").exists():
                shutil.rmtree(root, ignore_errors=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    write_layout(base_root, root, layout, files=1)
                (root / ".built").write_text("")
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        rss[mb] = peak_rss_mb(root, model, args.workdir / "rss_out", "prepare", layout)
        print(f"  {mb:g} MB of text ({size / 1e6:.0f} MB on disk, one 2 MB document): peak RSS {rss[mb]:.0f} MB", flush=True)
    base = peak_rss_mb(args.workdir / f"rss{args.rss_mb:g}", model, args.workdir / "rss_out", "imports")
    print(f"  the same process after its imports and loading the tokenizer: {base:.0f} MB")
    print(f"  peak RSS {args.rss_mb:g} MB -> {2 * args.rss_mb:g} MB file: {rss[args.rss_mb]:.0f} -> {rss[2 * args.rss_mb]:.0f} MB   (goal <= 1024, flat)")
    return {"layout": layout, "text_mb": list(rss), "peak_rss_mb": list(rss.values()), "after_imports_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size_mb", type=float, default=150, help="MB of jsonl text in each corpus")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="the corpora to measure")
    parser.add_argument("--layout", nargs="+", choices=LAYOUTS, default=["redpajama"], help="the layouts to write each corpus in and measure (see above)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pajama-prepare-bench"))
    parser.add_argument("--kind", choices=["sentencepiece", "huggingface"], default="sentencepiece", help="the tokenizer trained on each corpus: SentencePiece, or a byte-level BPE tokenizer.json like Llama 3's")
    parser.add_argument("--vocab_size", type=int, help="vocabulary of the tokenizers trained (default: 32000 for redpajama, 8000 for mid)")
    parser.add_argument("--tokenizer_path", type=Path, help="one tokenizer for every corpus (default: a BPE trained on each, of the vocabulary above)")
    parser.add_argument("--unit_mb", type=float, default=4, help="small units, so the tail (one unit at most) is short on this small corpus")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the fastest counts")
    parser.add_argument("--rss_mb", type=float, default=60, help="MB of text in the smaller .jsonl.zst of (e); the larger has twice as much")
    parser.add_argument("--json", type=Path, help="also write every figure, with the machine and the settings, to this file")
    parser.add_argument("--filter_cost", action="store_true", help="only prepare with removed documents counted in characters against tokens, and the checksums' cost (filtering layouts)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    machine = {"cpu": cpu_info().describe(), "isa_cap": emulated_isa(), "sentencepiece": spm.__version__, "tokenizers": tokenizers.__version__, "python": sys.version.split()[0]}
    print(f"machine: {machine['cpu']}; instruction-set cap: {machine['isa_cap'] or 'none'}; SentencePiece {machine['sentencepiece']}, tokenizers {machine['tokenizers']}, Python {machine['python']}")
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    cases = {(name if layout == "redpajama" else f"{name}/{layout}"): measure_case(name, args, cores, layout) for name in args.cases for layout in args.layout}
    first = args.cases[0]
    model = str(args.tokenizer_path or default_tokenizer(args.workdir / first, args.kind, args.vocab_size or CASES[first][2]))
    memory = {} if args.filter_cost else {layout: measure_memory(args, model, layout) for layout in args.layout}
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.json:
        record = {
            "date": datetime.date.today().isoformat(),
            "machine": machine,
            "cores": cores,
            "load_average": {"before": load_before, "after": load_after},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cases": cases,
            "memory": memory,
        }
        args.json.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
