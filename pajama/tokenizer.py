"""SentencePiece tokenizer: loading LLaMA's ``tokenizer.model`` and training one like it."""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pajama import PajamaError, usable_cpus
from pajama.sources import DocumentReader, UnreadableInput, find_source_files


SPACE = "\u2581"  # how SentencePiece writes a space
# SentencePiece's BPE encoder costs more per token the longer its input: on documents of
# 2-30 KB (man pages, manuals, source files) pieces of about 256 characters encode 12 %
# faster than pieces of 2,000, the Python work for the extra pieces included.
SPLIT_ABOVE = 512  # texts longer than this (characters) are encoded in pieces ...
PIECE = 256  # ... of about this many characters
# Characters encoded per call of encode_batches' output: bounds memory, and is small enough
# (about a tenth of a second of work) that a worker left alone at the end soon encodes on
# the cores the others have freed.
BATCH_CHARS = 1_000_000


class Tokenizer:
    """A SentencePiece model, with the ids pajama frames documents with (BOS ... EOS)."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        if not path.is_file():
            raise PajamaError(f"{path}: tokenizer not found (expected a SentencePiece tokenizer.model)")
        self.path = path
        self.model_bytes = path.read_bytes()
        try:
            if not self.model_bytes:
                raise ValueError("empty file")
            self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
            self.vocab_size = self.processor.vocab_size()
            if self.vocab_size <= 0:
                raise ValueError("no vocabulary")
        except Exception:  # SentencePiece reports a bad file as a bare RuntimeError / parse error
            raise PajamaError(f"{path}: not a SentencePiece model") from None
        self.bos_id, self.eos_id = self.processor.bos_id(), self.processor.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise PajamaError(f"{path}: the tokenizer defines no BOS/EOS tokens, which pajama needs to frame documents")
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()
        self.splittable = _splits_at_spaces(self.model_bytes, self.processor)

    def __getstate__(self) -> dict:
        # A worker process is sent the path and what loading found out, not the model (half a
        # MB for LLaMA's; a process's start arguments pass through a pipe while its parent
        # waits). It reads the model again, checked against the hash, and skips the checks
        # and the scan of the vocabulary (25 ms for 32000 pieces).
        return {k: v for k, v in self.__dict__.items() if k not in ("processor", "model_bytes")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.model_bytes = self.path.read_bytes()
        if hashlib.sha256(self.model_bytes).hexdigest() != self.sha256:
            raise PajamaError(f"{self.path}: the tokenizer file changed while in use")
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.processor.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batches(self, texts: Iterable[str], dtype: np.dtype, max_chars: int = BATCH_CHARS, num_threads: int = 1) -> Iterator[np.ndarray]:
        """Every text framed as ``BOS ids EOS``, as arrays of the concatenated stream, each from
        about ``max_chars`` characters of text, so memory stays bounded however long a text is.

        Long texts are encoded in pieces when the model allows it exactly (see ``split``):
        SentencePiece is several times slower per token on very long inputs.
        """
        pieces: list[str] = []
        at: list[int] = []  # where each document's BOS and EOS go, in order: before pieces[i] is i
        inside = False  # the batch starts inside a document, so with its EOS
        size = 0
        split_above = SPLIT_ABOVE if self.splittable else None
        for text in texts:
            at.append(len(pieces))
            if split_above is None or len(text) <= split_above:  # the common case, kept cheap
                pieces.append(text)
                size += len(text)
            else:
                parts = self.split(text)
                last = len(parts) - 1
                for i, part in enumerate(parts):  # one by one, so a huge text is encoded in bounded steps
                    pieces.append(part)
                    size += len(part)
                    if size >= max_chars and i < last:
                        yield self._frame(pieces, at, inside, dtype, num_threads)
                        pieces, at, inside, size = [], [], True, 0
            at.append(len(pieces))
            if size >= max_chars:
                yield self._frame(pieces, at, inside, dtype, num_threads)
                pieces, at, inside, size = [], [], False, 0
        if pieces:
            yield self._frame(pieces, at, inside, dtype, num_threads)

    def _frame(self, pieces: list[str], at: list[int], inside: bool, dtype: np.dtype, num_threads: int) -> np.ndarray:
        """The ids of ``pieces`` back to back, with BOS and EOS inserted at ``at`` (piece
        boundaries, in order). They alternate, from an EOS if the first piece continues a
        document (``inside``), else from a BOS."""
        # SentencePiece hands back arrays, not lists of Python ints (building those and
        # reading them back cost about a tenth of the encoding), and numpy frames them at once.
        encoded = self.processor.encode(pieces, num_threads=num_threads, return_type="numpy")
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        ids = np.concatenate(encoded, dtype=dtype, casting="unsafe")  # ids < vocab_size, which dtype holds
        marks = np.resize(np.array([self.eos_id, self.bos_id] if inside else [self.bos_id, self.eos_id], dtype), len(at))
        return np.insert(ids, offsets[at], marks)  # several at one offset keep their order

    def split(self, text: str) -> list[str]:
        """``text`` cut into pieces of about ``PIECE`` characters whose ids, concatenated, are
        exactly the ids of the whole text; ``[text]`` if it is short or the model does not allow it.

        A cut removes a single space that follows a character other than a space: the piece
        after it then starts with the space SentencePiece's dummy prefix puts back. With
        identity normalisation the two sides normalise to exactly the two halves of the whole,
        and when no vocabulary piece holds a space after another character (the case for
        models trained to split at whitespace, like LLaMA's), BPE can never merge across that
        boundary, so each side is segmented on its own just as within the whole.
        """
        n = len(text)
        if n <= SPLIT_ABOVE or not self.splittable:
            return [text]
        out = []
        start = 0
        while n - start > 2 * PIECE:
            cut = text.find(" ", start + PIECE)
            while cut != -1 and text[cut - 1] in (" ", SPACE):
                cut = text.find(" ", cut + 1)
            if cut == -1 or cut + 1 >= n:
                break
            out.append(text[start:cut])
            start = cut + 1
        out.append(text[start:])
        return out

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([int(i) for i in ids])


def _splits_at_spaces(model: bytes, processor: spm.SentencePieceProcessor) -> bool:
    """Whether ``Tokenizer.split`` is exact for this model (see there): a BPE model with
    identity normalisation that escapes spaces, adds a dummy prefix and keeps extra spaces,
    whitespace as a prefix of pieces, and no piece with a space after another character."""
    try:
        top = _proto_fields(model)
        trainer = _proto_fields(top.get(2, [b""])[-1])
        normalizer = _proto_fields(top.get(3, [b""])[-1])
    except (IndexError, ValueError):
        return False

    def value(fields: dict, number: int, default):
        return fields[number][-1] if number in fields else default

    if value(trainer, 3, 1) != 2 or value(trainer, 24, 0):  # model_type BPE, treat_whitespace_as_suffix
        return False
    if value(normalizer, 2, b"") or value(normalizer, 6, b""):  # precompiled_charsmap, normalization_rule_tsv
        return False
    if not value(normalizer, 3, 1) or value(normalizer, 4, 1) or not value(normalizer, 5, 1):
        return False  # add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces
    for i in range(processor.get_piece_size()):
        piece = processor.id_to_piece(i)
        if SPACE in piece.lstrip(SPACE):
            return False
    return True


def _proto_fields(buf: bytes) -> dict[int, list]:
    """The fields of one serialised protobuf message: number -> values (ints for varints,
    bytes otherwise). Enough of the wire format to read a SentencePiece model's settings."""
    fields: dict[int, list] = {}
    i, n = 0, len(buf)

    def varint() -> int:
        nonlocal i
        result = shift = 0
        while True:
            byte = buf[i]
            i += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while i < n:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value, i = buf[i : i + length], i + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated protobuf message")
        fields.setdefault(number, []).append(value)
    return fields


def train_tokenizer(
    source_path: Path,
    destination_path: Path,
    vocab_size: int = 32000,
    sample: bool = False,
    max_bytes: int = 200_000_000,
    seed: int = 42,
) -> Path:
    """Train a SentencePiece BPE tokenizer with LLaMA's conventions on a RedPajama directory.

    ``<unk>``=0, ``<s>``=1, ``</s>``=2, byte fallback, digits split, no normalisation. The
    training text is a bounded, seeded random sample of documents: ``max_bytes`` in total,
    shared between the subsets present, drawn from randomly ordered files of each subset.

    Args:
        source_path: RedPajama directory (full layout, or the Sample's flat layout with --sample True).
        destination_path: directory to write ``tokenizer.model`` (and ``tokenizer.vocab``) into.
        vocab_size: vocabulary size (LLaMA: 32000).
        sample: the source is RedPajama-Data-1T-Sample's flat layout of 11 files.
        max_bytes: at most this many bytes of text are sampled for training.
        seed: seed of the document sample.
    """
    files = find_source_files(source_path, sample=sample)
    by_subset: dict[str, list] = {}
    for f in files:
        by_subset.setdefault(f.subset, []).append(f)
    rng = random.Random(seed)
    destination_path = Path(destination_path)
    destination_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination_path) as tmp:
        text_path = Path(tmp) / "sample.txt"
        written = 0
        with open(text_path, "w", encoding="utf-8") as out:
            for subset, subset_files in sorted(by_subset.items()):
                budget = max_bytes // len(by_subset)
                rng.shuffle(subset_files)
                per_file = budget // min(len(subset_files), 8) + 1
                for f in subset_files:
                    taken = 0
                    try:
                        for doc in DocumentReader(f):
                            if budget <= 0 or taken >= per_file:
                                break
                            lines = [line for line in doc.text.splitlines() if line.strip()]
                            if not lines:
                                continue
                            chunk = "\n".join(lines) + "\n"
                            size = len(chunk.encode("utf-8"))
                            out.write(chunk)
                            taken += size
                            budget -= size
                            written += size
                    except UnreadableInput as e:
                        print(f"note: {e} (its documents before the damage were used)")
                    if budget <= 0:
                        break
        if written == 0:
            raise PajamaError(f"{source_path}: no text found to train a tokenizer on")
        prefix = destination_path / "tokenizer"
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_path),
                model_prefix=str(prefix),
                model_type="bpe",
                vocab_size=vocab_size,
                character_coverage=0.99995,
                byte_fallback=True,
                split_digits=True,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                max_sentence_length=1 << 16,
                input_sentence_size=10_000_000,
                shuffle_input_sentence=True,
                seed_sentencepiece_size=1_000_000,
                num_threads=usable_cpus(),
                minloglevel=2,
            )
        except RuntimeError as e:
            raise PajamaError(f"tokenizer training failed: {str(e).strip().splitlines()[-1]}") from None
    model_path = prefix.with_suffix(".model")
    print(f"wrote {model_path} (vocab {vocab_size}, trained on {written / 1e6:.1f} MB of text from {len(files)} files)")
    return model_path
