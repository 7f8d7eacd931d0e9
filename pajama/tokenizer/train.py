"""Training a SentencePiece BPE tokenizer with LLaMA's conventions on a corpus directory (RedPajama, SlimPajama, Parquet)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from pajama import PajamaError, usable_cpus
from pajama.corpora import UnreadableInput, find_source_files, open_documents


def train_tokenizer(
    source_path: Path,
    destination_path: Path,
    vocab_size: int = 32000,
    sample: bool = False,
    max_bytes: int = 200_000_000,
    seed: int = 42,
    layout: Literal["auto", "redpajama", "sample", "slimpajama", "parquet"] = "auto",
    split: Literal["train", "validation", "test"] = "train",
    text_field: str = "text",
    subset_name: str | None = None,
) -> Path:
    """Train a SentencePiece BPE tokenizer with LLaMA's conventions on a corpus directory (RedPajama, SlimPajama, Parquet).

    ``<unk>``=0, ``<s>``=1, ``</s>``=2, byte fallback, digits split, no normalisation. The
    training text is a bounded, seeded random sample of documents: ``max_bytes`` in total,
    shared between the subsets present, drawn from randomly ordered files of each subset
    (files that mix subsets, as SlimPajama's do, are sampled as one group, in the corpus's
    own proportions).

    Args:
        source_path: corpus directory: RedPajama-Data-1T (or the Sample's flat layout with
            --sample True), SlimPajama-627B, or Parquet files; the layouts of pajama prepare.
        destination_path: directory to write ``tokenizer.model`` (and ``tokenizer.vocab``) into.
        vocab_size: vocabulary size (LLaMA: 32000).
        sample: the source is RedPajama-Data-1T-Sample's flat layout of 11 files.
        max_bytes: at most this many bytes of text are sampled for training.
        seed: seed of the document sample.
        layout: the corpus's layout, as for pajama prepare (auto: told apart, all but the Sample).
        split: SlimPajama's (or a Parquet corpus's) split to sample.
        text_field: the JSON key or Parquet column holding each document's text.
        subset_name: the subset of a Parquet corpus whose rows do not name theirs.
    """
    files = find_source_files(source_path, sample=sample, layout=layout, split=split, text_field=text_field, subset_name=subset_name)
    by_subset: dict[str, list] = {}
    for f in files:
        by_subset.setdefault(f.subset or "", []).append(f)
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
                        for doc in open_documents(f):
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
