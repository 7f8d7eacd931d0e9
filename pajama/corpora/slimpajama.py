"""SlimPajama-627B's layout: ``{train,validation,test}/chunk<N>/example_{train,holdout}_<i>.jsonl.zst``.

Every file mixes all seven RedPajama subsets, so each document goes to the subset its
``meta.redpajama_set_name`` names. ``<N>`` and ``<i>`` are not zero-padded: files are read,
and their output named, in numeric order.
"""

from __future__ import annotations

import re
from pathlib import Path

from pajama import PajamaError
from pajama.corpora.common import JSONL_EXTENSIONS, SPLITS, SourceFile

CHUNK_FOLDER = re.compile(r"chunk\d+")


def chunk_folders(split_folder: Path) -> list[Path]:
    return [p for p in split_folder.iterdir() if p.is_dir() and CHUNK_FOLDER.fullmatch(p.name)] if split_folder.is_dir() else []


def looks_like_slimpajama(root: Path) -> bool:
    return any(chunk_folders(root / split) for split in SPLITS)


def find_files(root: Path, split: str, keep: frozenset[str], text_field: str = "text") -> list[SourceFile]:
    """The jsonl files of ``split``, in numeric order of chunk and file number; each routes
    its documents by subset, keeping those of ``keep``."""
    folders = chunk_folders(root / split)
    if not folders:
        present = [s for s in SPLITS if chunk_folders(root / s)]
        raise PajamaError(f"{root / split}: no chunk<N> folders of the {split} split (splits present: {', '.join(present) or 'none'})")
    files = [
        SourceFile(None, p, p.relative_to(root).as_posix(), text_field=text_field, keep=keep, numbered=True)
        for folder in folders
        for p in folder.rglob("*")
        if p.name.endswith(JSONL_EXTENSIONS) and not p.name.startswith(".")
    ]
    if not files:
        raise PajamaError(f"{root / split}: no .jsonl/.jsonl.zst/.jsonl.gz files in its chunk folders")
    return sorted(files, key=lambda f: f.prefix)
