"""Subset names: RedPajama's seven, LLaMA's mixture of them, and how other corpora name them."""

from __future__ import annotations

import re

from pajama import PajamaError

# LLaMA's pre-training mixture (LLaMA paper, table 1), sampling proportions in percent.
LLAMA_WEIGHTS = {
    "common_crawl": 67.0,
    "c4": 15.0,
    "github": 4.5,
    "wikipedia": 4.5,
    "book": 4.5,
    "arxiv": 2.5,
    "stackexchange": 2.0,
}
SUBSETS = tuple(sorted(LLAMA_WEIGHTS))
# Chunk-file prefixes start with these, so lit-llama's training globs (``cc*`` ...) match.
SHORT_NAMES = {s: ("cc" if s == "common_crawl" else s) for s in SUBSETS}

# SlimPajama (and its Parquet samples) names the subset of every document in
# ``meta.redpajama_set_name``; its files mix all seven.
SET_NAME_FIELD = "redpajama_set_name"
SET_NAMES = {
    "RedPajamaCommonCrawl": "common_crawl",
    "RedPajamaC4": "c4",
    "RedPajamaGithub": "github",
    "RedPajamaBook": "book",
    "RedPajamaArXiv": "arxiv",
    "RedPajamaWikipedia": "wikipedia",
    "RedPajamaStackExchange": "stackexchange",
}

SUBSET_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")


def short_name(subset: str) -> str:
    """The start of the chunk-file names of a subset: ``cc`` for Common Crawl, else the name."""
    return SHORT_NAMES.get(subset, subset)


def subset_of_prefix(name: str) -> str | None:
    """The RedPajama subset a chunk file belongs to, from its name (lit-llama's and pajama's prefixes)."""
    for subset in sorted(SUBSETS, key=len, reverse=True):
        for start in {subset, SHORT_NAMES[subset]}:
            if name.startswith(start + "_") or name.startswith(start + "-"):
                return subset
    return None


def subset_name_of(folder: str) -> str:
    """A subset name made from a folder's name: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", folder.lower()).strip("_") or "data"


def check_subset_name(name: str) -> str:
    """``name`` if it can name a subset (it starts chunk-file names), else a clear error."""
    if not SUBSET_NAME.fullmatch(name):
        raise PajamaError(f"--subset_name {name!r}: use lower-case letters, digits and _ (it starts the chunk files' names)")
    return name
