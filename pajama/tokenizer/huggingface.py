"""A Hugging Face tokenizer: a ``tokenizer.json`` of the ``tokenizers`` library, such as
Llama 3's byte-level BPE of 128,256 entries."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tokenizers

from pajama import PajamaError
from pajama.tokenizer.common import FramingTokenizer, read_checked

# Pairs of special tokens that begin and end a document in pre-training, looked for first:
# a chat model's tokenizer_config.json names the end of a turn as its EOS (Llama 3 Instruct:
# <|eot_id|>), while the documents it was pre-trained on end with <|end_of_text|>.
KNOWN_PAIRS = (("<|begin_of_text|>", "<|end_of_text|>"), ("<s>", "</s>"), ("<bos>", "<eos>"))
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # beside tokenizer.json, naming bos_token / eos_token

# The library's BPE works word by word, as fast on a long text as on a short one, but holds
# a few hundred bytes per token while it encodes (1.25 GB for one text of 11 M characters):
# very long texts are encoded in pieces, when that is exact (see split).
SPLIT_ABOVE = 131_072  # texts longer than this (characters) are encoded in pieces ...
PIECE = 65_536  # ... of at least this many characters
# A cut goes between a newline and an ASCII letter, the newline following a character other
# than whitespace. The regular expressions below always end a pre-token there (none of their
# alternatives holds a newline together with a letter, and the newline's own pre-token is the
# same whether a letter or the end of the text follows it), and never look behind: so the
# text on each side is cut into exactly the pre-tokens of the whole.
CUT = re.compile(r"\S\n[A-Za-z]")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"  # ByteLevel's own
SPLIT_PATTERNS = {
    GPT2_PATTERN,
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",  # Llama 3 (tiktoken's cl100k)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",  # Qwen2
}
PARALLELISM = "TOKENIZERS_PARALLELISM"  # read by the library at every batch
ENCODE_CHARS = 262_144  # characters passed to the library at once


class HFTokenizer(FramingTokenizer):
    """A ``tokenizer.json``, with the ids pajama frames documents with (BOS ... EOS).

    A document is encoded as the library encodes it without adding special tokens, and with
    the text of a special token (``<|end_of_text|>`` in a web page about tokenizers, say)
    read as text, as Meta's Llama 3 tokenizer encodes documents: a document never holds a
    control token, so BOS and EOS mark its ends unambiguously. Truncation and padding set in
    the file are turned off: they would drop or add tokens.
    """

    kind = "huggingface"
    file_name = "tokenizer.json"
    split_above = SPLIT_ABOVE

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if not path.is_file():
            raise PajamaError(f"{path}: tokenizer not found (expected a Hugging Face tokenizer.json)")
        self.path = path
        data = path.read_bytes()
        try:
            spec = json.loads(data)
            if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
                raise ValueError("no model")
            backend = tokenizers.Tokenizer.from_buffer(data)
        except Exception as e:  # a JSON error, or the library's own message on a bad file
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise PajamaError(f"{path}: not a Hugging Face tokenizer.json ({reason})") from None
        if spec["model"].get("dropout"):
            raise PajamaError(f"{path}: the tokenizer has BPE dropout set, so it would encode the same text differently each time; set model.dropout to null")
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.side_files = [path.parent / name for name in CONFIG_FILES if (path.parent / name).is_file()]
        vocab = backend.get_vocab(with_added_tokens=True)
        # Ids need not be contiguous: the vocabulary must hold the largest.
        self.vocab_size = max(backend.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)
        if not vocab:
            raise PajamaError(f"{path}: not a Hugging Face tokenizer.json (no vocabulary)")
        self.bos_id, self.eos_id = _document_marks(path, spec, backend, self.side_files)
        self.splittable = _splits_at_lines(spec)
        self._configure(backend)

    def _configure(self, backend: tokenizers.Tokenizer) -> None:
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = True  # the text of a special token is text
        self.backend = backend
        self._encode_batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch  # fast: no offsets

    def __getstate__(self) -> dict:
        # A worker process is sent the path and what loading found out; it reads the file
        # again, checked against the hash, and skips the checks.
        return {k: v for k, v in self.__dict__.items() if k not in ("backend", "_encode_batch")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._configure(tokenizers.Tokenizer.from_buffer(read_checked(self.path, self.sha256)))

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def _ids(self, pieces: list[str]) -> list[list[int]]:
        # The library's encodings hold a few hundred bytes a token until their ids are out:
        # calls of at most ENCODE_CHARS keep that to tens of MB, whatever the batch.
        ids: list[list[int]] = []
        start = 0
        while start < len(pieces):
            end, size = start, 0
            while end < len(pieces) and (end == start or size + len(pieces[end]) <= ENCODE_CHARS):
                size += len(pieces[end])
                end += 1
            ids.extend(e.ids for e in self._encode_batch(pieces[start:end], add_special_tokens=False))
            start = end
        return ids

    def _encode_pieces(self, pieces: list[str], dtype: np.dtype, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        # The library's own threads stay off: a prepare worker encodes on its own core, and
        # the library would put a thread on every core in every worker. ``num_threads`` > 1
        # encodes contiguous shares on as many threads of this process (the library lets
        # go of Python's lock while it encodes).
        with _library_threads_off():
            if num_threads > 1 and len(pieces) > 1:
                with ThreadPoolExecutor(num_threads) as pool:
                    lists = [ids for share in pool.map(self._ids, _shares(pieces, num_threads)) for ids in share]
            else:
                lists = self._ids(pieces)
        lengths = np.fromiter(map(len, lists), np.int64, len(lists))
        # The ids come as lists of Python ints; one pass over them all is the cheapest way
        # into an array (about 1 % of the encoding).
        return np.fromiter(itertools.chain.from_iterable(lists), dtype, int(lengths.sum())), lengths

    def split(self, text: str) -> list[str]:
        """``text`` cut into pieces of at least ``PIECE`` characters whose ids, concatenated,
        are exactly the ids of the whole text; ``[text]`` if it is short or the tokenizer does
        not allow it.

        Cuts are where the pre-tokenizer always ends a pre-token (see ``CUT``), and the
        tokenizer encodes each pre-token on its own: so when nothing comes before the
        pre-tokenizer (no normaliser, no added tokens to match but special ones, which are
        read as text) and the pre-tokenizer is one of those whose boundaries are known,
        each piece gives exactly its share of the whole text's ids.
        """
        n = len(text)
        if n <= SPLIT_ABOVE or not self.splittable:
            return [text]
        out = []
        start = 0
        while n - start > 2 * PIECE:
            found = CUT.search(text, start + PIECE - 2)
            if found is None:
                break
            cut = found.start() + 2
            out.append(text[start:cut])
            start = cut
        out.append(text[start:])
        return out

    def decode(self, ids) -> str:
        """The text of ``ids`` (special tokens, BOS and EOS among them, decode to nothing)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)


@contextlib.contextmanager
def _library_threads_off() -> Iterator[None]:
    before = os.environ.get(PARALLELISM)
    os.environ[PARALLELISM] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ[PARALLELISM]
        else:
            os.environ[PARALLELISM] = before


def _shares(pieces: list[str], parts: int) -> list[list[str]]:
    """``pieces`` cut, in order, into at most ``parts`` runs of about as many characters."""
    ends = list(itertools.accumulate(map(len, pieces)))
    cuts = sorted({min(len(pieces), bisect.bisect_left(ends, ends[-1] * k / parts) + 1) for k in range(1, parts)})
    bounds = [0, *cuts, len(pieces)]
    return [pieces[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _document_marks(path: Path, spec: dict, backend: tokenizers.Tokenizer, side_files: list[Path]) -> tuple[int, int]:
    """(BOS id, EOS id): a known pair among the special tokens, else ``bos_token`` and
    ``eos_token`` of the configuration beside the file, else the post-processor's template
    (the special tokens before and after the text)."""
    special = {t["content"]: t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
    for bos, eos in KNOWN_PAIRS:
        if bos in special and eos in special:
            return special[bos], special[eos]
    found: dict[str, tuple[str, int] | None] = {"bos": None, "eos": None}
    for config_path in side_files:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PajamaError(f"{config_path}: cannot read it as JSON ({str(e).splitlines()[0]})") from None
        for key in found:
            value = config.get(f"{key}_token") if isinstance(config, dict) else None
            content = value.get("content") if isinstance(value, dict) else value
            if found[key] is None and isinstance(content, str) and backend.token_to_id(content) is not None:
                found[key] = (content, backend.token_to_id(content))
    for key, token in zip(found, _template_marks(spec.get("post_processor"), backend)):
        if found[key] is None:
            found[key] = token
    missing = [key.upper() for key, token in found.items() if token is None]
    if missing:
        raise PajamaError(
            f"{path}: cannot tell which token {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}: no pair "
            f"{', '.join('/'.join(p) for p in KNOWN_PAIRS)} among its special tokens, no bos_token/eos_token in a "
            f"{CONFIG_FILES[0]} beside it, and none in its post-processor's template; pajama frames each document as BOS ... EOS"
        )
    (bos_token, bos_id), (_, eos_id) = found["bos"], found["eos"]
    if bos_id == eos_id:
        raise PajamaError(f"{path}: the same token ({bos_token}, id {bos_id}) would begin and end every document; pajama frames documents as BOS ... EOS and needs two distinct tokens")
    return bos_id, eos_id


def _template_marks(processor: dict | None, backend: tokenizers.Tokenizer) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The special tokens a ``TemplateProcessing`` post-processor (alone or in a sequence)
    puts before and after a single text: ((token, id) or None, (token, id) or None)."""
    if not isinstance(processor, dict):
        return None, None
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors") or []:
            marks = _template_marks(inner, backend)
            if marks != (None, None):
                return marks
        return None, None
    if processor.get("type") != "TemplateProcessing":
        return None, None
    single = processor.get("single") or []
    specials = processor.get("special_tokens") or {}

    def token(item: dict) -> tuple[str, int] | None:
        name = item.get("SpecialToken", {}).get("id") if isinstance(item, dict) else None
        if name is None:
            return None
        ids = specials.get(name, {}).get("ids") or []
        token_id = ids[0] if len(ids) == 1 else backend.token_to_id(name)
        return None if token_id is None else (name, token_id)

    where = next((i for i, item in enumerate(single) if isinstance(item, dict) and "Sequence" in item), None)
    if where is None:
        return None, None
    return (token(single[where - 1]) if where > 0 else None), (token(single[where + 1]) if where + 1 < len(single) else None)


def _splits_at_lines(spec: dict) -> bool:
    """Whether ``HFTokenizer.split`` is exact for this tokenizer (see there)."""
    if spec.get("normalizer"):
        return False
    if any(not t.get("special") for t in spec.get("added_tokens") or []):
        return False
    pre = spec.get("pre_tokenizer")
    steps = (pre.get("pretokenizers") or []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if not steps or not all(isinstance(step, dict) for step in steps):
        return False
    first, later = steps[0], steps[1:]
    # The first step must cut the whole text at the known boundaries; later ones only see
    # its pre-tokens, one at a time.
    if first.get("type") == "ByteLevel":
        cuts = first.get("use_regex", True) and not first.get("add_prefix_space", True)
    elif first.get("type") == "Split":
        cuts = (first.get("pattern") or {}).get("Regex") in SPLIT_PATTERNS and first.get("behavior") == "Isolated" and not first.get("invert")
    else:
        cuts = False
    return bool(cuts) and all(step.get("type") in ("ByteLevel", "Split", "Digits") for step in later)
