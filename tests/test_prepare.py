"""``pajama prepare`` end to end: exact recovery of every document, determinism across workers
and nodes, resumption after SIGKILL, bad input, and ``pajama data verify|inspect``."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zstandard

from pajama import PajamaError
from pajama.chunks import ChunkWriter, open_chunk, read_header
from pajama.data import inspect, verify
from pajama.prepare import _free_cores, plan_units, prepare, prepare_unit
from pajama.corpora import SAMPLE_FILES, find_source_files
from pajama.tokenizer import load_tokenizer

CC = "en_head_0000.json.gz.dedup.classifier.jsonl.zst"

# -- an independent reader of the output -------------------------------------------------------

LIT_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float32, 7: np.float64, 8: np.uint16}


def read_lit_chunk(path: Path) -> np.ndarray:
    """Every token of a lit-llama chunk file, read by the format alone."""
    raw = path.read_bytes()
    assert raw[:7] == b"LITPKDS"
    (version,) = struct.unpack("<Q", raw[7:15])
    code = raw[15]
    (chunk_size,) = struct.unpack("<Q", raw[16:24])
    assert version == 1
    tokens = np.frombuffer(raw[24:], dtype=LIT_DTYPES[code])
    assert len(tokens) == chunk_size
    return tokens


def recovered_documents(destination: Path, tokenizer) -> dict[str, list[str]]:
    """Per source file, the documents decoded back from the chunk files, using only the
    manifest (real token counts, and which units make up each source) and the file format."""
    return {source: [tokenizer.decode(ids) for ids in docs] for source, docs in recovered_ids(destination).items()}


def recovered_ids(destination: Path) -> dict[str, list[list[int]]]:
    """Per source file, the ids of each document (between its BOS and EOS), read back as
    ``recovered_documents`` does."""
    manifest = json.loads((destination / "manifest.json").read_text())
    bos, eos = manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"]
    by_unit: dict[str, list[np.ndarray]] = {}
    for chunk in manifest["chunks"]:
        tokens = read_lit_chunk(destination / chunk["file"])
        assert len(tokens) == manifest["chunk_size"]
        assert (tokens[chunk["tokens"] :] == manifest["filler"]).all()
        unit = re.fullmatch(r"(.+)_\d{10}\.bin", chunk["file"])[1]
        by_unit.setdefault(unit, []).append(tokens[: chunk["tokens"]])
    out = {}
    for source, info in manifest["sources"].items():
        stream = np.concatenate([t for unit in info["units"] for t in by_unit.get(unit, [])] or [np.empty(0, np.int64)])
        starts, ends = np.flatnonzero(stream == bos), np.flatnonzero(stream == eos)
        assert len(starts) == len(ends) == info["documents"]
        if len(stream):
            assert starts[0] == 0 and ends[-1] == len(stream) - 1 and (starts[1:] == ends[:-1] + 1).all()
        out[source] = [stream[s + 1 : e].tolist() for s, e in zip(starts, ends)]
    return out


def source_documents(path: Path) -> list[str]:
    """The non-empty texts of a jsonl file, read independently of pajama."""
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return [t for t in (json.loads(line)["text"] for line in data.splitlines() if line.strip()) if t]


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run(source: Path, tokenizer_model: Path, destination: Path, **kwargs) -> None:
    kwargs = {"chunk_size": 4096, "unit_mb": 0.05, "num_workers": 1, **kwargs}
    prepare(source, tokenizer_model, destination, **kwargs)


# -- corpora ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, stdlib_texts) -> Path:
    """A full-layout corpus of real text: nested Common Crawl .jsonl.zst, plain .jsonl split
    into several units, .jsonl.gz, long documents (encoded in pieces), empty and odd texts."""
    from conftest import write_jsonl

    import collections, difflib, textwrap  # noqa: E401
    import inspect as inspect_module

    root = tmp_path_factory.mktemp("corpus")
    t = stdlib_texts
    write_jsonl(root / "common_crawl" / "2019-30" / CC, t[0:300], compress="zst")
    write_jsonl(root / "common_crawl" / "2023-06" / CC, t[300:500], compress="zst")
    write_jsonl(root / "c4" / "c4-train.00000-of-01024.jsonl", t[500:1100])
    write_jsonl(root / "c4" / "c4-train.00001-of-01024.jsonl.gz", t[1100:1200], compress="gz")
    odd = ["", " ", "  two leading spaces", "emoji 😀 漢字 and ünïcödé", "\r\nCRLF\r\n", "\n\n".join(t[1200:1350])]
    write_jsonl(root / "arxiv" / "arxiv_0a1b.jsonl", odd + t[1350:1400])
    write_jsonl(root / "book" / "book.jsonl", ["\n\n".join(t[:600]), "\n\n".join(t[600:700])])
    sources = [inspect_module.getsource(m) for m in (collections, difflib, textwrap)]
    write_jsonl(root / "github" / "filtered_abc.sampled.jsonl", sources + t[1400:1450])
    write_jsonl(root / "stackexchange" / "stackexchange.jsonl", t[1450:])
    return root


@pytest.fixture(scope="module")
def prepared(corpus, tokenizer_model, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("prepared") / "data"
    run(corpus, tokenizer_model, destination)
    return destination


# -- output -------------------------------------------------------------------------------------


def test_every_document_is_recovered_exactly_and_in_order(prepared, corpus, tokenizer):
    manifest = json.loads((prepared / "manifest.json").read_text())
    recovered = recovered_documents(prepared, tokenizer)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    assert sorted(recovered) == sorted(p.relative_to(corpus).as_posix() for p in files)
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        assert recovered[rel] == source_documents(path), rel
        assert manifest["sources"][rel]["documents"] == len(recovered[rel])
    assert len(manifest["sources"]["c4/c4-train.00000-of-01024.jsonl"]["units"]) > 3  # split by byte range
    assert all(len(p["units"]) == 1 for rel, p in manifest["sources"].items() if rel.endswith((".zst", ".gz")))
    assert manifest["sources"]["arxiv/arxiv_0a1b.jsonl"]["documents"] == 55  # the empty text is skipped, and counted:
    assert manifest["sources"]["arxiv/arxiv_0a1b.jsonl"]["empty"] == manifest["subsets"]["arxiv"]["empty"] == manifest["empty"] == 1
    assert manifest["tokens"] == sum(c["tokens"] for c in manifest["chunks"]) == sum(s["tokens"] for s in manifest["subsets"].values())
    assert manifest["dtype"] == "uint16" and manifest["chunk_size"] == 4096 and manifest["filler"] == 2
    assert manifest["tokenizer"] == {"kind": "sentencepiece", "file": "tokenizer.model", "sha256": tokenizer.sha256, "vocab_size": 1000, "bos_id": 1, "eos_id": 2}
    assert (prepared / "tokenizer.model").read_bytes() == tokenizer.path.read_bytes()  # the copy kept beside the manifest
    # lit-llama's training globs find every subset, Common Crawl included.
    names = [c["file"] for c in manifest["chunks"]]
    assert any(n.startswith("cc_2019-30_") for n in names) and any(n.startswith("cc_2023-06_") for n in names)
    assert {c["subset"] for c in manifest["chunks"]} == {"arxiv", "book", "c4", "common_crawl", "github", "stackexchange"}


def test_chunk_header_round_trip(tmp_path):
    for dtype, code in ((np.uint16, 8), (np.int32, 4)):
        writer = ChunkWriter(tmp_path, f"x{code}", 10, np.dtype(dtype), filler=2)
        writer.add(np.arange(3, 26, dtype=dtype))
        assert writer.close() == [(f"x{code}_{i:010d}.bin", n) for i, n in enumerate((10, 10, 3))]
        path = tmp_path / f"x{code}_0000000002.bin"
        raw = path.read_bytes()
        assert raw[:24] == b"LITPKDS" + struct.pack("<Q", 1) + bytes([code]) + struct.pack("<Q", 10)
        assert read_lit_chunk(path).tolist() == [23, 24, 25] + [2] * 7
        assert read_header(path) == (np.dtype(dtype), 10)
        assert open_chunk(path).tolist() == [23, 24, 25] + [2] * 7
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOTLITP" + raw[7:])
    with pytest.raises(PajamaError, match="not a packed chunk file"):
        read_header(bad)
    bad.write_bytes(raw[:-4])
    with pytest.raises(PajamaError, match="truncated"):
        read_header(bad)


def test_two_workers_write_the_same_bytes_as_one(prepared, corpus, tokenizer_model, tmp_path):
    run(corpus, tokenizer_model, tmp_path / "two", num_workers=2)
    assert tree(tmp_path / "two") == tree(prepared)


def test_a_worker_process_gets_the_tokenizer_by_path_and_checks_it_by_hash(tokenizer_model, tmp_path):
    path = tmp_path / "tokenizer.model"
    shutil.copy(tokenizer_model, path)
    tokenizer = load_tokenizer(path)
    sent = pickle.dumps(tokenizer)
    assert len(sent) < len(tokenizer.model_bytes) // 10  # the model's bytes are read again, not sent
    copy = pickle.loads(sent)
    assert (copy.sha256, copy.splittable, copy.bos_id, copy.eos_id) == (tokenizer.sha256, tokenizer.splittable, tokenizer.bos_id, tokenizer.eos_id)
    assert copy.encode("Return the sum of a and b.") == tokenizer.encode("Return the sum of a and b.")
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(PajamaError, match="changed while in use"):
        pickle.loads(sent)


def test_processes_still_at_work_encode_on_the_cores_of_those_with_no_unit_left(corpus, tokenizer, tmp_path):
    cases = [(0, 1), (0, 2), (1, 2), (0, 64), (32, 64), (60, 64)]  # (idle, workers)
    assert [_free_cores(SimpleNamespace(value=idle), workers) for idle, workers in cases] == [1, 1, 2, 1, 2, 16]
    unit = next(u for u in plan_units(find_source_files(corpus), 1 << 30) if u.source.subset == "github")
    for n in (1, 2):
        (tmp_path / str(n) / "units").mkdir(parents=True)
        prepare_unit(unit, tmp_path / str(n), 4096, False, tokenizer, threads=lambda n=n: n)
    assert tree(tmp_path / "1") == tree(tmp_path / "2")


def test_two_nodes_together_write_the_same_bytes_as_one(prepared, corpus, tokenizer_model, tmp_path, capsys):
    shared = tmp_path / "shared"
    run(corpus, tokenizer_model, shared, num_nodes=2, node_rank=1)
    assert not (shared / "manifest.json").exists()
    assert "the last node to finish writes manifest.json" in capsys.readouterr().out
    first = len(list((shared / "units").glob("*.json")))
    run(corpus, tokenizer_model, shared, num_nodes=2, node_rank=0)
    second = len(list((shared / "units").glob("*.json"))) - first
    assert first > 0 and second > 0  # disjoint shares, both non-empty
    assert "wrote" in capsys.readouterr().out
    assert tree(shared) == tree(prepared)


def test_slurm_array_task_prepares_all_unless_asked_to_share(prepared, corpus, tokenizer_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    # An array over several corpora: each task prepares its corpus whole.
    run(corpus, tokenizer_model, tmp_path / "whole")
    out = capsys.readouterr().out
    assert "node" not in out and "sharing" not in out
    assert tree(tmp_path / "whole") == tree(prepared)
    # Asked to share: each task takes its share, and says so.
    run(corpus, tokenizer_model, tmp_path / "d", array_share=True)
    out = capsys.readouterr().out
    assert "sharing the corpus among the 2 tasks of SLURM job array 77 (--array_share): this is share 1 of 2" in out and "node 1 of 2" in out
    assert not (tmp_path / "d" / "manifest.json").exists()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    run(corpus, tokenizer_model, tmp_path / "d", array_share=True)
    assert tree(tmp_path / "d") == tree(prepared)
    with pytest.raises(PajamaError, match="--overwrite with 2 nodes"):
        run(corpus, tokenizer_model, tmp_path / "d", overwrite=True, array_share=True)
    for name in ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name)
    with pytest.raises(PajamaError, match="--array_share true: not running in a SLURM job array"):
        run(corpus, tokenizer_model, tmp_path / "d", array_share=True)


def test_sample_layout_with_the_old_cc_name_and_relative_paths(tmp_path, tokenizer_model, tokenizer, stdlib_texts, monkeypatch, jsonl):
    names = [("cc_2023-05_sample.jsonl" if n == "cc_2023-06_sample.jsonl" else n) for n in SAMPLE_FILES]
    for i, name in enumerate(sorted(names)):
        jsonl(tmp_path / "RedPajama-Data-1T-Sample" / name, stdlib_texts[i * 40 : (i + 1) * 40])
    monkeypatch.chdir(tmp_path)
    prepare(Path("RedPajama-Data-1T-Sample"), Path(os.path.relpath(tokenizer_model)), Path("out"), sample=True, chunk_size=2048, num_workers=1)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(manifest["sources"]) == sorted(names)
    assert manifest["subsets"]["common_crawl"]["source_files"] == 5
    assert {c["file"].split("_sample")[0] for c in manifest["chunks"]} == {n.split("_sample")[0] for n in names}
    recovered = recovered_documents(tmp_path / "out", tokenizer)
    for name in names:
        assert recovered[name] == source_documents(tmp_path / "RedPajama-Data-1T-Sample" / name)


# -- resumption and settings -------------------------------------------------------------------


def test_sigkill_then_rerun_gives_the_same_bytes_and_redoes_only_unfinished_units(tmp_path, stdlib_texts, tokenizer_model, jsonl, capsys):
    source = tmp_path / "source"
    for i, subset in enumerate(("c4", "github", "wikipedia")):
        jsonl(source / subset / "part.jsonl", [f"{i}.{j}: {t}" for j in range(12) for t in stdlib_texts])  # ~6 MB each
    args = {"chunk_size": 65536, "unit_mb": 0.5, "num_workers": 2}
    prepare(source, tokenizer_model, tmp_path / "reference", **args)
    reference = tree(tmp_path / "reference")
    total = len(list((tmp_path / "reference" / "units").glob("*.json")))
    capsys.readouterr()

    destination = tmp_path / "killed"
    command = [sys.executable, "-m", "pajama.cli", "prepare", "--source_path", str(source), "--tokenizer_path", str(tokenizer_model), "--destination_path", str(destination)]
    command += [f"--{k}={v}" for k, v in args.items()]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list((destination / "units").glob("*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must notice and stop by themselves
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("worker processes outlived their killed driver")
    done = {p.name: p.stat().st_mtime_ns for p in (destination / "units").glob("*.json")}
    assert 3 <= len(done) < total, "the run finished before it could be killed: make the corpus bigger"
    assert not (destination / "manifest.json").exists()

    prepare(source, tokenizer_model, destination, **args)
    assert f"{len(done)} already done, {total - len(done)} to do" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (destination / "units").glob("*.json") if p.name in done} == done
    assert tree(destination) == reference


def test_a_source_file_that_grew_is_redone_from_where_it_changed(tmp_path, tokenizer_model, stdlib_texts, jsonl, capsys):
    path = jsonl(tmp_path / "src" / "c4" / "c4-train.00000-of-01024.jsonl", stdlib_texts[:1000])
    run(tmp_path / "src", tokenizer_model, tmp_path / "d")
    before = len(list((tmp_path / "d" / "units").glob("*.json")))
    with open(path, "ab") as f:  # a download that was still being written
        f.write(path.read_bytes()[: len(path.read_bytes()) // 3])
    capsys.readouterr()
    run(tmp_path / "src", tokenizer_model, tmp_path / "d")
    after = len(list((tmp_path / "d" / "units").glob("*.json")))
    assert f"{before - 1} already done, {after - before + 1} to do" in capsys.readouterr().out
    run(tmp_path / "src", tokenizer_model, tmp_path / "fresh")
    assert tree(tmp_path / "d") == tree(tmp_path / "fresh")


def test_overwrite_and_refusal_of_other_settings(prepared, corpus, tokenizer_model, tmp_path, stdlib_texts, capsys):
    from pajama.tokenizer import train_tokenizer

    destination = tmp_path / "d"
    shutil.copytree(prepared, destination)
    run(corpus, tokenizer_model, destination)
    assert "0 to do" in capsys.readouterr().out  # everything was done already
    with pytest.raises(PajamaError, match=r"other settings \(chunk_size 4096 -> 8192\); use a new destination or --overwrite"):
        run(corpus, tokenizer_model, destination, chunk_size=8192)
    other = train_tokenizer(corpus, tmp_path / "other", vocab_size=700, max_bytes=200_000)
    with pytest.raises(PajamaError, match=r"other settings \(tokenizer_sha256 .*vocab_size 1000 -> 700"):
        run(corpus, other, destination)
    with pytest.raises(PajamaError, match="other settings"):
        run(corpus, tokenizer_model, destination, subsets=["c4"])
    (destination / "stray_0000000000.bin").write_bytes(b"x")
    (destination / ".c4_x_0000000000.bin.tmp").write_bytes(b"x")
    run(corpus, tokenizer_model, destination, chunk_size=8192, overwrite=True)
    fresh = tmp_path / "fresh"
    run(corpus, tokenizer_model, fresh, chunk_size=8192)
    assert tree(destination) == tree(fresh)


def test_foreign_chunk_files_are_not_mixed_in(corpus, tokenizer_model, tmp_path):
    (tmp_path / "lit").mkdir()
    (tmp_path / "lit" / "cc_0000000000.bin").write_bytes(b"x")
    with pytest.raises(PajamaError, match="chunk files that pajama prepare did not write"):
        run(corpus, tokenizer_model, tmp_path / "lit")


def test_subsets_are_chosen_and_an_absent_one_is_noted(corpus, tokenizer_model, tmp_path, capsys):
    run(corpus, tokenizer_model, tmp_path / "some", subsets=["c4", "github"])
    manifest = json.loads((tmp_path / "some" / "manifest.json").read_text())
    assert sorted(manifest["subsets"]) == ["c4", "github"]
    assert "absent" not in capsys.readouterr().out
    run(corpus, tokenizer_model, tmp_path / "all")
    out = capsys.readouterr().out
    assert f"note: subset(s) absent from {corpus}, skipped: wikipedia" in out
    with pytest.raises(PajamaError, match="no files for requested subset.*wikipedia"):
        run(corpus, tokenizer_model, tmp_path / "wiki", subsets=["wikipedia"])


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, stdlib_texts) -> Path:
    from conftest import write_jsonl

    root = tmp_path_factory.mktemp("bad")
    c4 = ["good"] * 3 + [b'{"text": "broken', {"meta": 1}, {"text": None}, b'{"text": "\xff\xfe"}', b'{"text": "\\udc00"}', b""]
    write_jsonl(root / "c4" / "c4-train.00000-of-01024.jsonl", stdlib_texts[:300] + c4 + stdlib_texts[300:600])
    zst = write_jsonl(root / "common_crawl" / "2019-30" / CC, stdlib_texts * 2, compress="zst")
    zst.write_bytes(zst.read_bytes()[: zst.stat().st_size * 3 // 4])
    gz = write_jsonl(root / "arxiv" / "arxiv_1.jsonl.gz", stdlib_texts, compress="gz")
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    (root / "github").mkdir()
    (root / "github" / "empty.jsonl").write_bytes(b"")
    (root / "wikipedia" / "wiki.jsonl").mkdir(parents=True)
    write_jsonl(root / "stackexchange" / "stackexchange.jsonl", stdlib_texts[600:700])
    return root


def test_bad_input_is_skipped_and_counted_and_unreadable_files_fail_the_run_at_the_end(bad_corpus, tokenizer_model, tokenizer, stdlib_texts, tmp_path, capsys):
    destination = tmp_path / "d"
    with pytest.raises(PajamaError) as e:
        run(bad_corpus, tokenizer_model, destination, num_workers=2)
    message = str(e.value)
    assert "\n" not in message and message.startswith("4 file(s) could not be read to the end; every document before the damage was kept: ")
    out = capsys.readouterr().out
    c4 = bad_corpus / "c4" / "c4-train.00000-of-01024.jsonl"
    expected_bad = [
        f"{c4}:304: not valid JSON (Unterminated string starting at, column 10)",
        f'{c4}:305: no string "text" field',
        f'{c4}:306: no string "text" field',
        f"{c4}:307: invalid UTF-8 (byte 11 of the line)",
        f'{c4}:308: "text" holds an unpaired surrogate escape (not valid Unicode)',
    ]
    assert f"skipped 6 bad line(s) in c4/c4-train.00000-of-01024.jsonl, e.g.:\n  {expected_bad[0]}\n  {expected_bad[1]}\n  {expected_bad[2]}" in out
    for path, problem in [
        (bad_corpus / "common_crawl" / "2019-30" / CC, "truncated zstd data"),
        (bad_corpus / "arxiv" / "arxiv_1.jsonl.gz", "truncated gzip data"),
        (bad_corpus / "github" / "empty.jsonl", "empty file"),
        (bad_corpus / "wikipedia" / "wiki.jsonl", "is a directory"),
    ]:
        assert re.search(rf"could not read to the end: {re.escape(str(path))}(:\d+)?: {problem}", out), problem
    # The manifest is complete, records the damage, and every good document is there.
    manifest = json.loads((destination / "manifest.json").read_text())
    assert manifest["bad_lines"] == 6 and manifest["subsets"]["c4"]["bad_lines"] == 6
    assert manifest["sources"]["c4/c4-train.00000-of-01024.jsonl"]["bad_examples"] == expected_bad
    assert len(manifest["errors"]) == 4
    recovered = recovered_documents(destination, tokenizer)
    assert recovered["c4/c4-train.00000-of-01024.jsonl"] == stdlib_texts[:300] + ["good"] * 3 + stdlib_texts[300:600]
    assert recovered["stackexchange/stackexchange.jsonl"] == stdlib_texts[600:700]
    for rel, texts in (("common_crawl/2019-30/" + CC, stdlib_texts * 2), ("arxiv/arxiv_1.jsonl.gz", stdlib_texts)):
        got = recovered[rel]
        assert 0 < len(got) < len(texts) and got == texts[: len(got)], rel
    assert recovered["github/empty.jsonl"] == [] and recovered["wikipedia/wiki.jsonl"] == []
    with pytest.raises(PajamaError, match="4 problem"):
        verify(destination)


def test_strict_stops_at_the_first_bad_line(bad_corpus, tokenizer_model, tmp_path):
    c4 = bad_corpus / "c4" / "c4-train.00000-of-01024.jsonl"
    with pytest.raises(PajamaError) as e:
        run(bad_corpus, tokenizer_model, tmp_path / "d", subsets=["c4"], strict=True, num_workers=2)
    assert str(e.value) == f"{c4}:304: not valid JSON (Unterminated string starting at, column 10)"
    with pytest.raises(PajamaError) as e:
        run(bad_corpus, tokenizer_model, tmp_path / "e", subsets=["github"], strict=True)
    assert str(e.value).startswith(f"{bad_corpus / 'github' / 'empty.jsonl'}: empty file")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_stopped_with_many_units_left_exits_at_once(tmp_path, tokenizer_model, stdlib_texts, jsonl, workers):
    # The units not taken yet are more than a pipe holds (a thousand): exiting must not wait for them.
    jsonl(tmp_path / "src" / "c4" / "part.jsonl", [b'{"text": broken'] + stdlib_texts * 6)
    code = f"from pajama.prepare import prepare\nprepare({str(tmp_path / 'src')!r}, {str(tokenizer_model)!r}, {str(tmp_path / 'out')!r}, unit_mb=0.002, strict=True, num_workers={workers})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "PajamaError" in result.stderr and ":1: not valid JSON" in result.stderr
    assert int(re.search(r"in (\d+) units", result.stdout)[1]) > 1000


def test_missing_inputs_are_one_line_errors_naming_the_path(corpus, tokenizer_model, tmp_path, jsonl):
    cases = []
    with pytest.raises(PajamaError) as e:
        run(tmp_path / "nowhere", tokenizer_model, tmp_path / "d")
    cases.append((e.value, tmp_path / "nowhere"))
    for name in SAMPLE_FILES:
        if name != "book_sample.jsonl":
            jsonl(tmp_path / "sample" / name, ["x"])
    with pytest.raises(PajamaError) as e:
        run(tmp_path / "sample", tokenizer_model, tmp_path / "d", sample=True)
    cases.append((e.value, tmp_path / "sample" / "book_sample.jsonl"))
    not_a_model = tmp_path / "tokenizer.model"
    not_a_model.write_text("this is not a SentencePiece model\n")
    with pytest.raises(PajamaError) as e:
        run(corpus, not_a_model, tmp_path / "d")
    cases.append((e.value, not_a_model))
    for error, path in cases:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    assert not (tmp_path / "d").exists()


# -- verify and inspect ---------------------------------------------------------------------------


def test_verify_passes_a_complete_destination_and_lists_each_problem(prepared, corpus, tokenizer_model, tmp_path, capsys):
    from pajama.tokenizer import train_tokenizer

    from pajama.cli import main

    main(["data", "verify", str(prepared), "--tokenizer_path", str(tokenizer_model)])  # the directory may be given without its flag
    assert capsys.readouterr().out.startswith(f"OK: {prepared} is complete and consistent")
    with pytest.raises(SystemExit) as exit:
        main(["data", "verify", "--destination_path", str(tmp_path / "nowhere")])
    assert exit.value.code == 1 and f"{tmp_path / 'nowhere'}: directory not found" in capsys.readouterr().err
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    manifest = json.loads((d / "manifest.json").read_text())
    files = [c["file"] for c in manifest["chunks"]]
    (d / files[0]).unlink()
    with open(d / files[1], "r+b") as f:
        f.truncate(100)
    (d / "cc_extra_0000000000.bin").write_bytes((d / files[2]).read_bytes())
    record = d / "units" / f"{manifest['sources']['arxiv/arxiv_0a1b.jsonl']['units'][0]}.json"
    r = json.loads(record.read_text())
    r["tokens"] += 1
    record.write_text(json.dumps(r))
    with pytest.raises(PajamaError) as e:
        verify(d)
    out = capsys.readouterr().out
    assert f"problem: {d / files[0]}: listed in the manifest but missing" in out
    assert f"problem: {d / files[1]}: truncated at byte 100: 100 bytes, expected 8,216" in out
    assert "1 chunk file(s) not in the manifest: cc_extra_0000000000.bin" in out
    assert "tokens" in out and "the unit records add up to" in out
    assert str(e.value).startswith(f"{d}: ") and "problem(s)" in str(e.value) and "\n" not in str(e.value)
    other = train_tokenizer(corpus, tmp_path / "other", vocab_size=700, max_bytes=200_000)
    with pytest.raises(PajamaError, match="1 problem"):
        verify(prepared, tokenizer_path=other)
    assert f"problem: {other}: not the tokenizer this data was prepared with" in capsys.readouterr().out
    (d / "manifest.json").unlink()
    with pytest.raises(PajamaError, match="prepare has not finished"):
        verify(d)


def test_inspect_prints_the_summary_and_seeded_random_documents(prepared, corpus, tokenizer_model, tmp_path, capsys):
    inspect(prepared, documents=3, seed=7, tokenizer_path=tokenizer_model)
    out = capsys.readouterr().out
    assert "subset" in out and "common_crawl" in out and "total" in out and "bad lines" in out
    shown = re.findall(r"--- document \d of 3: (\w+), (\S+) token [\d,]+, ([\d,]+) tokens, ([\d,]+) characters ---\n(.*?)(?=\n--- document|\Z)", out, re.S)
    assert len(shown) == 3
    every_text = [t for p in corpus.rglob("*") if p.is_file() for t in source_documents(p)]
    for subset, _, _, chars, text in shown:
        text = text.rstrip("\n")
        if text.endswith("more characters]"):
            text = text.rsplit("\n[...", 1)[0]
        assert any(t.startswith(text) and len(t) == int(chars.replace(",", "")) for t in every_text)
    inspect(prepared, documents=3, seed=7, tokenizer_path=tokenizer_model)
    assert capsys.readouterr().out == out
    inspect(prepared, documents=3, seed=7)  # with the copy of the tokenizer kept in the directory
    assert capsys.readouterr().out == out
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    (d / "tokenizer.model").unlink()
    inspect(d)
    assert f"(no copy of the tokenizer in {d}: pass --tokenizer_path to see decoded documents)" in capsys.readouterr().out


# -- Hugging Face tokenizers, int32 chunks, the tokenizer's copy -----------------------------------


@pytest.fixture(scope="module")
def hf_prepared(corpus, hf_tokenizer_json, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("hf_prepared") / "data"
    run(corpus, hf_tokenizer_json.parent, destination, num_workers=2)  # the directory holding tokenizer.json
    return destination


def test_hf_every_document_is_recovered_exactly_with_the_library_s_own_ids(hf_prepared, corpus, hf_tokenizer, hf_tokenizer_json, capsys):
    from conftest import library_ids

    manifest = json.loads((hf_prepared / "manifest.json").read_text())
    assert manifest["tokenizer"] == {"kind": "huggingface", "file": "tokenizer.json", "sha256": hf_tokenizer.sha256, "vocab_size": 500, "bos_id": hf_tokenizer.bos_id, "eos_id": hf_tokenizer.eos_id}
    assert manifest["dtype"] == "uint16" and manifest["filler"] == hf_tokenizer.eos_id
    assert (hf_prepared / "tokenizer.json").read_bytes() == hf_tokenizer_json.read_bytes()
    ids, texts = recovered_ids(hf_prepared), recovered_documents(hf_prepared, hf_tokenizer)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    assert sorted(ids) == sorted(p.relative_to(corpus).as_posix() for p in files)
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        assert texts[rel] == source_documents(path), rel
        assert ids[rel] == library_ids(hf_tokenizer_json, source_documents(path)), rel
    assert any(len(t) > 131_072 for p in files for t in source_documents(p))  # the book, encoded in pieces
    verify(hf_prepared, tokenizer_path=hf_tokenizer_json)
    assert capsys.readouterr().out.startswith(f"OK: {hf_prepared} is complete and consistent")
    inspect(hf_prepared, documents=2, seed=3)  # decoded with the copy in the directory
    shown = re.findall(r"--- document \d of 2: .*? ([\d,]+) characters ---\n", capsys.readouterr().out)
    assert len(shown) == 2


def test_hf_one_worker_writes_the_same_bytes_as_two(hf_prepared, corpus, hf_tokenizer_json, tmp_path):
    run(corpus, hf_tokenizer_json, tmp_path / "one", num_workers=1)
    assert tree(tmp_path / "one") == tree(hf_prepared)


def test_int32_chunks_read_back_the_right_ids(hf_tokenizer_json_int32, stdlib_texts, tmp_path, jsonl):
    from pajama.loader import load_prepared

    from conftest import library_ids

    docs = {"c4": stdlib_texts[:400], "github": stdlib_texts[400:600] + ["\n\n".join(stdlib_texts[600:1000])]}
    jsonl(tmp_path / "src" / "c4" / "c4-train.00000-of-01024.jsonl", docs["c4"])
    jsonl(tmp_path / "src" / "github" / "filtered.jsonl.zst", docs["github"], compress="zst")
    destination = tmp_path / "out"
    run(tmp_path / "src", hf_tokenizer_json_int32, destination, num_workers=2)
    tok = load_tokenizer(hf_tokenizer_json_int32)
    manifest = json.loads((destination / "manifest.json").read_text())
    assert manifest["dtype"] == "int32" and manifest["tokenizer"]["vocab_size"] == 66036
    assert all(read_header(destination / c["file"]) == (np.dtype(np.int32), 4096) for c in manifest["chunks"])
    data = load_prepared(destination)
    assert data.vocab_size == 66036 and sorted(data.streams) == ["c4", "github"]
    for subset, texts in docs.items():
        expected = [i for ids in library_ids(hf_tokenizer_json_int32, texts) for i in [tok.bos_id, *ids, tok.eos_id]]
        stream = data.streams[subset]
        assert stream.tokens == len(expected)
        got = stream.read(0, stream.tokens)
        assert got.tolist() == expected and got.min() >= 65536  # every id needs more than 16 bits
        assert stream.read(1000, 5000).tolist() == expected[1000:6000]  # across chunk files
    recovered = recovered_documents(destination, tok)
    assert recovered["c4/c4-train.00000-of-01024.jsonl"] == docs["c4"] and recovered["github/filtered.jsonl.zst"] == docs["github"]
    verify(destination)


def test_the_tokenizer_copy_is_written_once_and_replaced_on_overwrite(corpus, tokenizer_model, hf_tokenizer_json, tmp_path, capsys):
    destination = tmp_path / "d"
    run(corpus, tokenizer_model, destination, subsets=["c4"])
    copy = destination / "tokenizer.model"
    stamp = copy.stat().st_mtime_ns
    (destination / "manifest.json").unlink()
    run(corpus, tokenizer_model, destination, subsets=["c4"])  # resumed: nothing to do but the manifest
    assert "0 to do" in capsys.readouterr().out and copy.stat().st_mtime_ns == stamp
    with pytest.raises(PajamaError, match="other settings"):
        run(corpus, hf_tokenizer_json, destination, subsets=["c4"])
    run(corpus, hf_tokenizer_json, destination, subsets=["c4"], overwrite=True)
    assert not copy.exists() and (destination / "tokenizer.json").read_bytes() == hf_tokenizer_json.read_bytes()
    fresh = tmp_path / "fresh"
    run(corpus, hf_tokenizer_json, fresh, subsets=["c4"])
    assert tree(destination) == tree(fresh)
    # A tokenizer kept in the destination itself survives --overwrite.
    run(corpus, destination / "tokenizer.json", destination, subsets=["c4"], overwrite=True)
    assert tree(destination) == tree(fresh)


def test_verify_checks_the_tokenizer_copy(hf_prepared, tmp_path, capsys):
    d = tmp_path / "d"
    shutil.copytree(hf_prepared, d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(PajamaError, match="1 problem"):
        verify(d)
    assert f"problem: {d / 'tokenizer.json'}: missing (prepare keeps a copy of its tokenizer here)" in capsys.readouterr().out
    (d / "tokenizer.json").write_bytes((hf_prepared / "tokenizer.json").read_bytes() + b" ")
    with pytest.raises(PajamaError, match="1 problem"):
        verify(d)
    assert f"problem: {d / 'tokenizer.json'}: not the tokenizer this data was prepared with" in capsys.readouterr().out


def test_prepare_help_names_both_kinds_of_tokenizer(capsys):
    from pajama.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "Hugging Face tokenizer.json" in " ".join(capsys.readouterr().out.split())


def test_data_prepared_before_the_tokenizer_was_kept_still_verifies(prepared, tmp_path, capsys):
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    manifest = json.loads((d / "manifest.json").read_text())
    for key in ("kind", "file"):
        del manifest["tokenizer"][key]
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (d / "tokenizer.model").unlink()
    verify(d)
    assert capsys.readouterr().out.startswith(f"OK: {d} is complete and consistent")
    inspect(d)
    assert "pass --tokenizer_path to see decoded documents" in capsys.readouterr().out


def test_prepare_records_chunk_checksums_that_find_a_file_damaged_later(prepared, tmp_path, capsys):
    import zlib

    from pajama.loader import load_prepared, verify_prepared

    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["checksums"] == {"kind": "crc32", "block_bytes": 1 << 20}
    for chunk in manifest["chunks"]:  # each file is one block here: its CRC-32, computed apart
        assert chunk["crc32"] == [zlib.crc32((prepared / chunk["file"]).read_bytes())]
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    victim = manifest["chunks"][3]
    data = bytearray((d / victim["file"]).read_bytes())
    data[5000] ^= 0x01  # overwritten after prepare: same size, same header
    (d / victim["file"]).write_bytes(bytes(data))
    with pytest.raises(PajamaError, match="1 problem"):
        verify(d)
    assert f"problem: {d / victim['file']}: damaged at byte 0: bytes 0-8,215 differ from what prepare wrote" in capsys.readouterr().out
    with pytest.raises(PajamaError, match=f"1 of {len(manifest['chunks'])} chunk files damaged: {re.escape(str(d / victim['file']))}: damaged at byte 0"):
        verify_prepared(d)
    # Training with the checksums asked for names it before any of its tokens is used.
    stream = load_prepared(d, verify_checksums=True).streams[victim["subset"]]
    first = next(i for i, f in enumerate(stream.files) if f.name == victim["file"])
    with pytest.raises(PajamaError, match=re.escape(f"{d / victim['file']}: damaged at byte 0")):
        stream.read(int(stream.offsets[first]), 1)


def test_data_prepared_before_checksums_were_recorded_still_verifies_and_loads(prepared, tmp_path, capsys):
    from pajama.loader import load_prepared

    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["checksums"]
    for chunk in manifest["chunks"]:
        del chunk["crc32"]
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for record in (d / "units").glob("*.json"):
        r = json.loads(record.read_text())
        for chunk in r["chunks"]:
            del chunk["crc32"]
        record.write_text(json.dumps(r))
    verify(d)
    out = capsys.readouterr().out
    assert "have no checksums (prepared before pajama recorded them)" in out and f"OK: {d} is complete and consistent" in out
    data = load_prepared(d, verify_checksums=True)
    assert sum(s.tokens for s in data.streams.values()) == manifest["tokens"]
    assert "have no checksums" in capsys.readouterr().out
