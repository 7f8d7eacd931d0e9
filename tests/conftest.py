"""Shared fixtures: real text, small SentencePiece and Hugging Face tokenizers trained on it, jsonl writers."""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import warnings
from pathlib import Path

import pytest
import zstandard

# Standard-library modules whose docstrings make a small corpus of real English and code.
TEXT_MODULES = (
    "argparse", "ast", "asyncio", "bisect", "calendar", "collections", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "heapq", "html", "http.client",
    "inspect", "io", "itertools", "json", "logging", "math", "operator", "os", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "zipfile",
)  # fmt: skip


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    """About 3,000 real documents (1 MB): docstrings of standard-library modules, their
    classes, functions and methods, in a fixed order."""
    texts, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases (typing.io ...) warn when touched
        for name in TEXT_MODULES:
            module = importlib.import_module(name)
            objects = [module] + [obj for _, obj in sorted(vars(module).items()) if inspect.isclass(obj) or inspect.isfunction(obj)]
            for obj in list(objects):
                if inspect.isclass(obj):
                    objects += [m for _, m in sorted(vars(obj).items()) if inspect.isfunction(m)]
            for obj in objects:
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 40 and doc not in seen:
                    seen.add(doc)
                    texts.append(doc)
    return texts


@pytest.fixture(scope="session")
def tokenizer_model(tmp_path_factory, stdlib_texts) -> Path:
    """A SentencePiece BPE tokenizer (vocabulary 1000) trained by ``pajama tokenizer train``
    on the standard-library texts, laid out as a one-subset corpus."""
    from pajama.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tokenizer")
    write_jsonl(root / "corpus" / "arxiv" / "docs.jsonl", stdlib_texts)
    return train_tokenizer(root / "corpus", root / "model", vocab_size=1000)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_model):
    from pajama.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_model)


LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>")


def write_hf_tokenizer(
    directory: Path,
    texts: list[str],
    vocab_size: int = 500,
    specials: tuple[str, ...] = LLAMA3_SPECIALS,
    split_pattern: str | None = None,
    id_offset: int = 0,
) -> Path:
    """A byte-level BPE ``tokenizer.json`` trained by the tokenizers library on ``texts``, in
    ``directory``: GPT-2's pre-tokenizer, or a Split on ``split_pattern`` (Llama 3's way).

    ``id_offset`` moves every id up by that much, below them entries no text can produce
    (they hold a space, which byte-level BPE never does): a vocabulary past 65,500 whose
    every produced id needs more than 16 bits, at the cost of a tiny one.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if split_pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split_pattern), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    if id_offset:
        vocab = {f"[unused {i}]": i for i in range(id_offset)}
        vocab.update({token: i + id_offset for token, i in spec["model"]["vocab"].items()})
        spec["model"]["vocab"] = vocab
        for added in spec["added_tokens"]:
            added["id"] += id_offset
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


def library_ids(path: Path, texts: list[str]) -> list[list[int]]:
    """The ids the tokenizers library itself gives each text: no special tokens added, and
    the text of a special token read as text."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.encode_special_tokens = True
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


@pytest.fixture(scope="session")
def hf_tokenizer_json(tmp_path_factory, stdlib_texts) -> Path:
    """A byte-level BPE tokenizer.json (vocabulary 500, Llama 3's BOS and EOS) trained on the
    standard-library texts."""
    return write_hf_tokenizer(tmp_path_factory.mktemp("hf") / "tokenizer", stdlib_texts)


@pytest.fixture(scope="session")
def hf_tokenizer(hf_tokenizer_json):
    from pajama.tokenizer import load_tokenizer

    return load_tokenizer(hf_tokenizer_json)


@pytest.fixture(scope="session")
def hf_tokenizer_json_int32(tmp_path_factory, stdlib_texts) -> Path:
    """The same tokenizer with every id moved past 65,535: a vocabulary of 66,036 entries,
    so prepared data is int32."""
    return write_hf_tokenizer(tmp_path_factory.mktemp("hf32") / "tokenizer", stdlib_texts, id_offset=65536)


def jsonl_bytes(texts: list, meta: bool = True) -> bytes:
    """One ``{"text": ..., "meta": ...}`` line per text (a non-str entry is written as is:
    raw bytes become the line itself, anything else the record)."""
    lines = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            lines.append(t)
        elif isinstance(t, str):
            lines.append(json.dumps({"text": t, "meta": {"id": i}} if meta else {"text": t}).encode())
        else:
            lines.append(json.dumps(t).encode())
    return b"".join(line + b"\n" for line in lines)


def write_jsonl(path: Path, texts: list, compress: str | None = None) -> Path:
    """Write ``texts`` as jsonl to ``path``: plain, or ``compress`` "zst" / "gz"."""
    data = jsonl_bytes(texts)
    if compress == "zst":
        data = zstandard.ZstdCompressor(level=3).compress(data)
    elif compress == "gz":
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def jsonl():
    """The jsonl writer: ``jsonl(path, texts, compress=None)``."""
    return write_jsonl
