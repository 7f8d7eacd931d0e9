"""``pajama data verify`` and ``pajama data inspect``: check and look at a prepared directory."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np

from pajama import PajamaError
from pajama.chunks import HEADER_SIZE
from pajama.loader import check_chunk, chunk_spec
from pajama.progress import progress_bar
from pajama.prepare import FORMAT, MANIFEST, MIXED_ROW, SETTINGS, UNITS, empty_line, filter_table, load_records, manifest_chunk, record_subsets, summary_table, unit_order
from pajama.tokenizer import find_tokenizer, load_tokenizer

CHUNK_NAME = re.compile(r"^(?P<unit>.+)_(?P<counter>\d{10})\.bin$")
SHOWN_CHARS = 1500  # of each decoded document


def _manifest(destination: Path) -> dict:
    path = destination / MANIFEST
    if not destination.is_dir():
        raise PajamaError(f"{destination}: directory not found")
    if not path.exists():
        if (destination / SETTINGS).exists():
            raise PajamaError(f"{destination}: prepare has not finished (no {MANIFEST}); rerun the same pajama prepare command to complete it")
        raise PajamaError(f"{destination}: no {MANIFEST} (not a directory written by pajama prepare)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise PajamaError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PajamaError(f"{path}: not a pajama manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")
    return manifest


def verify(destination_path: Path, tokenizer_path: Path | None = None) -> None:
    """Check that a prepared directory is complete and consistent.

    Every unit record must be in the manifest and every unit of the manifest must have a
    record; every chunk file listed must exist with a valid header of the manifest's chunk
    size and dtype, the size that makes, the checksum prepare recorded for each of its blocks
    (the file is read whole), and hold its documents framed by BOS and EOS, and no chunk file
    may be unlisted; the manifest's totals must equal the sum of the records; the tokenizer
    checksum must agree with the prepare settings (and with ``tokenizer_path``, if given), and
    the copy of the tokenizer that prepare keeps must be there with that checksum.
    A source file that could not be read to its end is a problem too. Prints a verdict;
    raises an error listing the problems.

    Args:
        destination_path: directory written by pajama prepare.
        tokenizer_path: optionally, the tokenizer the data should have been prepared with
            (SentencePiece tokenizer.model, Hugging Face tokenizer.json, or a directory holding
            one): its checksum must be the manifest's.
    """
    destination = Path(destination_path).expanduser().resolve()
    manifest = _manifest(destination)
    problems: list[str] = []
    notes: list[str] = []
    chunk_size, dtype = manifest["chunk_size"], np.dtype(manifest["dtype"])
    sha = manifest["tokenizer"]["sha256"]

    # Settings and tokenizer.
    settings_path = destination / SETTINGS
    try:
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else None
    except ValueError:
        settings = {}
    if settings is not None:
        for key, value in (("tokenizer_sha256", sha), ("chunk_size", chunk_size), ("dtype", str(dtype)), ("vocab_size", manifest["tokenizer"]["vocab_size"])):
            if settings.get(key) != value:
                problems.append(f"{settings_path}: {key} is {settings.get(key)}, the manifest says {value}")
    else:
        problems.append(f"{settings_path}: missing")
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(Path(tokenizer_path).expanduser())
        if tokenizer.sha256 != sha:
            problems.append(f"{tokenizer.path}: not the tokenizer this data was prepared with (sha256 {tokenizer.sha256[:16]}..., the manifest has {sha[:16]}...)")
    copy = manifest["tokenizer"].get("file")  # absent in manifests written before prepare kept a copy
    if copy is not None:
        if not (destination / copy).is_file():
            problems.append(f"{destination / copy}: missing (prepare keeps a copy of its tokenizer here)")
        elif hashlib.sha256((destination / copy).read_bytes()).hexdigest() != sha:
            problems.append(f"{destination / copy}: not the tokenizer this data was prepared with (its sha256 differs from the manifest's)")

    # Records against the manifest.
    records = load_records(destination)
    listed_units = {u: src for src, s in manifest["sources"].items() for u in s["units"]}
    for name in sorted(set(records) - set(listed_units)):
        problems.append(f"{destination / UNITS / (name + '.json')}: a unit record that the manifest does not list")
    for name in sorted(set(listed_units) - set(records)):
        problems.append(f"{destination / UNITS / (name + '.json')}: listed in the manifest but missing")
    in_both = sorted(set(records) & set(listed_units), key=unit_order)
    expected_chunks = [manifest_chunk(records[u], c) for u in in_both for c in records[u]["chunks"]]
    if len(in_both) == len(records) == len(listed_units) and expected_chunks != manifest["chunks"]:
        problems.append(f"{destination / MANIFEST}: its chunk list differs from the unit records'")
    for key in ("documents", "tokens", "bad_lines", "empty"):  # "empty": absent before empty texts were counted
        total = sum(r.get(key, 0) for r in records.values())
        if manifest.get(key, 0) != total:
            problems.append(f"{destination / MANIFEST}: {key} {manifest.get(key)}, the unit records add up to {total}")
        per_subset: dict[str, int] = {}
        for r in records.values():
            if key in ("bad_lines", "empty"):  # a skipped record of a file that mixes subsets belongs to none
                if r["subset"] is not None:
                    per_subset[r["subset"]] = per_subset.get(r["subset"], 0) + r.get(key, 0)
            else:
                for subset, t in record_subsets(r).items():
                    per_subset[subset] = per_subset.get(subset, 0) + t[key]
        for subset, s in manifest["subsets"].items():
            if s.get(key, 0) != per_subset.get(subset, 0):
                problems.append(f"{destination / MANIFEST}: subset {subset} has {key} {s.get(key)}, its unit records add up to {per_subset.get(subset, 0)}")
    for key in ("bad_lines", "empty"):
        in_mixed = sum(r.get(key, 0) for r in records.values() if r["subset"] is None)
        if manifest.get("mixed", {}).get(key, 0) != in_mixed:
            problems.append(f"{destination / MANIFEST}: files that mix subsets have {key} {manifest.get('mixed', {}).get(key, 0)}, their unit records add up to {in_mixed}")
    for r in records.values():
        parts = record_subsets(r).values()
        if (sum(t["documents"] for t in parts), sum(t["tokens"] for t in parts)) != (r["documents"], r["tokens"]):
            problems.append(f"{destination / UNITS / (r['unit'] + '.json')}: its per-subset documents and tokens do not add up to its totals")
    for r in records.values():
        if r.get("error"):
            problems.append(f"unit {r['unit']}: its source could not be read to the end: {r['error']}")
    if sum(c["tokens"] for c in manifest["chunks"]) != manifest.get("tokens"):
        problems.append(f"{destination / MANIFEST}: the chunk files' real tokens do not add up to its token total")

    # Chunk files.
    listed = set()
    by_unit: dict[str, list[dict]] = {}
    for c in manifest["chunks"]:
        listed.add(c["file"])
        match = CHUNK_NAME.match(c["file"])
        by_unit.setdefault(match["unit"] if match else c["file"], []).append(c)
    bos, eos = manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"]
    unchecked = 0
    bar = progress_bar(total=len(manifest["chunks"]), desc="reading chunk files", unit="file", disable=len(manifest["chunks"]) < 100)
    for unit, chunks in by_unit.items():
        for i, c in enumerate(chunks):
            bar.update(1)
            path = destination / c["file"]
            if not path.exists():
                problems.append(f"{path}: listed in the manifest but missing")
                continue
            unchecked += "crc32" not in c
            try:  # size, header and the checksum of every block
                check_chunk(path, chunk_spec(manifest, c), checksums=True)
            except PajamaError as e:
                problems.append(str(e))
                continue
            if not 0 <= c["tokens"] <= chunk_size or (i < len(chunks) - 1 and c["tokens"] != chunk_size):
                problems.append(f"{path}: {c['tokens']} real tokens listed; only the last chunk file of a unit may be partly filled")
                continue
            if i == 0 and c["tokens"] and _token(path, dtype, 0) != bos:
                problems.append(f"{path}: does not start with BOS ({bos}): not the first chunk file of unit {unit}?")
            if i == len(chunks) - 1 and c["tokens"] and _token(path, dtype, c["tokens"] - 1) != eos:
                problems.append(f"{path}: its real tokens do not end with EOS ({eos}): truncated or not the last chunk file of unit {unit}?")
    bar.close()
    stray = sorted(p.name for p in destination.glob("*.bin") if p.name not in listed)
    if stray:
        problems.append(f"{destination}: {len(stray)} chunk file(s) not in the manifest: {', '.join(stray[:3])}{' ...' if len(stray) > 3 else ''}")
    if unchecked:
        notes.append(f"{unchecked:,} chunk file(s) have no checksums (prepared before pajama recorded them): their sizes and headers were checked, not their contents")
    leftovers = sorted(p.name for p in destination.glob(".*.tmp"))
    if leftovers:
        notes.append(f"{len(leftovers)} temporary file(s) of an interrupted run ({leftovers[0]} ...): harmless; --overwrite or deleting them removes them")

    for note in notes:
        print(f"note: {note}")
    if problems:
        for problem in problems:
            print(f"problem: {problem}")
        raise PajamaError(f"{destination}: {len(problems)} problem(s) (listed above); the first: {problems[0]}")
    print(
        f"OK: {destination} is complete and consistent: {len(records)} units, {len(manifest['chunks'])} chunk files, "
        f"{manifest['documents']:,} documents, {manifest['tokens']:,} tokens, tokenizer sha256 {sha[:16]}..."
    )


def _token(path: Path, dtype: np.dtype, index: int) -> int:
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE + index * dtype.itemsize)
        return int(np.frombuffer(f.read(dtype.itemsize), dtype=dtype)[0])


def inspect(destination_path: Path, documents: int = 3, seed: int = 0, tokenizer_path: Path | None = None, rejected: int = 0) -> None:
    """Summarise a prepared directory and show a few of its documents as the model will read them.

    Prints the per-subset table of the manifest (documents, tokens, chunk files, bytes read,
    bad lines), the first skipped lines and unreadable files, and decodes randomly chosen
    documents from the chunk files, with the tokenizer kept in the directory or the one given.

    Args:
        destination_path: directory written by pajama prepare.
        documents: how many random documents to decode and show.
        seed: seed of the random choice of documents.
        tokenizer_path: the tokenizer the data was prepared with (SentencePiece tokenizer.model,
            Hugging Face tokenizer.json, or a directory holding one); by default the copy that
            prepare keeps in the directory.
        rejected: RedPajama-Data-V2 prepared with filters: show this many of the documents the
            filters removed, with the rules that removed them, and as many kept ones (a seeded
            choice from the small sample prepare keeps of each file).
    """
    destination = Path(destination_path).expanduser().resolve()
    manifest = _manifest(destination)
    tok = manifest["tokenizer"]
    print(
        f"{destination}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in {len(manifest['chunks'])} chunk files "
        f"of {manifest['chunk_size']:,} {manifest['dtype']} tokens; tokenizer {tok.get('kind', 'sentencepiece')} sha256 {tok['sha256'][:16]}..., vocabulary {tok['vocab_size']:,}"
    )
    mixed = manifest.get("mixed")
    print("\n".join(summary_table(manifest["subsets"], mixed)))
    if mixed and mixed.get("excluded"):
        print(f"left out {sum(mixed['excluded'].values()):,} documents of subsets not asked for: " + ", ".join(f"{name} {n:,}" for name, n in mixed["excluded"].items()))
    for subset, s in [*manifest["subsets"].items(), *([(MIXED_ROW, mixed)] if mixed else [])]:
        for example in s.get("bad_examples", []):
            print(f"skipped ({subset}): {example}")
    empty = empty_line(manifest["sources"])
    if empty:
        print(empty)
    for error in manifest.get("errors", []):
        print(f"could not read to the end: {error}")
    if manifest.get("filtering"):
        print("\n".join(filter_table(manifest["filtering"])))
    if rejected > 0:
        _show_filtered(destination, manifest, rejected, seed)
    if documents <= 0:
        return
    if tokenizer_path is None:
        tokenizer = find_tokenizer(destination, tok["sha256"])
        if tokenizer is None:
            print(f"(no copy of the tokenizer in {destination}: pass --tokenizer_path to see decoded documents)")
            return
    else:
        tokenizer = load_tokenizer(Path(tokenizer_path).expanduser())
    if tokenizer.sha256 != tok["sha256"]:
        raise PajamaError(f"{tokenizer.path}: not the tokenizer {destination} was prepared with (sha256 {tokenizer.sha256[:16]}..., the manifest has {tok['sha256'][:16]}...)")
    chunks = [c for c in manifest["chunks"] if c["tokens"]]
    if not chunks:
        print("(no tokens to show)")
        return
    rng = random.Random(seed)
    weights = [c["tokens"] for c in chunks]
    dtype = np.dtype(manifest["dtype"])
    for n in range(documents):
        i = rng.choices(range(len(chunks)), weights)[0]
        ids, where = _document_at(destination, chunks, i, rng.randrange(chunks[i]["tokens"]), dtype, tok["bos_id"], tok["eos_id"])
        text = tokenizer.decode(ids)
        more = f"\n[... {len(text) - SHOWN_CHARS:,} more characters]" if len(text) > SHOWN_CHARS else ""
        print(f"\n--- document {n + 1} of {documents}: {chunks[i]['subset']}, {where}, {len(ids):,} tokens, {len(text):,} characters ---")
        print(text[:SHOWN_CHARS] + more)


def _show_filtered(destination: Path, manifest: dict, count: int, seed: int) -> None:
    """Print ``count`` removed and ``count`` kept documents from the samples of the unit
    records, chosen with ``seed``."""
    if not manifest.get("filtering"):
        print("(no filters were applied to this data: nothing was removed)")
        return
    records = load_records(destination)
    samples = [s for name in sorted(records, key=unit_order) for s in (records[name].get("filtering") or {}).get("samples", [])]
    rng = random.Random(seed)
    for kind, pool in (("removed", [s for s in samples if s["rules"]]), ("kept", [s for s in samples if not s["rules"]])):
        chosen = rng.sample(pool, min(count, len(pool)))
        if not chosen:
            print(f"(no {kind} documents in the samples)")
        for s in chosen:
            why = f" by {', '.join(s['rules'])}" if s["rules"] else ""
            more = f"\n[... {s['characters'] - len(s['text']):,} more characters]" if s["characters"] > len(s["text"]) else ""
            print(f"\n--- {kind}: {s['id']}{why}, {s['characters']:,} characters ---")
            print(s["text"] + more)


def _document_at(destination: Path, chunks: list[dict], i: int, position: int, dtype: np.dtype, bos: int, eos: int) -> tuple[list[int], str]:
    """The ids (without BOS and EOS) of the first document that starts at or after ``position``
    of chunk ``i``, or else the first of its unit, and where it starts."""
    unit = CHUNK_NAME.match(chunks[i]["file"])["unit"]
    same_unit = [j for j in range(len(chunks)) if CHUNK_NAME.match(chunks[j]["file"])["unit"] == unit]

    def tokens(j: int) -> np.ndarray:
        return np.memmap(destination / chunks[j]["file"], dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(chunks[j]["tokens"],))

    start = (same_unit[0], 0)  # a unit's first chunk starts with a document
    skip = position
    for j in [k for k in same_unit if k >= i]:
        found = np.flatnonzero(tokens(j)[skip:] == bos)
        if len(found):
            start = (j, skip + int(found[0]))
            break
        skip = 0
    j, offset = start
    parts = []
    for k in [k for k in same_unit if k >= j]:
        data = tokens(k)[offset + 1 if k == j else 0 :]
        end = np.flatnonzero(data == eos)
        parts.append(np.array(data[: end[0]] if len(end) else data))
        if len(end):
            break
    ids = np.concatenate(parts).tolist() if parts else []
    return ids, f"{chunks[j]['file']} token {offset:,}"
