"""Finding a RedPajama directory's files and reading their documents, good and bad."""

import gzip
from pathlib import Path

import pytest
import zstandard

import pajama.corpora.jsonl as jsonl_format
from pajama import PajamaError
from pajama.corpora import SAMPLE_FILES, BadLines, DocumentReader, SourceFile, UnreadableInput, find_source_files

CC = "en_head_0000.json.gz.dedup.classifier.jsonl.zst"


def full_layout(root: Path, jsonl) -> dict[str, list[str]]:
    files = {
        f"common_crawl/2019-30/{CC}": ["cc one", "cc two"],
        f"common_crawl/2023-06/{CC}": ["cc three"],  # same name in another dump
        "c4/c4-train.00000-of-01024.jsonl": ["c4 one"],
        "c4/c4-train.00001-of-01024.jsonl.gz": ["c4 two"],
        "github/filtered_abc.sampled.jsonl": ["def f(): pass"],
        "arxiv/arxiv_1.jsonl": ["paper"],
    }
    for rel, texts in files.items():
        jsonl(root / rel, texts, compress="zst" if rel.endswith(".zst") else "gz" if rel.endswith(".gz") else None)
    (root / "common_crawl" / "2019-30" / ".en_head_0001.jsonl.zst.part").write_bytes(b"partial download")
    (root / "c4" / "README.md").write_text("not data")
    return files


def test_full_layout_finds_nested_common_crawl_and_every_extension(tmp_path, jsonl, capsys):
    files = full_layout(tmp_path, jsonl)
    found = find_source_files(tmp_path)
    assert [f.relpath for f in found] == sorted(files, key=lambda r: (r.split("/")[0], r))
    assert [f.subset for f in found] == ["arxiv", "c4", "c4", "common_crawl", "common_crawl", "github"]
    assert all(f.path.is_absolute() for f in found)
    prefixes = [f.prefix for f in found]
    assert prefixes[3:5] == ["cc_2019-30_en_head_0000.json.gz.dedup.classifier", "cc_2023-06_en_head_0000.json.gz.dedup.classifier"]
    assert all(p.startswith(("arxiv_", "c4_", "cc_", "github_")) for p in prefixes)  # lit-llama's training globs match
    assert len(set(prefixes)) == len(prefixes)
    note = capsys.readouterr().out
    assert "absent" in note and "book, stackexchange, wikipedia" in note
    texts = [d.text for f in found for d in DocumentReader(f)]
    assert texts == [t for rel in sorted(files, key=lambda r: (r.split("/")[0], r)) for t in files[rel]]


def test_relative_and_absolute_source_paths_find_the_same_files(tmp_path, jsonl, monkeypatch):
    full_layout(tmp_path / "data" / "RedPajama", jsonl)
    absolute = find_source_files(tmp_path / "data" / "RedPajama")
    monkeypatch.chdir(tmp_path / "data")
    relative = find_source_files(Path("RedPajama"))
    assert relative == absolute
    assert [d.text for d in DocumentReader(relative[0])] == ["paper"]


def test_subsets_choose_and_an_absent_one_asked_for_is_an_error(tmp_path, jsonl, capsys):
    full_layout(tmp_path, jsonl)
    assert {f.subset for f in find_source_files(tmp_path, subsets=["c4", "github"])} == {"c4", "github"}
    assert "absent" not in capsys.readouterr().out
    with pytest.raises(PajamaError, match="no files for requested subset.*book"):
        find_source_files(tmp_path, subsets=["c4", "book"])
    with pytest.raises(PajamaError, match="unknown subset 'books'"):
        find_source_files(tmp_path, subsets=["books"])


def sample_layout(root: Path, jsonl, old_cc_name: bool = False) -> None:
    for name in SAMPLE_FILES:
        if old_cc_name and name == "cc_2023-06_sample.jsonl":
            name = "cc_2023-05_sample.jsonl"
        jsonl(root / name, [f"text of {name}"])


def test_sample_layout_has_eleven_flat_files_and_accepts_the_old_cc_name(tmp_path, jsonl):
    sample_layout(tmp_path / "new", jsonl)
    sample_layout(tmp_path / "old", jsonl, old_cc_name=True)
    new, old = find_source_files(tmp_path / "new", sample=True), find_source_files(tmp_path / "old", sample=True)
    assert len(new) == len(old) == 11
    assert {f.relpath for f in new} ^ {f.relpath for f in old} == {"cc_2023-06_sample.jsonl", "cc_2023-05_sample.jsonl"}
    by_subset = {}
    for f in old:
        by_subset.setdefault(f.subset, []).append(f.prefix)
    assert by_subset["common_crawl"] == ["cc_2019-30_sample", "cc_2020-05_sample", "cc_2021-04_sample", "cc_2022-05_sample", "cc_2023-05_sample"]
    assert by_subset["stackexchange"] == ["stackexchange_sample"]
    with pytest.raises(PajamaError, match="pass --sample True"):
        find_source_files(tmp_path / "new")  # the Sample without --sample True


def test_missing_source_and_missing_sample_file_are_one_line_errors(tmp_path, jsonl):
    with pytest.raises(PajamaError) as e:
        find_source_files(tmp_path / "nowhere")
    assert str(e.value) == f"{tmp_path / 'nowhere'}: source directory not found"
    sample_layout(tmp_path, jsonl)
    (tmp_path / "github_sample.jsonl").unlink()
    with pytest.raises(PajamaError) as e:
        find_source_files(tmp_path, sample=True)
    assert str(e.value).startswith(f"{tmp_path / 'github_sample.jsonl'}: Sample file missing") and "\n" not in str(e.value)


def reader(path: Path, subset: str = "c4", **kwargs) -> DocumentReader:
    return DocumentReader(SourceFile(subset, path, path.name), **kwargs)


def test_bad_lines_are_counted_with_file_and_line_and_good_ones_kept(tmp_path, jsonl):
    path = jsonl(
        tmp_path / "c4.jsonl",
        [
            "good 1",
            b'{"text": "unterminated',
            {"meta": {}},  # no text
            {"text": 5},
            b'{"text": "caf\xe9"}',  # latin-1, not UTF-8
            b'{"text": "lone \\ud800 surrogate"}',
            b"",
            ["a", "list"],
            "",  # empty text: skipped and counted
            "good 2 \\ud83d\\ude00 and 😀",
            b'{"text": "paired \\ud83d\\ude00 surrogates"}',
            b'{"text": "ascii text", "meta": "lone \\udc00 in another field"}',
        ],
    )
    bad = BadLines()
    read = reader(path, bad=bad)
    docs = list(read)
    assert [(d.text, d.line) for d in docs] == [("good 1", 1), ("good 2 \\ud83d\\ude00 and 😀", 10), ("paired 😀 surrogates", 11), ("ascii text", 12)]
    assert bad.count == 7 and read.empty == 1
    assert bad.examples == [
        f"{path}:2: not valid JSON (Unterminated string starting at, column 10)",
        f'{path}:3: no string "text" field',
        f'{path}:4: no string "text" field',
        f"{path}:5: invalid UTF-8 (byte 14 of the line)",
        f'{path}:6: "text" holds an unpaired surrogate escape (not valid Unicode)',
    ]
    with pytest.raises(PajamaError) as e:
        list(reader(path, strict=True))
    assert str(e.value) == bad.examples[0]


def test_line_numbers_count_from_the_start_of_the_file_in_a_byte_range(tmp_path, jsonl):
    path = jsonl(tmp_path / "c4.jsonl", ["a", "b", b"{bad", "c", b"{worse"])
    data = path.read_bytes()
    start = data.index(b"{bad")
    bad = BadLines()
    docs = list(reader(path, start=start, end=len(data), bad=bad))
    assert [(d.text, d.line) for d in docs] == [("c", 2)]  # line within the range
    assert [e.split(": ")[0] for e in bad.examples] == [f"{path}:3", f"{path}:5"]


def test_lines_longer_than_a_read_block(tmp_path, jsonl, monkeypatch):
    monkeypatch.setattr(jsonl_format, "BLOCK", 7)
    texts = ["x" * 50, "short", "y" * 23, "", "z"]
    path = jsonl(tmp_path / "c4.jsonl", texts)
    assert [d.text for d in reader(path)] == [t for t in texts if t]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # no newline at the end
    assert [d.text for d in reader(path)] == [t for t in texts if t]
    for compress in ("zst", "gz"):
        path = jsonl(tmp_path / f"c4.jsonl.{compress}", texts, compress=compress)
        assert [d.text for d in reader(path)] == [t for t in texts if t]


def test_multi_frame_zstd_and_multi_member_gzip_are_read_whole(tmp_path, jsonl):
    from conftest import jsonl_bytes

    a, b = jsonl_bytes(["one", "two"]), jsonl_bytes(["three"])
    (tmp_path / "x.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b))
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(a) + gzip.compress(b))
    for name in ("x.jsonl.zst", "x.jsonl.gz"):
        assert [d.text for d in reader(tmp_path / name)] == ["one", "two", "three"]


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_truncated_compressed_file_keeps_the_documents_before_the_damage_then_raises(tmp_path, jsonl, stdlib_texts, kind):
    texts = stdlib_texts * 2  # zstd decodes in blocks of 128 KB: several of them
    path = jsonl(tmp_path / f"cc.jsonl.{kind}", texts, compress=kind)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    got = []
    with pytest.raises(UnreadableInput) as e:
        for d in reader(path):
            got.append(d.text)
    assert 0 < len(got) < len(texts) and got == texts[: len(got)]
    assert str(e.value).startswith(f"{path}:{len(got) + 1}: truncated {'zstd' if kind == 'zst' else 'gzip'} data")


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_corrupt_compressed_data_raises_naming_the_line(tmp_path, jsonl, stdlib_texts, kind):
    path = jsonl(tmp_path / f"cc.jsonl.{kind}", stdlib_texts[:400], compress=kind)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableInput, match=rf"^{path}:\d+: (corrupt|truncated) (zstd|gzip) data"):
        list(reader(path))


def test_empty_file_and_directory_are_unreadable(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.jsonl.zst").write_bytes(b"")
    (tmp_path / "dir.jsonl").mkdir()
    for name, message in [("empty.jsonl", "empty file"), ("empty.jsonl.zst", "empty file"), ("dir.jsonl", "is a directory")]:
        with pytest.raises(UnreadableInput) as e:
            list(reader(tmp_path / name))
        assert str(e.value).startswith(f"{tmp_path / name}: {message}")


def test_file_that_cannot_be_opened_is_unreadable(tmp_path):
    path = tmp_path / "c4.jsonl"
    path.symlink_to(tmp_path / "gone.jsonl")  # a dangling link: open() fails, even for root
    with pytest.raises(UnreadableInput, match=rf"^{path}: cannot open: No such file"):
        list(reader(path))
