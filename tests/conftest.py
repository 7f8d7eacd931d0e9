"""Shared fixtures: real text, a small SentencePiece tokenizer trained on it, jsonl writers."""

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
    from pajama.tokenizer import Tokenizer

    return Tokenizer(tokenizer_model)


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
