"""RedPajama-Data-1T's layouts.

* The full corpus: one folder per subset, ``common_crawl/<dump>/*.jsonl.zst`` nested, the
  others plain ``.jsonl`` (``.jsonl.gz`` and ``.jsonl.zst`` are accepted everywhere);
* RedPajama-Data-1T-Sample: 11 flat ``<name>_sample.jsonl`` files (``--sample True``).
"""

from __future__ import annotations

from pathlib import Path

from pajama import PajamaError
from pajama.corpora.common import JSONL_EXTENSIONS, SourceFile
from pajama.corpora.subsets import SUBSETS

SAMPLE_FILES = {
    "arxiv_sample.jsonl": "arxiv",
    "book_sample.jsonl": "book",
    "c4_sample.jsonl": "c4",
    "cc_2019-30_sample.jsonl": "common_crawl",
    "cc_2020-05_sample.jsonl": "common_crawl",
    "cc_2021-04_sample.jsonl": "common_crawl",
    "cc_2022-05_sample.jsonl": "common_crawl",
    "cc_2023-06_sample.jsonl": "common_crawl",
    "github_sample.jsonl": "github",
    "stackexchange_sample.jsonl": "stackexchange",
    "wikipedia_sample.jsonl": "wikipedia",
}
# Older revisions of the Sample name the last Common Crawl file after 2023-05.
SAMPLE_ALIASES = {"cc_2023-06_sample.jsonl": "cc_2023-05_sample.jsonl"}


def looks_like_sample(root: Path) -> bool:
    return any((root / n).is_file() for n in SAMPLE_FILES)


def find_sample_files(root: Path, wanted: set[str], text_field: str = "text") -> list[SourceFile]:
    """The Sample's files of the ``wanted`` subsets, by name."""
    files = []
    for name, subset in sorted(SAMPLE_FILES.items()):
        if subset not in wanted:
            continue
        path = root / name
        if not path.exists() and name in SAMPLE_ALIASES:
            path = root / SAMPLE_ALIASES[name]
        if not path.exists():  # a directory of that name is kept: reading it reports the problem
            raise PajamaError(f"{root / name}: Sample file missing (the Sample layout has these 11 files: {', '.join(sorted(SAMPLE_FILES))})")
        files.append(SourceFile(subset, path, path.name, text_field=text_field))
    return files


def find_full_files(root: Path, wanted: set[str], asked: bool, text_field: str = "text") -> list[SourceFile]:
    """Every jsonl file in the subset folders of ``wanted``, by subset then path. A subset
    absent from the download (usually ``book``) is noted and skipped, unless it was ``asked``
    for: then it is an error."""
    files: list[SourceFile] = []
    missing = []
    for subset in sorted(wanted):
        folder = root / subset
        found = sorted(p for p in (folder.rglob("*") if folder.is_dir() else []) if p.name.endswith(JSONL_EXTENSIONS) and not p.name.startswith("."))
        if not found:
            missing.append(subset)
            continue
        for p in found:
            files.append(SourceFile(subset, p, p.relative_to(root).as_posix(), text_field=text_field))
    if missing and asked:
        raise PajamaError(f"{root}: no files for requested subset(s) {', '.join(missing)}")
    if not files:
        hint = " (it looks like the Sample layout: pass --sample True)" if looks_like_sample(root) else ""
        raise PajamaError(f"{root}: no RedPajama subset folders with .jsonl/.jsonl.zst/.jsonl.gz files found{hint}")
    if missing:
        print(f"note: subset(s) absent from {root}, skipped: {', '.join(missing)}")
    return files


def has_subset_folders(root: Path) -> bool:
    return any((root / s).is_dir() for s in SUBSETS)
