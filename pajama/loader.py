"""Training data: prepared chunk files as per-subset token streams, and the mixture sampler.

Each subset's chunk files, in name order, form one stream of real tokens (padding excluded,
using the manifest). The stream is cut into non-overlapping blocks of ``seq_len + 1`` tokens
(input and shifted target). The tail of each stream is held out for validation when no
separate validation directory is given.

The sampler defines one endless global sequence of samples, the same for any number of
devices: global sample ``g`` picks its subset by a hash of ``(seed, g)`` against the mixture
weights, and takes the next block of that subset in a per-epoch pseudo-random permutation
(a keyed Feistel network: no permutation array, so memory stays flat in corpus size). An
optimizer step consumes the next ``global_batch`` samples; rank ``r`` of ``W`` takes the
``r``-th contiguous slice. Its whole state is the step and per-subset counters, so a resumed
run reads exactly the samples the uninterrupted run would have read.

Each chunk file is checked when a stream first reads from it, before any of its tokens reach
a training step: its size and header against the manifest (always; a few bytes read), and,
when asked (``verify_checksums``), the CRC-32 of each block against those prepare recorded.
:func:`verify_prepared` checks every file of a directory that way up front.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pajama import PajamaError
from pajama.chunks import CHECKSUM_BLOCK, HEADER_SIZE, damaged_offset, encode_header, open_chunk, read_header
from pajama.progress import progress_bar
from pajama.prepare import MANIFEST, SETTINGS
from pajama.corpora import LLAMA_WEIGHTS, SUBSETS, subset_of_prefix

LLAMA_BOS = 1  # BOS of LLaMA's tokenizer, which lit-llama's data (no manifest) was made with

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ChunkSpec:
    """What a chunk file should be, from the manifest: its dtype and chunk size (None: not
    recorded, the header alone is checked) and the CRC-32 of each block (None: prepared before
    checksums were recorded)."""

    dtype: str | None = None
    chunk_size: int | None = None
    crc32: tuple[int, ...] | None = None
    block_bytes: int = CHECKSUM_BLOCK


def chunk_spec(manifest: dict, chunk: dict) -> ChunkSpec:
    """What ``manifest`` says one of its ``chunks`` entries should be."""
    crc32 = tuple(chunk["crc32"]) if "crc32" in chunk else None
    return ChunkSpec(manifest.get("dtype"), manifest.get("chunk_size"), crc32, manifest.get("checksums", {}).get("block_bytes", CHECKSUM_BLOCK))


def check_chunk(path: Path, spec: ChunkSpec, checksums: bool = False) -> None:
    """Raise a PajamaError naming ``path`` and where it is damaged unless it is the chunk file
    prepare wrote: there, of the size and header the manifest says (a few bytes read), and with
    ``checksums`` every block matching its recorded CRC-32 (the whole file read)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PajamaError(f"{path}: chunk file missing") from None
    if spec.dtype is not None and spec.chunk_size is not None:
        expected = HEADER_SIZE + spec.chunk_size * np.dtype(spec.dtype).itemsize
        if size < expected:
            raise PajamaError(f"{path}: truncated at byte {size:,}: {size:,} bytes, expected {expected:,} ({spec.chunk_size:,} {spec.dtype} tokens)")
        if size > expected:
            raise PajamaError(f"{path}: {size:,} bytes, expected {expected:,} ({spec.chunk_size:,} {spec.dtype} tokens): longer than prepare wrote it, from byte {expected:,}")
        try:
            with open(path, "rb") as f:
                header = f.read(HEADER_SIZE)
        except OSError as e:
            raise PajamaError(f"{path}: cannot read chunk file: {e.strerror}") from None
        want = encode_header(np.dtype(spec.dtype), spec.chunk_size)
        if header != want:
            at = next(i for i, (a, b) in enumerate(zip(header, want)) if a != b)
            raise PajamaError(f"{path}: damaged at byte {at}: its header is not the one of {spec.chunk_size:,} {spec.dtype} tokens that the manifest says (overwritten after prepare?)")
    else:  # lit-llama's output, or a manifest without dtype and chunk size: the header must be whole and agree with the file's size
        read_header(path)
    if checksums and spec.crc32 is not None:
        offset = damaged_offset(path, list(spec.crc32), spec.block_bytes)
        if offset is not None:
            end = min(offset + spec.block_bytes, size)
            raise PajamaError(f"{path}: damaged at byte {offset:,}: bytes {offset:,}-{end - 1:,} differ from what prepare wrote (their CRC-32 is not the one recorded in {MANIFEST})")


@dataclass
class Stream:
    """The real tokens of one subset, across its chunk files. Each file is checked
    (:func:`check_chunk`) the first time it is read; ``verify_checksums`` checks its blocks'
    CRC-32 too."""

    name: str
    files: list[Path]
    lengths: np.ndarray  # real tokens per file
    offsets: np.ndarray  # start of each file in the stream (len(files) + 1 entries)
    specs: list[ChunkSpec] | None = None  # what each file should be (None: header checks alone)
    verify_checksums: bool = False
    checked: set[int] = field(default_factory=set)  # files checked so far

    @classmethod
    def of(cls, name: str, files: list[Path], lengths: list[int], specs: list[ChunkSpec] | None = None, verify_checksums: bool = False) -> "Stream":
        lengths_arr = np.asarray(lengths, dtype=np.int64)
        return cls(name, files, lengths_arr, np.concatenate([[0], np.cumsum(lengths_arr)]), specs, verify_checksums)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream, across file boundaries."""
        out = np.empty(length, dtype=np.int64)
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        done = 0
        while done < length:
            if i not in self.checked:
                check_chunk(self.files[i], self.specs[i] if self.specs else ChunkSpec(), self.verify_checksums)
                self.checked.add(i)
            begin = start + done - int(self.offsets[i])
            take = min(length - done, int(self.lengths[i]) - begin)
            out[done : done + take] = _memmap(self.files[i])[begin : begin + take]
            done += take
            i += 1
        return out


@lru_cache(maxsize=512)
def _memmap(path: Path) -> np.ndarray:
    return open_chunk(path)


@dataclass
class PreparedData:
    """A prepared directory: one stream per subset, and what it was made with."""

    directory: Path
    streams: dict[str, Stream]
    tokenizer_sha256: str | None  # None for lit-llama data (no manifest)
    vocab_size: int | None
    bos_id: int  # where documents start in the packed stream


@dataclass
class _Chunk:
    subset: str
    path: Path
    tokens: int  # real ones
    spec: ChunkSpec


_NOTED: set[Path] = set()  # directories whose lack of checksums was said already (once a process)


def _chunks(directory: Path) -> tuple[list[_Chunk], dict | None]:
    """The chunk files of a prepared directory in training order, and its manifest (None for
    lit-llama's output, whose whole chunks are used: it has no record of the padding)."""
    if not directory.is_dir():
        raise PajamaError(f"{directory}: data directory not found")
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as e:
            raise PajamaError(f"{manifest_path}: not valid JSON ({e})") from None
        chunks = [_Chunk(c["subset"], directory / c["file"], c["tokens"], chunk_spec(manifest, c)) for c in manifest["chunks"]]
        unchecked = sum(c.spec.crc32 is None for c in chunks)
        if unchecked and directory not in _NOTED:
            _NOTED.add(directory)
            which = "its chunk files" if unchecked == len(chunks) else f"{unchecked:,} of its {len(chunks):,} chunk files"
            print(f"note: {directory}: {which} have no checksums (prepared before pajama recorded them): their sizes and headers are checked, not their contents")
        return chunks, manifest
    if (directory / SETTINGS).exists():
        raise PajamaError(f"{directory}: prepare has not finished (no {MANIFEST}); rerun the same pajama prepare command to complete it")
    chunks = []
    for path in sorted(directory.glob("*.bin")):
        subset = subset_of_prefix(path.name)
        if subset is None:
            raise PajamaError(f"{path}: cannot tell which subset this chunk file belongs to (names start with one of {', '.join(SUBSETS)} or cc)")
        dtype, chunk_size = read_header(path)
        chunks.append(_Chunk(subset, path, chunk_size, ChunkSpec(str(dtype), chunk_size)))
    return chunks, None


def load_prepared(directory: Path, verify_checksums: bool = False) -> PreparedData:
    """Read a directory written by ``pajama prepare`` (or lit-llama's prepare, no manifest).

    Each chunk file is checked the first time it is read (see :class:`Stream`): its size and
    header always, its blocks' checksums too with ``verify_checksums``.
    """
    directory = Path(directory).expanduser().resolve()
    chunks, manifest = _chunks(directory)
    by_subset: dict[str, list[_Chunk]] = {}
    for chunk in chunks:
        if not chunk.path.exists():
            raise PajamaError(f"{chunk.path}: listed in {directory / MANIFEST} but missing")
        by_subset.setdefault(chunk.subset, []).append(chunk)
    streams = {
        s: Stream.of(s, [c.path for c in cs], [c.tokens for c in cs], [c.spec for c in cs], verify_checksums)
        for s, cs in sorted(by_subset.items())
        if sum(c.tokens for c in cs)
    }  # fmt: skip
    if not streams:
        raise PajamaError(f"{directory}: no prepared chunk files found (run pajama prepare first)")
    if manifest is None:
        return PreparedData(directory, streams, None, None, LLAMA_BOS)
    tokenizer = manifest["tokenizer"]
    return PreparedData(directory, streams, tokenizer["sha256"], tokenizer["vocab_size"], tokenizer.get("bos_id", LLAMA_BOS))


def verify_prepared(directory: Path) -> None:
    """Check every chunk file of a prepared directory against its manifest, reading each whole:
    size, header, and the CRC-32 of every block (sizes and headers only for files prepared
    before checksums were recorded, and for lit-llama's output). Raises a PajamaError naming
    each damaged file and where (the first few of them); prints what was checked."""
    directory = Path(directory).expanduser().resolve()
    chunks, _ = _chunks(directory)
    problems = []
    bar = progress_bar(total=len(chunks), desc="verifying chunk files", unit="file", disable=len(chunks) < 100)
    for chunk in chunks:
        try:
            check_chunk(chunk.path, chunk.spec, checksums=True)
        except PajamaError as e:
            problems.append(str(e))
        bar.update(1)
    bar.close()
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise PajamaError(f"{directory}: {len(problems)} of {len(chunks)} chunk files damaged: " + "; ".join(problems[:3]) + more)
    checked = sum(c.spec.crc32 is not None for c in chunks)
    print(f"verified {len(chunks):,} chunk files in {directory}: sizes and headers" + (f", checksums of {checked:,}" if checked else ""), flush=True)


def mixture(subsets: list[str], weights: dict[str, float] | None = None, tokens: list[int] | None = None) -> np.ndarray:
    """Sampling probabilities of ``subsets``: the given (or LLaMA's) weights, renormalised over
    the subsets present. Subsets LLaMA's weights do not name (another corpus: code, say) are
    sampled in proportion to their ``tokens`` when no weights are given and none present has one."""
    given = weights is not None
    weights = LLAMA_WEIGHTS if weights is None else weights
    unknown = sorted(set(weights) - set(SUBSETS) - set(subsets))
    if unknown:
        raise PajamaError(f"mixture weights name unknown subset(s) {', '.join(unknown)}; present: {', '.join(subsets)}")
    p = np.array([float(weights.get(s, 0.0)) for s in subsets])
    if not given and p.sum() == 0 and tokens is not None:
        p = np.array(tokens, dtype=float)
    if (p < 0).any() or p.sum() <= 0:
        raise PajamaError(f"mixture weights must be >= 0 with a positive sum over the subsets present ({', '.join(subsets)})")
    return p / p.sum()


def load_training_data(spec: Path | str | dict[str, float], verify_checksums: bool = False) -> tuple[PreparedData, dict[str, float] | None]:
    """``--train_data_dir``: one prepared directory, or several with sampling weights
    (``{dir: weight, ...}``), read as one: streams named ``<directory name>/<subset>``, and
    the directories' weights (normalised) under those names; None for one directory.

    The directories must have been prepared with the same tokenizer. ``verify_checksums``: see
    :func:`load_prepared`.
    """
    if not isinstance(spec, dict):
        return load_prepared(spec, verify_checksums), None
    if not spec:
        raise PajamaError("--train_data_dir: no directory given")
    parts = {Path(d).expanduser().resolve(): float(w) for d, w in spec.items()}
    if any(w < 0 for w in parts.values()) or sum(parts.values()) <= 0:
        raise PajamaError(f"--train_data_dir weights must be >= 0 with a positive sum, got {spec}")
    labels = [d.name for d in parts]
    if len(set(labels)) != len(labels):
        raise PajamaError(f"--train_data_dir: directory names must differ (they name the data in metrics): {', '.join(labels)}")
    datas = [load_prepared(d, verify_checksums) for d in parts]
    first = datas[0]
    for data in datas[1:]:
        if (data.tokenizer_sha256, data.bos_id) != (first.tokenizer_sha256, first.bos_id):
            raise PajamaError(f"{data.directory} was prepared with another tokenizer than {first.directory}: mixed directories must share one")
    streams = {f"{label}/{name}": stream for label, data in zip(labels, datas) for name, stream in data.streams.items()}
    total = sum(parts.values())
    weights = {label: w / total for label, w in zip(labels, parts.values())}
    vocab = max((d.vocab_size for d in datas if d.vocab_size), default=None)
    return PreparedData(first.directory, streams, first.tokenizer_sha256, vocab, first.bos_id), weights


def stream_weights(streams: dict[str, int], subset_weights: dict[str, float] | None, directory_weights: dict[str, float] | None) -> dict[str, float]:
    """Sampling probability of each stream (name -> tokens): across directories by
    ``directory_weights`` (streams ``<directory>/<subset>``), within one by the subset weights
    (see :func:`mixture`)."""
    names = sorted(streams)
    if directory_weights is None:
        return dict(zip(names, map(float, mixture(names, subset_weights, [streams[n] for n in names]))))
    out = {}
    present = {n.split("/", 1)[1] for n in names}
    if subset_weights is not None:  # names are checked against every directory's subsets together
        mixture(sorted(present), subset_weights)
    for label, share in directory_weights.items():
        mine = [n for n in names if n.split("/", 1)[0] == label]
        if not mine:
            continue  # held out only: no stream of this directory in this split
        subsets = [n.split("/", 1)[1] for n in mine]
        # The weights apply to the subsets each directory has; one whose subsets they do not name keeps the default.
        weights = {s: w for s, w in (subset_weights or {}).items() if s in subsets} or None
        within = mixture(subsets, weights, [streams[n] for n in mine])
        out.update({n: share * float(p) for n, p in zip(mine, within)})
    total = sum(out.values())
    return {n: p / total for n, p in sorted(out.items())}


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def permute(i: int, n: int, key: int) -> int:
    """Position ``i`` of a pseudo-random permutation of ``range(n)`` chosen by ``key``: a
    4-round Feistel network on the smallest even power of two >= n, cycle-walking back into
    range. O(1) memory, a bijection for every n."""
    if n <= 1:
        return 0
    half = max(1, math.ceil(math.log2(n) / 2))
    mask = (1 << half) - 1
    x = i
    while True:
        left, right = x >> half, x & mask
        for r in range(4):
            left, right = right, left ^ (_mix(key ^ (r << 56) ^ right) & mask)
        x = (left << half) | right
        if x < n:
            return x


@dataclass
class Split:
    """Which blocks of each stream a sampler draws from: [first, first + count)."""

    stream: Stream
    first: int
    count: int


def split_blocks(data: PreparedData, block: int, val_fraction: float, holdout: bool) -> tuple[dict[str, Split], dict[str, Split]]:
    """Train and validation blocks of every subset. With ``holdout``, the last
    ``val_fraction`` of each subset's blocks (at least one, none if it is 0) is validation;
    blocks never overlap."""
    train, val = {}, {}
    for name, stream in data.streams.items():
        n = stream.tokens // block
        if n == 0:
            raise PajamaError(f"{data.directory}: subset {name} has {stream.tokens} tokens, fewer than one sequence of {block}")
        n_val = min(max(1, round(n * val_fraction)), n - 1) if holdout and n > 1 and val_fraction > 0 else 0
        train[name] = Split(stream, 0, n - n_val)
        if n_val:
            val[name] = Split(stream, n - n_val, n_val)
    return train, val


class MixtureSampler:
    """The endless, deterministic global sequence of training samples (see module docstring).

    A run whose data changes on purpose (data stages) has one sampler per stage, each starting
    at its first sample: stage ``stage``'s order follows from ``(seed, stage)``; stage 0's is the
    one of a run without stages."""

    def __init__(self, splits: dict[str, Split], probabilities: dict[str, float], block: int, seed: int, stage: int = 0) -> None:
        self.names = sorted(splits)
        self.splits = [splits[n] for n in self.names]
        self.cumulative = np.cumsum([probabilities[n] for n in self.names])
        self.block, self.stage = block, stage
        self.seed = seed if stage == 0 else _mix(_mix(seed) ^ stage)  # every stage its own order
        self.counts = [0] * len(self.names)  # samples drawn per subset so far
        self.next_sample = 0  # global index of the next sample

    def state_dict(self) -> dict:
        return {"next_sample": self.next_sample, "counts": dict(zip(self.names, self.counts)), "stage": self.stage}

    def load_state_dict(self, state: dict) -> None:
        if state.get("stage", 0) != self.stage:
            raise PajamaError(f"the checkpoint's data position is in data stage {state.get('stage', 0)}, this sampler is of stage {self.stage}")
        if sorted(state["counts"]) != self.names:
            raise PajamaError(f"the checkpoint's data has subsets {sorted(state['counts'])}, this data has {self.names}")
        self.next_sample = state["next_sample"]
        self.counts = [state["counts"][n] for n in self.names]

    def draw(self, count: int) -> list[tuple[int, int]]:
        """The next ``count`` global samples as (subset index, block index)."""
        out = []
        for g in range(self.next_sample, self.next_sample + count):
            u = _mix(self.seed * 0x100000001B3 ^ _mix(g)) / 2.0**64
            s = min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.names) - 1)
            split = self.splits[s]
            epoch, i = divmod(self.counts[s], split.count)
            key = _mix((self.seed << 32) ^ (s << 24) ^ epoch)
            out.append((s, split.first + permute(i, split.count, key)))
            self.counts[s] += 1
        self.next_sample += count
        return out

    def read(self, samples: list[tuple[int, int]]) -> np.ndarray:
        """Token blocks (len(samples), block) of the given samples."""
        return np.stack([self.splits[s].stream.read(b * self.block, self.block) for s, b in samples])


def validation_samples(val: dict[str, Split], probabilities: dict[str, float], total: int) -> list[tuple[str, int]]:
    """A fixed list of ``total`` validation blocks shared out over the subsets by their sampling
    probabilities (at least one each, at most what each holds): (subset, block index)."""
    names = sorted(val)
    if not names:
        return []
    p = [probabilities[n] for n in names]
    out = []
    for name, share in zip(names, p):
        n = min(val[name].count, max(1, round(total * share)))
        out.extend((name, val[name].first + i) for i in range(n))
    return out
