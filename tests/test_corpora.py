"""SlimPajama-627B's layout and Parquet corpora: finding their files, routing every document
to its subset, bad rows and damaged files, and preparing them end to end."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pajama import PajamaError
from pajama.corpora import SET_NAMES, SUBSETS, SourceFile, UnreadableInput, detect_layout, find_source_files, open_documents
from pajama.corpora import parquet as parquet_format
from pajama.data import inspect, verify
from pajama.prepare import prepare

SET_NAME_OF = {subset: name for name, subset in SET_NAMES.items()}


# -- an independent reader of the output -------------------------------------------------------


def chunk_tokens(path: Path) -> np.ndarray:
    """The tokens of a chunk file, by the format alone (24-byte header, uint16 here)."""
    raw = path.read_bytes()
    assert raw[:7] == b"LITPKDS" and raw[15] == 8  # uint16
    return np.frombuffer(raw[24:], dtype=np.uint16)


def recovered_by_subset(destination: Path, tokenizer) -> dict[str, list[str]]:
    """Per subset, its documents decoded back from the chunk files in the manifest's order."""
    manifest = json.loads((destination / "manifest.json").read_text())
    bos, eos = manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"]
    streams: dict[str, list[np.ndarray]] = {}
    for chunk in manifest["chunks"]:
        streams.setdefault(chunk["subset"], []).append(chunk_tokens(destination / chunk["file"])[: chunk["tokens"]])
    out = {}
    for subset, parts in streams.items():
        stream = np.concatenate(parts)
        starts, ends = np.flatnonzero(stream == bos), np.flatnonzero(stream == eos)
        assert len(starts) == len(ends) and starts[0] == 0 and ends[-1] == len(stream) - 1 and (starts[1:] == ends[:-1] + 1).all()
        out[subset] = [tokenizer.decode(stream[a + 1 : b].tolist()) for a, b in zip(starts, ends)]
    return out


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run(source: Path, tokenizer_model: Path, destination: Path, **kwargs) -> None:
    prepare(source, tokenizer_model, destination, **{"chunk_size": 4096, "unit_mb": 0.05, "num_workers": 1, **kwargs})


# -- SlimPajama-627B ---------------------------------------------------------------------------


def slim_line(text: str, subset: str) -> bytes:
    return json.dumps({"text": text, "meta": {"redpajama_set_name": SET_NAME_OF[subset]}}).encode()


def write_zst(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(b"".join(line + b"\n" for line in lines)))


@pytest.fixture(scope="module")
def slim(tmp_path_factory, stdlib_texts) -> Path:
    """A SlimPajama-627B tree: train chunk1 (example_train_1 .. 12), chunk2 and chunk10, and
    validation; every file mixes the seven subsets in random order; one bad line."""
    root = tmp_path_factory.mktemp("slim") / "SlimPajama-627B"
    rng = random.Random(7)
    texts = iter(stdlib_texts)
    files = [("train", 1, i) for i in range(1, 13)] + [("train", 2, 1), ("train", 2, 2), ("train", 10, 1)] + [("validation", 1, i) for i in range(3)]
    for split, chunk, i in files:
        kind = "train" if split == "train" else "holdout"
        lines = [slim_line(next(texts), rng.choice(SUBSETS)) for _ in range(rng.randint(25, 60))]
        if (split, chunk, i) == ("train", 1, 3):
            lines.insert(5, b'{"text": "broken')
        write_zst(root / split / f"chunk{chunk}" / f"example_{kind}_{i}.jsonl.zst", lines)
    return root


def slim_expected(root: Path, split: str) -> tuple[dict[str, list[str]], dict]:
    """Per subset, the texts of the split's files read in numeric order of chunk and file
    number, independently of pajama; and where the bad line is."""

    def number(p: Path) -> tuple[int, int]:
        return int(p.parent.name[len("chunk") :]), int(p.name.split("_")[-1].split(".")[0])

    expected: dict[str, list[str]] = {}
    bad = {}
    for path in sorted((root / split).rglob("*.jsonl.zst"), key=number):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        for n, line in enumerate(data.splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                bad = {"path": path, "line": n}
                continue
            expected.setdefault(SET_NAMES[record["meta"]["redpajama_set_name"]], []).append(record["text"])
    return expected, bad


@pytest.fixture(scope="module")
def slim_prepared(slim, tokenizer_model, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("slim_prepared") / "data"
    run(slim, tokenizer_model, destination)
    return destination


def test_slimpajama_is_detected_and_its_files_are_read_in_numeric_order(slim):
    assert detect_layout(slim) == "slimpajama"
    files = find_source_files(slim)
    names = [f.relpath for f in files]
    assert names[:3] == ["train/chunk1/example_train_1.jsonl.zst", "train/chunk1/example_train_2.jsonl.zst", "train/chunk1/example_train_3.jsonl.zst"]
    assert names[11:] == ["train/chunk1/example_train_12.jsonl.zst", "train/chunk2/example_train_1.jsonl.zst", "train/chunk2/example_train_2.jsonl.zst", "train/chunk10/example_train_1.jsonl.zst"]
    assert all(f.routed and f.keep == frozenset(SUBSETS) for f in files)
    assert [f.prefix for f in files] == sorted(f.prefix for f in files)  # names sort as the files are read
    assert [f.relpath for f in find_source_files(slim, split="validation")] == [f"validation/chunk1/example_holdout_{i}.jsonl.zst" for i in range(3)]
    assert find_source_files(slim, layout="slimpajama") == files
    with pytest.raises(PajamaError, match="no chunk<N> folders of the test split"):
        find_source_files(slim, split="test")


def test_slimpajama_documents_go_to_their_subsets_exactly_and_in_order(slim, slim_prepared, tokenizer):
    expected, bad = slim_expected(slim, "train")
    assert set(expected) == set(SUBSETS)
    assert recovered_by_subset(slim_prepared, tokenizer) == expected
    manifest = json.loads((slim_prepared / "manifest.json").read_text())
    for subset, texts in expected.items():
        assert manifest["subsets"][subset]["documents"] == len(texts)
        assert manifest["subsets"][subset]["source_files"] == sum(1 for src in manifest["sources"].values() if subset in src["subsets"])
    assert manifest["documents"] == sum(map(len, expected.values()))
    assert manifest["tokens"] == sum(c["tokens"] for c in manifest["chunks"]) == sum(s["tokens"] for s in manifest["subsets"].values())
    # The bad line: counted once, for its file, named by file and line.
    assert manifest["bad_lines"] == manifest["mixed"]["bad_lines"] == 1
    assert manifest["mixed"]["bad_examples"] == [f"{bad['path']}:{bad['line']}: not valid JSON (Unterminated string starting at, column 10)"]
    assert manifest["mixed"]["source_files"] == len(manifest["sources"]) == 15 and manifest["mixed"]["excluded"] == {}
    assert manifest["mixed"]["bytes"] == sum(p.stat().st_size for p in (slim / "train").rglob("*.zst"))
    # Every unit's record lists its chunk files with their subsets; the files of each start with its short name.
    record = json.loads((slim_prepared / "units" / f"{manifest['sources']['train/chunk1/example_train_3.jsonl.zst']['units'][0]}.json").read_text())
    assert record["subset"] is None and record["bad_lines"] == 1
    assert {c["subset"] for c in record["chunks"]} == set(record["subsets"])
    for chunk in manifest["chunks"]:
        assert chunk["file"].startswith(("cc_" if chunk["subset"] == "common_crawl" else chunk["subset"] + "_") + "train_chunk")
    verify(slim_prepared)


def test_slimpajama_two_workers_write_the_same_bytes_as_one(slim, slim_prepared, tokenizer_model, tmp_path):
    run(slim, tokenizer_model, tmp_path / "two", num_workers=2)
    assert tree(tmp_path / "two") == tree(slim_prepared)


def test_subsets_leave_out_exactly_the_documents_of_the_others_and_count_them(slim, tokenizer_model, tokenizer, tmp_path, capsys):
    kept = [s for s in SUBSETS if s != "github"]
    run(slim, tokenizer_model, tmp_path / "d", subsets=kept)
    expected, _ = slim_expected(slim, "train")
    recovered = recovered_by_subset(tmp_path / "d", tokenizer)
    assert recovered == {s: t for s, t in expected.items() if s != "github"}
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["mixed"]["excluded"] == {"github": len(expected["github"])}
    assert sum(src["excluded"].get("github", 0) for src in manifest["sources"].values()) == len(expected["github"])
    assert f"left out {len(expected['github']):,} documents of subsets not asked for: github {len(expected['github']):,}" in capsys.readouterr().out
    assert not any(c["file"].startswith("github_") for c in manifest["chunks"])
    verify(tmp_path / "d")


def test_the_validation_split_prepares_on_its_own_and_loads_for_validation(slim, tokenizer_model, tokenizer, tmp_path, capsys):
    from pajama.loader import load_prepared

    run(slim, tokenizer_model, tmp_path / "val", split="validation")
    expected, _ = slim_expected(slim, "validation")
    assert recovered_by_subset(tmp_path / "val", tokenizer) == expected
    manifest = json.loads((tmp_path / "val" / "manifest.json").read_text())
    assert sorted(manifest["sources"]) == [f"validation/chunk1/example_holdout_{i}.jsonl.zst" for i in range(3)]
    data = load_prepared(tmp_path / "val")
    assert sorted(data.streams) == sorted(expected) and data.tokenizer_sha256 == tokenizer.sha256
    with pytest.raises(PajamaError, match=r"other settings \(split validation -> None\)"):
        run(slim, tokenizer_model, tmp_path / "val")  # the train split into the validation's destination
    inspect(tmp_path / "val", documents=2)
    out = capsys.readouterr().out
    assert "(mixed files)" in out and re.search(r"--- document 1 of 2: (\w+),", out)


def test_a_subset_name_that_redpajama_does_not_know_is_a_bad_line(tmp_path, jsonl):
    path = tmp_path / "train" / "chunk1" / "example_train_0.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(slim_line("kept", "c4") + b'\n{"text": "x", "meta": {"redpajama_set_name": "RedPajamaBooks"}}\n{"text": "y", "meta": {}}\n{"text": "", "meta": {}}\n')
    (source,) = find_source_files(tmp_path)
    reader = open_documents(source)
    assert [(d.text, d.subset) for d in reader] == [("kept", "c4")]
    assert reader.bad.examples == [
        f"{path}:2: unknown \"redpajama_set_name\" 'RedPajamaBooks' (known: {', '.join(SET_NAMES)})",
        f'{path}:3: no string "meta"."redpajama_set_name" field (the subset of the document)',
    ]
    assert reader.empty == 1  # the empty text is skipped and counted, as everywhere


def test_text_field_names_the_json_key(tmp_path, jsonl):
    path = tmp_path / "github" / "code.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"content": "def f(): pass"}\n{"text": "no content"}\n')
    (source,) = find_source_files(tmp_path, text_field="content")
    reader = open_documents(source)
    assert [d.text for d in reader] == ["def f(): pass"]
    assert reader.bad.examples == [f'{path}:2: no string "content" field']


def test_layout_errors_are_one_line(slim, tmp_path, jsonl):
    jsonl(tmp_path / "c4" / "x.jsonl", ["x"])
    with pytest.raises(PajamaError, match="RedPajama-Data-1T has no validation split"):
        find_source_files(tmp_path, split="validation")
    with pytest.raises(PajamaError, match="--subset_name names the subset of a Parquet corpus"):
        find_source_files(slim, subset_name="starcoder")
    with pytest.raises(PajamaError, match="--sample True is the sample layout, not --layout slimpajama"):
        find_source_files(slim, sample=True, layout="slimpajama")
    with pytest.raises(PajamaError, match="unknown subset 'books'"):
        find_source_files(slim, subsets=["books"])
    with pytest.raises(PajamaError, match="holds chunk<N> folders, as one split of SlimPajama-627B does: pass the folder above it, with --split validation"):
        find_source_files(slim / "validation")


# -- Parquet -------------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict, row_group_size: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size, **kwargs)
    return path


@pytest.fixture(scope="module")
def code_corpus(tmp_path_factory, stdlib_texts) -> Path:
    """A StarCoder-like corpus: a ``content`` column (and others), several row groups per
    file, files numbered 1, 2, 10; a null row and a row that is not UTF-8."""
    root = tmp_path_factory.mktemp("code") / "starcoder"
    t = stdlib_texts
    contents = {1: t[:150], 2: t[150:230], 10: t[230:400]}
    contents[2] = contents[2][:33] + [None] + contents[2][33:]
    for n, rows in contents.items():
        column = pa.array([r.encode() if r is not None else None for r in rows], pa.binary())
        if n == 10:
            column = pa.array([r.encode() for r in rows[:70]] + [b"caf\xe9 latin-1"] + [r.encode() for r in rows[70:]], pa.binary())
        column = column.view(pa.string())  # written as text without a check: Parquet does not make one
        write_parquet(root / "python" / f"part-{n}.parquet", {"max_stars_repo_path": [f"f{i}.py" for i in range(len(column))], "content": column}, row_group_size=40)
    return root


def parquet_texts(path: Path, column: str) -> list:
    return pq.read_table(path, columns=[column]).column(0).cast(pa.binary()).to_pylist()


def test_a_parquet_code_corpus_is_one_subset_read_exactly_with_its_bad_rows_named(code_corpus, tokenizer_model, tokenizer, tmp_path):
    assert detect_layout(code_corpus) == "parquet"
    files = find_source_files(code_corpus, text_field="content")
    assert [f.relpath for f in files] == ["python/part-1.parquet", "python/part-2.parquet", "python/part-10.parquet"]
    assert {f.subset for f in files} == {"starcoder"}  # named after the directory
    run(code_corpus, tokenizer_model, tmp_path / "d", text_field="content", unit_mb=0.005)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    expected = [v.decode() for f in files for v in parquet_texts(f.path, "content") if v is not None and v != b"caf\xe9 latin-1"]
    assert recovered_by_subset(tmp_path / "d", tokenizer) == {"starcoder": expected}
    assert all(c["file"].startswith("starcoder_python_part-") for c in manifest["chunks"])
    assert len(manifest["sources"]["python/part-10.parquet"]["units"]) > 1  # runs of row groups
    part2, part10 = code_corpus / "python" / "part-2.parquet", code_corpus / "python" / "part-10.parquet"
    assert manifest["bad_lines"] == 2
    assert manifest["subsets"]["starcoder"]["bad_examples"] == [f"{part2}:row 33: 'content' is null", f"{part10}:row 70: 'content' is not valid UTF-8 (byte 4 of the value)"]
    verify(tmp_path / "d")
    run(code_corpus, tokenizer_model, tmp_path / "two", text_field="content", unit_mb=0.005, num_workers=2)
    assert tree(tmp_path / "two") == tree(tmp_path / "d")
    run(code_corpus, tokenizer_model, tmp_path / "named", text_field="content", subset_name="code")
    assert {c["subset"] for c in json.loads((tmp_path / "named" / "manifest.json").read_text())["chunks"]} == {"code"}
    with pytest.raises(PajamaError, match=r"part-1.parquet: no column 'text' \(its columns: max_stars_repo_path, content\); pass --text_field"):
        run(code_corpus, tokenizer_model, tmp_path / "e")
    with pytest.raises(PajamaError, match="--subset_name 'Star Coder': use lower-case letters"):
        run(code_corpus, tokenizer_model, tmp_path / "f", text_field="content", subset_name="Star Coder")


def test_empty_texts_are_counted_and_reported_like_other_skipped_records(tmp_path, tokenizer_model, tokenizer, capsys):
    root = tmp_path / "code"
    write_parquet(root / "python" / "part-1.parquet", {"content": ["def a(): pass", "", "def b(): pass", "", ""]}, row_group_size=2)
    write_parquet(root / "python" / "part-2.parquet", {"content": ["", "def c(): pass"]}, row_group_size=2)
    run(root, tokenizer_model, tmp_path / "d", text_field="content")
    out = capsys.readouterr().out
    assert "skipped 4 record(s) with an empty text (nothing to train on): python/part-1.parquet 3, python/part-2.parquet 1" in out
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["empty"] == manifest["subsets"]["code"]["empty"] == 4 and manifest["documents"] == 3
    assert [manifest["sources"][f"python/part-{n}.parquet"]["empty"] for n in (1, 2)] == [3, 1]
    verify(tmp_path / "d")
    inspect(tmp_path / "d", documents=0)
    assert "skipped 4 record(s) with an empty text" in capsys.readouterr().out
    # In a file that mixes subsets an empty text has no subset: it is counted with the mixed files.
    slim = tmp_path / "slim" / "train" / "chunk1" / "example_train_0.jsonl"
    slim.parent.mkdir(parents=True)
    slim.write_bytes(slim_line("kept", "c4") + b'\n{"text": "", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n')
    run(tmp_path / "slim", tokenizer_model, tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["empty"] == manifest["mixed"]["empty"] == 1 and manifest["subsets"]["c4"]["empty"] == 0
    verify(tmp_path / "s")
    # A record written before empty texts were counted (no "empty") still makes a manifest that verifies.
    unit = next((tmp_path / "d" / "units").glob("*.json"))
    record = json.loads(unit.read_text())
    del record["empty"]
    unit.write_text(json.dumps(record))
    (tmp_path / "d" / "manifest.json").unlink()
    run(root, tokenizer_model, tmp_path / "d", text_field="content")
    verify(tmp_path / "d")


def test_slimpajama_parquet_samples_are_routed_by_meta_and_split_by_name(tmp_path, stdlib_texts, tokenizer_model, tokenizer):
    rng = random.Random(3)
    root = tmp_path / "SlimPajama-6B"
    expected: dict[str, dict[str, list[str]]] = {"train": {}, "validation": {}}
    texts = iter(stdlib_texts)
    for name, split in [("train-00000-of-00002", "train"), ("train-00001-of-00002", "train"), ("validation-00000-of-00001", "validation")]:
        rows = [(next(texts), rng.choice(SUBSETS)) for _ in range(120)]
        for text, subset in rows:
            expected[split].setdefault(subset, []).append(text)
        meta = [{"redpajama_set_name": SET_NAME_OF[s]} for _, s in rows]
        write_parquet(root / "data" / f"{name}.parquet", {"text": [t for t, _ in rows], "meta": meta, "__index_level_0__": list(range(len(rows)))}, row_group_size=50, compression="zstd")
    files = find_source_files(root)
    assert [f.relpath for f in files] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"] and all(f.routed for f in files)
    for split in ("train", "validation"):
        run(root, tokenizer_model, tmp_path / split, split=split, subsets=[s for s in SUBSETS if s != "github"])
        assert recovered_by_subset(tmp_path / split, tokenizer) == {s: t for s, t in expected[split].items() if s != "github"}
        manifest = json.loads((tmp_path / split / "manifest.json").read_text())
        assert manifest["mixed"]["excluded"] == {"github": len(expected[split].get("github", []))}
        verify(tmp_path / split)
    with pytest.raises(PajamaError, match="no Parquet files of the test split"):
        find_source_files(root, split="test")


def test_a_truncated_parquet_file_is_recorded_and_the_rest_prepared(code_corpus, tokenizer_model, tokenizer, tmp_path, capsys):
    source = tmp_path / "starcoder"
    shutil.copytree(code_corpus, source)
    damaged = source / "python" / "part-2.parquet"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size * 2 // 3])
    with pytest.raises(PajamaError, match=r"^1 file\(s\) could not be read to the end"):
        run(source, tokenizer_model, tmp_path / "d", text_field="content")
    assert re.search(rf"could not read to the end: {re.escape(str(damaged))}: truncated or not a Parquet file \(.*\); Parquet keeps its index at the end", capsys.readouterr().out)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert len(manifest["errors"]) == 1 and manifest["sources"]["python/part-2.parquet"]["documents"] == 0
    others = [v.decode() for n in (1, 10) for v in parquet_texts(code_corpus / "python" / f"part-{n}.parquet", "content") if v != b"caf\xe9 latin-1"]
    assert recovered_by_subset(tmp_path / "d", tokenizer) == {"starcoder": others}


def test_a_corrupt_row_group_keeps_every_row_before_the_damage(tmp_path, stdlib_texts):
    texts = stdlib_texts[:400]
    path = write_parquet(tmp_path / "c" / "part.parquet", {"text": texts}, row_group_size=100, write_page_checksum=True)
    metadata = pq.read_metadata(path)
    column = metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    middle = start + column.total_compressed_size // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    (source,) = find_source_files(tmp_path / "c")
    got = []
    with pytest.raises(UnreadableInput) as e:
        for d in open_documents(source):
            got.append(d.text)
    assert 200 <= len(got) < 300 and got == texts[: len(got)]
    assert str(e.value).startswith(f"{path}:row {len(got)}: corrupt Parquet data in row group 2 of 4")


def test_the_parquet_reader_holds_one_row_group_at_a_time(tmp_path, stdlib_texts, monkeypatch):
    path = write_parquet(tmp_path / "p" / "part.parquet", {"text": stdlib_texts[:500]}, row_group_size=60)
    (source,) = find_source_files(tmp_path / "p")
    reader = open_documents(source)
    calls, yielded = [], [0]
    original = pq.ParquetFile.iter_batches

    def iter_batches(self, *args, **kwargs):
        calls.append((kwargs["row_groups"], kwargs["batch_size"], yielded[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    texts = []
    for d in reader:
        texts.append(d.text)
        yielded[0] += 1
    assert texts == stdlib_texts[:500]
    rows = [pq.read_metadata(path).row_group(g).num_rows for g in range(9)]
    # One call per row group, each made only once every row of the one before was handed on.
    assert calls == [([g], parquet_format.BATCH_ROWS, sum(rows[:g])) for g in range(9)]
    assert reader.row_groups_read == 9 and reader.consumed == sum(parquet_format.group_sizes(pq.read_metadata(path), ["text"]))
    # A range of row groups reads only those, rows named from the start of the file.
    part = list(open_documents(source, 2, 4))
    assert [d.text for d in part] == stdlib_texts[120:240] and part[0].line == 120


def test_tokenizer_train_reads_slimpajama_and_parquet_layouts(slim, code_corpus, tmp_path):
    from pajama.tokenizer import load_tokenizer, train_tokenizer

    for name, source, kwargs in (("slim", slim, {}), ("code", code_corpus, {"text_field": "content"})):
        model = train_tokenizer(source, tmp_path / name, vocab_size=400, max_bytes=300_000, **kwargs)
        assert load_tokenizer(model).vocab_size == 400


def test_a_source_file_records_its_format(tmp_path):
    assert SourceFile("c4", tmp_path / "a.parquet", "a.parquet").format == "parquet"
    assert SourceFile(None, tmp_path / "a.jsonl.zst", "train/chunk3/example_train_12.jsonl.zst", numbered=True).prefix == "train_chunk00003_example_train_00012"
