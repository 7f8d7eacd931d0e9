"""SentencePiece tokenizer: loading LLaMA's ``tokenizer.model`` and training one like it."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pajama import PajamaError
from pajama.sources import find_source_files, read_documents


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
            self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        except Exception:  # SentencePiece reports a bad file as a bare RuntimeError / parse error
            raise PajamaError(f"{path}: not a SentencePiece model") from None
        self.vocab_size = self.processor.vocab_size()
        self.bos_id, self.eos_id = self.processor.bos_id(), self.processor.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise PajamaError(f"{path}: the tokenizer defines no BOS/EOS tokens, which pajama needs to frame documents")
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.processor.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_documents(self, texts: list[str], dtype: np.dtype, num_threads: int = 1) -> np.ndarray:
        """Every text framed as BOS ids EOS, concatenated into one array."""
        encoded = self.processor.encode(texts, num_threads=num_threads)
        out = np.empty(sum(len(ids) + 2 for ids in encoded), dtype=dtype)
        pos = 0
        for ids in encoded:
            out[pos] = self.bos_id
            out[pos + 1 : pos + 1 + len(ids)] = ids
            out[pos + 1 + len(ids)] = self.eos_id
            pos += len(ids) + 2
        return out

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([int(i) for i in ids])


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
                    for doc in read_documents(f, strict=False):
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
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise PajamaError(f"tokenizer training failed: {str(e).strip().splitlines()[-1]}") from None
    model_path = prefix.with_suffix(".model")
    print(f"wrote {model_path} (vocab {vocab_size}, trained on {written / 1e6:.1f} MB of text from {len(files)} files)")
    return model_path
