"""Tests for pajama.download against a local HTTP server with injected faults."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import signal
import socket
import struct
import threading
import time
from pathlib import Path, PurePosixPath

import pytest
import zstandard

from pajama import PajamaError
from pajama import download as dl

PREFIX = "/redpajama-data-1T/v1.0.0"


def _jsonl(rng: random.Random, n_lines: int) -> bytes:
    words = ["llama", "pajama", "red", "token", "corpus", "train", "data", "model", "the", "of"]
    lines = []
    for i in range(n_lines):
        text = " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(rng.randrange(5, 60)))
        lines.append(json.dumps({"text": text, "meta": {"id": i}}))
    return ("\n".join(lines) + "\n").encode()


def _make_corpus() -> dict[str, bytes]:
    rng = random.Random(1234)
    zst = zstandard.ZstdCompressor(level=3)
    return {
        "arxiv/arxiv_023827cd-7ee8-42e6-aa7b-661731f4c70f.jsonl": _jsonl(rng, 300),
        "book/book.jsonl": _jsonl(rng, 200),
        "c4/c4-train.00000-of-01024.jsonl": _jsonl(rng, 250),
        "c4/c4-train.00001-of-01024.jsonl": _jsonl(rng, 120),
        "common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst": zst.compress(_jsonl(rng, 400)),
        "common_crawl/2019-30/en_middle_0001.json.gz.dedup.classifier.jsonl.zst": zst.compress(_jsonl(rng, 300)),
        # same file name as above in another snapshot: the layout must not be flat
        "common_crawl/2023-06/en_head_0000.json.gz.dedup.classifier.jsonl.zst": zst.compress(_jsonl(rng, 350)),
        "github/filtered_0a1b2c3d4e5f.sampled.jsonl": _jsonl(rng, 150),
        "stackexchange/stackexchange.jsonl": _jsonl(rng, 180),
        "wikipedia/wiki.jsonl": _jsonl(rng, 220),
    }


CORPUS = _make_corpus()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _lookup(self) -> tuple[str | None, bytes | None]:
        path = self.path.split("?", 1)[0]
        if path == "/urls.txt":
            return None, self.server.urls_txt.encode()
        if not path.startswith(PREFIX + "/"):
            return None, None
        rel = path[len(PREFIX) + 1 :]
        return rel, self.server.files.get(rel)

    def do_HEAD(self):
        rel, body = self._lookup()
        self.server.record("HEAD", rel, None, 0)
        if not self.server.head_allowed:
            self.send_error(405)
            return
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):
        rel, body = self._lookup()
        range_header = self.headers.get("Range")
        fault = self.server.next_fault(rel)
        if body is None:
            self.server.record("GET", rel, range_header, 0)
            self.send_error(404)
            return
        if fault == "500":
            self.server.record("GET", rel, range_header, 0)
            self.send_error(500)
            return
        if fault == "disconnect":  # close without any answer
            self.server.record("GET", rel, range_header, 0)
            self.close_connection = True
            return

        start = 0
        if range_header and rel not in self.server.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.server.record("GET", rel, range_header, 0, status=416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()

        if fault in ("truncate", "reset", "stall"):
            sent = payload[: len(payload) // 2]
            self.wfile.write(sent)
            self.server.record("GET", rel, range_header, len(sent), status=f"fault:{fault}")
            if fault == "stall":
                time.sleep(self.server.stall_seconds)
            elif fault == "reset":  # abort with RST instead of a clean close
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.wfile.write(payload)
        self.server.record("GET", rel, range_header, len(payload))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 drops SYNs: 1 s retransmit stalls

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.faults: dict[str, list[str]] = {}  # rel -> faults for the next GETs, in order
        self.always_fail: set[str] = set()  # rel -> every GET answers 500
        self.ignore_range: set[str] = set()  # rel -> answer 200 with the whole file
        self.head_allowed = True
        self.stall_seconds = 1.0
        self.urls_txt = ""
        self.log: list[dict] = []
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PREFIX}"

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def next_fault(self, rel: str | None) -> str | None:
        with self._lock:
            if rel in self.always_fail:
                return "500"
            pending = self.faults.get(rel)
            return pending.pop(0) if pending else None

    def record(self, method, rel, range_header, sent, status=None):
        with self._lock:
            self.log.append({"method": method, "rel": rel, "range": range_header, "sent": sent, "status": status})

    def gets(self, rel: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.log if e["method"] == "GET" and (rel is None or e["rel"] == rel)]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.001)
    monkeypatch.setattr(dl, "CHUNK_SIZE", 4096)


@pytest.fixture
def server():
    srv = _Server(CORPUS)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.urls_txt = "".join(srv.url(rel) + "\n" for rel in CORPUS)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _write_url_lists(directory: Path, srv: _Server, files=CORPUS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for subset in dl.SUBSETS:
        rels = [rel for rel in files if rel.split("/")[0] == subset]
        if rels:
            (directory / f"{subset}.txt").write_text("".join(srv.url(rel) + "\n" for rel in rels))
    return directory


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256sum(files: dict[str, bytes]) -> str:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in files.items())


# --------------------------------------------------------------------------------------


def test_downloads_corpus_through_faults(server, tmp_path, capsys):
    faults = {
        "arxiv/arxiv_023827cd-7ee8-42e6-aa7b-661731f4c70f.jsonl": ["reset"],
        "book/book.jsonl": ["disconnect", "500"],
        "c4/c4-train.00000-of-01024.jsonl": ["truncate", "truncate"],
        "common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst": ["500", "500", "truncate"],
        "common_crawl/2023-06/en_head_0000.json.gz.dedup.classifier.jsonl.zst": ["reset", "truncate"],
        "wikipedia/wiki.jsonl": ["truncate"],  # and the server ignores Range for it
    }
    server.faults = {rel: list(f) for rel, f in faults.items()}
    server.ignore_range.add("wikipedia/wiki.jsonl")
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"

    dl.download(dest, urls_path=str(urls), num_connections=4, retries=3)

    assert _tree(dest) == CORPUS  # byte for byte, nested layout, no .part left over
    assert all(not pending for pending in server.faults.values())  # every fault was hit
    # After a truncated body the next request resumes where the data stopped.
    c4 = server.gets("c4/c4-train.00000-of-01024.jsonl")
    assert len(c4) == 3 and c4[0]["range"] is None
    assert c4[1]["range"] == f"bytes={c4[0]['sent']}-"
    assert c4[2]["range"] == f"bytes={c4[0]['sent'] + c4[1]['sent']}-"
    assert sum(e["sent"] for e in c4) == len(CORPUS["c4/c4-train.00000-of-01024.jsonl"])
    # A server that ignores Range answers 200: the file restarts from 0 and is still right.
    wiki = server.gets("wikipedia/wiki.jsonl")
    assert len(wiki) == 2 and wiki[1]["range"] is not None
    assert wiki[1]["sent"] == len(CORPUS["wikipedia/wiki.jsonl"])
    err = capsys.readouterr().err
    assert f"downloaded {len(CORPUS)} files" in err and "0 failed" in err


def test_resumes_existing_part_with_range(server, tmp_path):
    rel = "common_crawl/2019-30/en_middle_0001.json.gz.dedup.classifier.jsonl.zst"
    data = CORPUS[rel]
    urls = _write_url_lists(tmp_path / "urls", server, {rel: data})
    dest = tmp_path / "data"
    part = dest / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])

    dl.download(dest, urls_path=str(urls), retries=0)

    assert (dest / rel).read_bytes() == data
    assert not part.exists()
    (get,) = server.gets(rel)
    assert get["range"] == "bytes=1000-"
    assert get["sent"] == len(data) - 1000


def test_rerun_downloads_nothing(server, tmp_path):
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"
    dl.download(dest, urls_path=str(urls))
    assert _tree(dest) == CORPUS
    mtimes = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}

    server.clear_log()
    dl.download(dest, urls_path=str(urls))
    assert server.gets() == []  # sizes were checked with HEAD only
    assert {e["method"] for e in server.log} == {"HEAD"}

    # With known sha256 sums the check is local: no request at all.
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(_sha256sum(CORPUS))
    server.clear_log()
    dl.download(dest, urls_path=str(urls), sha256_path=sums)
    assert server.log == []
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == mtimes


def test_incomplete_or_corrupt_final_file_is_downloaded_again(server, tmp_path):
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"
    dl.download(dest, urls_path=str(urls))
    short, corrupt = "book/book.jsonl", "github/filtered_0a1b2c3d4e5f.sampled.jsonl"
    (dest / short).write_bytes(CORPUS[short][:-10])  # wrong size: caught by HEAD
    (dest / corrupt).write_bytes(b"x" * len(CORPUS[corrupt]))  # right size, wrong sha256
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(_sha256sum({corrupt: CORPUS[corrupt]}))

    server.clear_log()
    dl.download(dest, urls_path=str(urls), sha256_path=sums)
    assert _tree(dest) == CORPUS
    assert sorted(e["rel"] for e in server.gets()) == sorted([short, corrupt])


def test_permanent_failure_is_reported_and_others_complete(server, tmp_path):
    bad = "c4/c4-train.00001-of-01024.jsonl"
    server.always_fail.add(bad)
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"

    with pytest.raises(PajamaError) as excinfo:
        dl.download(dest, urls_path=str(urls), retries=2)

    message = str(excinfo.value)
    assert server.url(bad) in message and "HTTP 500" in message
    assert "\n" not in message
    assert len(server.gets(bad)) == 3  # first try + 2 retries
    expected = {rel: data for rel, data in CORPUS.items() if rel != bad}
    assert _tree(dest) == expected  # nothing of the failed file, all the others complete

    # Once the server recovers, a rerun fetches only the missing file.
    server.always_fail.clear()
    server.clear_log()
    dl.download(dest, urls_path=str(urls))
    assert _tree(dest) == CORPUS
    assert [e["rel"] for e in server.gets()] == [bad]


def test_sha256_mismatch_is_detected(server, tmp_path):
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"
    bad = "stackexchange/stackexchange.jsonl"
    sums_file = tmp_path / "SHA256SUMS"
    sums_file.write_text(_sha256sum(CORPUS).replace(hashlib.sha256(CORPUS[bad]).hexdigest(), "0" * 64))

    with pytest.raises(PajamaError, match="sha256 mismatch") as excinfo:
        dl.download(dest, urls_path=str(urls), sha256_path=sums_file)
    assert server.url(bad) in str(excinfo.value)
    assert len(server.gets(bad)) == 1  # a fresh full download that mismatches is not retried
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()
    assert _tree(dest) == {rel: data for rel, data in CORPUS.items() if rel != bad}


def test_sha256_mismatch_after_resume_restarts_once(server, tmp_path):
    rel = "book/book.jsonl"
    data = CORPUS[rel]
    urls = _write_url_lists(tmp_path / "urls", server, {rel: data})
    dest = tmp_path / "data"
    part = dest / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage!" * 100)  # a stale partial file from another version
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(data).hexdigest()} *./{rel}\n")

    dl.download(dest, urls_path=str(urls), sha256_path=sums)

    assert (dest / rel).read_bytes() == data
    gets = server.gets(rel)
    assert [g["range"] for g in gets] == ["bytes=800-", None]


def test_subsets_filter(server, tmp_path):
    urls = _write_url_lists(tmp_path / "urls", server)
    dest = tmp_path / "data"
    dl.download(dest, subsets=["common_crawl", "arxiv"], urls_path=str(urls))
    expected = {rel: d for rel, d in CORPUS.items() if rel.split("/")[0] in ("common_crawl", "arxiv")}
    assert _tree(dest) == expected
    assert {e["rel"].split("/")[0] for e in server.gets()} == {"common_crawl", "arxiv"}


def test_single_url_list_over_http(server, tmp_path):
    dest = tmp_path / "data"
    dl.download(dest, subsets=["c4", "book"], urls_path=f"http://127.0.0.1:{server.server_address[1]}/urls.txt")
    assert _tree(dest) == {rel: d for rel, d in CORPUS.items() if rel.split("/")[0] in ("c4", "book")}


def test_single_local_url_file(server, tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_text("# all files\n\n" + server.urls_txt)
    dest = tmp_path / "data"
    dl.download(dest, subsets=["wikipedia"], urls_path=str(listing))
    assert _tree(dest) == {"wikipedia/wiki.jsonl": CORPUS["wikipedia/wiki.jsonl"]}


def test_unknown_subset(tmp_path):
    with pytest.raises(PajamaError, match="unknown subset 'reddit'") as excinfo:
        dl.download(tmp_path / "data", subsets=["arxiv", "reddit"], urls_path=str(tmp_path))
    for name in dl.SUBSETS:
        assert name in str(excinfo.value)
    assert not (tmp_path / "data").exists()


def test_missing_subset_list_and_missing_urls_path(server, tmp_path):
    urls = _write_url_lists(tmp_path / "urls", server, {"book/book.jsonl": CORPUS["book/book.jsonl"]})
    with pytest.raises(PajamaError, match=r"arxiv\.txt.*no URL list for subset 'arxiv'"):
        dl.download(tmp_path / "data", subsets=["arxiv"], urls_path=str(urls))
    with pytest.raises(PajamaError, match="URL list not found"):
        dl.download(tmp_path / "data", urls_path=str(tmp_path / "nope"))


def test_bad_url_line_names_file_and_line(server, tmp_path):
    urls = tmp_path / "urls"
    urls.mkdir()
    (urls / "arxiv.txt").write_text(f"{server.url('arxiv/a.jsonl')}\n{server.base}/arxiv/../../etc/passwd\n")
    with pytest.raises(PajamaError, match=r"arxiv\.txt:2: unsafe path"):
        dl.download(tmp_path / "data", urls_path=str(urls))
    assert server.log == []


def test_416_for_complete_part_and_oversized_part(server, tmp_path):
    server.head_allowed = False  # sizes are only learnt from the GET answers
    complete, oversized = "book/book.jsonl", "wikipedia/wiki.jsonl"
    files = {complete: CORPUS[complete], oversized: CORPUS[oversized]}
    urls = _write_url_lists(tmp_path / "urls", server, files)
    dest = tmp_path / "data"
    for rel, data in [(complete, files[complete]), (oversized, files[oversized] + b"extra bytes")]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / (rel + ".part")).write_bytes(data)

    dl.download(dest, urls_path=str(urls))

    assert _tree(dest) == files
    assert [(g["range"], g["status"], g["sent"]) for g in server.gets(complete)] == [
        (f"bytes={len(files[complete])}-", 416, 0)
    ]
    assert [(g["status"], g["range"] is None) for g in server.gets(oversized)] == [(416, False), (None, True)]


def test_timeout_is_retried(server, tmp_path):
    rel = "arxiv/arxiv_023827cd-7ee8-42e6-aa7b-661731f4c70f.jsonl"
    server.faults = {rel: ["stall"]}
    server.stall_seconds = 1.0
    urls = _write_url_lists(tmp_path / "urls", server, {rel: CORPUS[rel]})
    dest = tmp_path / "data"
    dl.download(dest, urls_path=str(urls), timeout=0.2, retries=1)
    assert (dest / rel).read_bytes() == CORPUS[rel]
    first, second = server.gets(rel)
    # resumed from what had been written (a partly filled read buffer is lost on timeout)
    resumed_at = int(second["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= first["sent"]
    assert second["sent"] == len(CORPUS[rel]) - resumed_at


def test_ctrl_c_keeps_partial_file(server, tmp_path):
    rel = "c4/c4-train.00000-of-01024.jsonl"
    server.faults = {rel: ["stall"]}
    server.stall_seconds = 2.0
    urls = _write_url_lists(tmp_path / "urls", server, {rel: CORPUS[rel]})
    dest = tmp_path / "data"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # a real Ctrl-C
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            dl.download(dest, urls_path=str(urls), timeout=0.5)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 1.5  # the worker stopped at its read timeout at worst
    assert not (dest / rel).exists()
    kept = (dest / (rel + ".part")).read_bytes()
    assert 0 < len(kept) < len(CORPUS[rel]) and CORPUS[rel].startswith(kept)

    dl.download(dest, urls_path=str(urls))  # and the next run resumes it
    assert (dest / rel).read_bytes() == CORPUS[rel]
    assert server.gets(rel)[-1]["range"] == f"bytes={len(kept)}-"


def test_missing_file_fails_without_retries(server, tmp_path):
    urls = tmp_path / "urls"
    urls.mkdir()
    (urls / "github.txt").write_text(server.url("github/missing.jsonl") + "\n")
    with pytest.raises(PajamaError, match=r"github/missing\.jsonl: HTTP 404"):
        dl.download(tmp_path / "data", urls_path=str(urls), retries=5)
    assert len(server.log) == 1


def test_invalid_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PajamaError, match="num_connections"):
        dl.download(tmp_path / "data", num_connections=0, urls_path=str(tmp_path))
    with pytest.raises(PajamaError, match="not a directory"):
        dl.download(tmp_path / "file", urls_path=str(tmp_path))
    bad = tmp_path / "SUMS"
    bad.write_text("not a checksum line\n")
    (tmp_path / "urls").mkdir()
    (tmp_path / "urls" / "book.txt").write_text("http://127.0.0.1:9/v1/book/book.jsonl\n")
    with pytest.raises(PajamaError, match=r"SUMS:1: expected"):
        dl.download(tmp_path / "data", urls_path=str(tmp_path / "urls"), sha256_path=bad)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://data.together.xyz/redpajama-data-1T/v1.0.0/common_crawl/2019-30/"
            "en_head_0000.json.gz.dedup.classifier.jsonl.zst",
            ("common_crawl", "common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst"),
        ),
        (
            "https://data.together.xyz/redpajama-data-1T/v1.0.0/arxiv/arxiv_023827cd-7ee8-42e6-aa7b-661731f4c70f.jsonl",
            ("arxiv", "arxiv/arxiv_023827cd-7ee8-42e6-aa7b-661731f4c70f.jsonl"),
        ),
        ("http://host:8080/x/book/book.jsonl?sig=abc", ("book", "book/book.jsonl")),
        ("http://host/v1/c4/c4-train%2E00000-of-01024.jsonl", ("c4", "c4/c4-train.00000-of-01024.jsonl")),
    ],
)
def test_url_relative_path(url, expected):
    subset, rel = dl.url_relative_path(url)
    assert (subset, rel) == (expected[0], PurePosixPath(expected[1]))


@pytest.mark.parametrize(
    "url",
    [
        "http://host/v1/arxiv/../../etc/passwd",
        "http://host/v1/arxiv/%2e%2e/%2E%2E/etc/passwd",
        "http://host/v1/arxiv/a%2F..%2F..%2Fx.jsonl",
        "http://host/v1/arxiv/..%5C..%5Cx.jsonl",
        "http://host/v1/../arxiv/x.jsonl",
        "http://host/v1/arxiv/./x.jsonl",
        "http://host/v1/arxiv/",
        "http://host/v1/arxiv",
        "http://host/v1/reddit/x.jsonl",
        "ftp://host/v1/arxiv/x.jsonl",
        "file:///v1/arxiv/x.jsonl",
        "/v1/arxiv/x.jsonl",
        "http://host/v1/arxiv/x .jsonl",
        "http://host:99999/arxiv/x.jsonl",
    ],
)
def test_url_relative_path_rejects(url):
    with pytest.raises(ValueError):
        dl.url_relative_path(url)


def test_v2_files_missing_upstream_are_recorded_and_the_download_succeeds(server, tmp_path, capsys):
    import gzip

    def gz(text: str) -> bytes:
        return gzip.compress(text.encode(), mtime=0)

    served = {
        "documents/2023-06/0000/en_head.json.gz": gz('{"raw_content": "a"}\n'),
        "quality_signals/2023-06/0000/en_head.signals.json.gz": gz('{"id": "x"}\n'),
        "duplicates/2023-06/0000/en_head.duplicates.parquet": b"PAR1 0000",
        "documents/2023-06/0001/en_head.json.gz": gz('{"raw_content": "b"}\n'),
        "duplicates/2023-06/0001/en_head.duplicates.parquet": b"PAR1 0001",
        "documents/2023-06/0002/en_middle.json.gz": gz('{"raw_content": "c"}\n'),
        "quality_signals/2023-06/0002/en_middle.signals.json.gz": gz('{"id": "y"}\n'),
    }
    server.files = dict(served)
    listing = tmp_path / "en-2023-06-head_middle.txt"
    listing.write_text("2023-06/0000/en_head\n2023-06/0001/en_head\n2023-06/0002/en_middle\n")
    # Upstream's list names its files by their published URL, whatever mirror is downloaded from.
    missing_list = tmp_path / "missing-duplicates.txt"
    missing_list.write_text("https://data.together.xyz/redpajama-data-v2/v1.0.0/duplicates/2023-06/0002/en_middle.duplicates.parquet\n")
    dest = tmp_path / "rpv2"
    dl.download(dest, listings=[listing], base_url=server.base, missing_lists=[missing_list], retries=3)

    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file() and p.name != dl.MISSING_UPSTREAM} == served
    assert (dest / dl.MISSING_UPSTREAM).read_text().splitlines() == [
        "duplicates/2023-06/0002/en_middle.duplicates.parquet",  # on the list: never asked for
        "quality_signals/2023-06/0001/en_head.signals.json.gz",  # HTTP 404
    ]
    assert not [e for e in server.log if e["rel"] == "duplicates/2023-06/0002/en_middle.duplicates.parquet"]
    assert len([e for e in server.log if e["rel"] == "quality_signals/2023-06/0001/en_head.signals.json.gz"]) == 1  # a 404 is not retried
    err = capsys.readouterr().err
    assert "2 file(s) missing upstream (1 quality_signals, 1 duplicates)" in err and "HTTP 404" in err
    assert "0 failed, 2 missing upstream" in err

    # Once the file is published, a rerun fetches it and the record goes.
    server.files["quality_signals/2023-06/0001/en_head.signals.json.gz"] = gz('{"id": "z"}\n')
    dl.download(dest, listings=[listing], base_url=server.base, missing_lists=[missing_list], retries=3)
    assert (dest / "quality_signals/2023-06/0001/en_head.signals.json.gz").is_file()
    assert (dest / dl.MISSING_UPSTREAM).read_text().splitlines() == ["duplicates/2023-06/0002/en_middle.duplicates.parquet"]

    # Anything else that fails still fails the download.
    server.always_fail.add("documents/2023-06/0001/en_head.json.gz")
    (dest / "documents/2023-06/0001/en_head.json.gz").unlink()
    with pytest.raises(PajamaError, match=r"1 of 8 files failed to download.*en_head.json.gz: HTTP 500"):
        dl.download(dest, listings=[listing], base_url=server.base, missing_lists=[missing_list], retries=0)
    bad = tmp_path / "bad-missing.txt"
    bad.write_text("https://data.together.xyz/redpajama-data-v2/v1.0.0/listings/en-2023-06-head_middle.txt\n")
    with pytest.raises(PajamaError, match=r"bad-missing.txt:1: .* names no RedPajama-Data-V2 file"):
        dl.download(dest, listings=[listing], base_url=server.base, missing_lists=[bad])
    with pytest.raises(PajamaError, match="--missing_lists .* goes with --listings"):
        dl.download(dest, urls_path=str(listing), missing_lists=[missing_list])
