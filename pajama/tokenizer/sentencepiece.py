"""A SentencePiece tokenizer: LLaMA's ``tokenizer.model`` or one trained like it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pajama import PajamaError
from pajama.tokenizer.common import FramingTokenizer, read_checked

SPACE = "\u2581"  # how SentencePiece writes a space
# SentencePiece's BPE encoder costs more per token the longer its input: on documents of
# 2-30 KB (man pages, manuals, source files) pieces of about 256 characters encode 12 %
# faster than pieces of 2,000, the Python work for the extra pieces included.
SPLIT_ABOVE = 512  # texts longer than this (characters) are encoded in pieces ...
PIECE = 256  # ... of about this many characters


class SentencePieceTokenizer(FramingTokenizer):
    """A SentencePiece model, with the ids pajama frames documents with (BOS ... EOS)."""

    kind = "sentencepiece"
    file_name = "tokenizer.model"
    split_above = SPLIT_ABOVE

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if not path.is_file():
            raise PajamaError(f"{path}: tokenizer not found (expected a SentencePiece tokenizer.model)")
        self.path = path
        self.side_files = []
        self.model_bytes = path.read_bytes()
        try:
            if not self.model_bytes:
                raise ValueError("empty file")
            self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
            self.vocab_size = self.processor.vocab_size()
            if self.vocab_size <= 0:
                raise ValueError("no vocabulary")
        except Exception:  # SentencePiece reports a bad file as a bare RuntimeError / parse error
            if is_tiktoken(self.model_bytes):
                raise PajamaError(f"{path}: not a SentencePiece model but a tiktoken BPE file (Meta's Llama 3 tokenizer.model); use the tokenizer.json of its Hugging Face release") from None
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
        self.model_bytes = read_checked(self.path, self.sha256)
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.processor.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def _encode_pieces(self, pieces: list[str], dtype: np.dtype, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        # SentencePiece hands back arrays, not lists of Python ints (building those and
        # reading them back cost about a tenth of the encoding), and numpy joins them at once.
        encoded = self.processor.encode(pieces, num_threads=num_threads, return_type="numpy")
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        return np.concatenate(encoded, dtype=dtype, casting="unsafe"), lengths  # ids < vocab_size, which dtype holds

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

    def decode(self, ids) -> str:
        """The text of ``ids`` (BOS and EOS decode to nothing)."""
        return self.processor.decode([int(i) for i in ids])


def is_tiktoken(data: bytes) -> bool:
    """Whether ``data`` starts like a tiktoken BPE file: lines of a base64 token and its rank."""
    first = data[:256].split(b"\n", 1)[0]
    return re.fullmatch(rb"[A-Za-z0-9+/]+=* \d+", first) is not None


def _splits_at_spaces(model: bytes, processor: spm.SentencePieceProcessor) -> bool:
    """Whether ``SentencePieceTokenizer.split`` is exact for this model (see there): a BPE
    model with identity normalisation that escapes spaces, adds a dummy prefix and keeps
    extra spaces, whitespace as a prefix of pieces, and no piece with a space after another
    character."""
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
