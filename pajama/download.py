"""Download the RedPajama-Data-1T corpus, resumably and in parallel.

The corpus is published as lists of URLs (``urls.txt`` with every file, or one
``<subset>.txt`` per subset). Each URL is saved under the destination at the part of its
path that starts at the subset folder, so
``.../v1.0.0/common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst`` lands in
``DEST/common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst``.

Every file is written to ``<name>.part`` first and renamed only once it is complete (its
size matches the server's, and its sha256 when one is known), so an interrupted run can
simply be started again: complete files are skipped and partial ones are resumed with HTTP
``Range`` requests.

RedPajama-Data-V2 is published as listings of base tags (``2023-06/0000/en_head``, one per
line); ``--listings`` fetches, for each, the documents, quality signals and duplicate list
(documents only for the tail partition, which has neither) from ``--base_url`` into V2's
layout (see :mod:`pajama.corpora.redpajama_v2`). A documents or signals file that downloads
whole but is corrupt gzip upstream is kept and reported: prepare records its damage and keeps
the documents before it. Some V2 files are missing upstream (many duplicate lists among them):
one that answers 404, or that upstream's lists of missing files (``urls/missing-*.txt``, given
with ``--missing_lists``) name, is recorded in ``missing_upstream.txt`` and reported, and does
not fail the download; prepare notes each missing signals file or duplicate list it meets.
A 404 on a RedPajama-Data-1T file stays an error.

Only the standard library is used for HTTP (``urllib.request``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from tqdm import tqdm

from pajama import PajamaError, __version__
from pajama.chunks import write_atomic
from pajama.progress import progress_bar
from pajama.corpora import SUBSETS

__all__ = ["DEFAULT_URLS", "MISSING_UPSTREAM", "V2_BASE_URL", "download", "url_relative_path", "v2_relative_paths"]

#: Default source of URLs: the official list of every file of RedPajama-Data-1T.
DEFAULT_URLS = "https://data.together.xyz/redpajama-data-1T/v1.0.0/urls.txt"
#: Where RedPajama-Data-V2's files are, below which its layout starts.
V2_BASE_URL = "https://data.together.xyz/redpajama-data-v2/v1.0.0"
#: RedPajama-Data-V2: the record, in the destination, of the files missing upstream (one relative path a line).
MISSING_UPSTREAM = "missing_upstream.txt"
_V2_FOLDERS = ("documents", "quality_signals", "duplicates")
_V2_TAG = re.compile(r"(?P<snapshot>\d{4}-\d{2})/(?P<shard>\d{4})/(?P<lang>[a-z]{2})_(?P<part>head|middle|tail)")

#: First retry delay in seconds; it doubles after every further failure (with jitter).
BACKOFF_BASE = 1.0
#: Longest delay between two attempts, in seconds (also caps a server's Retry-After).
BACKOFF_MAX = 60.0
#: Bytes read from the network per read() call.
CHUNK_SIZE = 1 << 20
#: Suffix of the files being downloaded.
PART_SUFFIX = ".part"

_USER_AGENT = f"pajama/{__version__}"
_RETRY_STATUSES = frozenset({408, 425, 429})
# Everything a request or a read can raise for network reasons: URLError (refused, DNS,
# ...), HTTPException (IncompleteRead, RemoteDisconnected, BadStatusLine, ...) and
# OSError (resets, timeouts, TLS errors).
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
_SHA256_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")

_T = TypeVar("_T")


def download(
    destination_path: Path,
    subsets: list[str] | None = None,
    urls_path: str | None = None,
    num_connections: int = 8,
    retries: int = 5,
    timeout: float = 60.0,
    sha256_path: Path | None = None,
    listings: list[Path] | Path | None = None,
    base_url: str = V2_BASE_URL,
    missing_lists: list[Path] | Path | None = None,
) -> None:
    """Download RedPajama-Data-1T (or, with --listings, RedPajama-Data-V2) into DESTINATION_PATH, keeping the corpus layout.

    Each URL is saved under DESTINATION_PATH at its path from the subset folder on, e.g.
    ``common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst``. Files are
    fetched several at a time, written to ``<file>.part`` and renamed only when complete
    and verified (size against the server's length, and sha256 when known). Running the
    command again resumes: complete files are skipped and ``.part`` files continue where
    they stopped (HTTP Range requests). Network errors, timeouts, HTTP 429/5xx answers and
    truncated bodies are retried with exponential backoff. Files that still fail are
    reported at the end (the command then fails; everything completed is kept).
    RedPajama-Data-V2 files that are missing upstream (HTTP 404, or named by --missing_lists)
    are recorded in ``DESTINATION_PATH/missing_upstream.txt`` and reported, and do not fail
    the command.

    Args:
        destination_path: Directory to download into (created if missing).
        subsets: Subsets to download (arxiv, book, c4, common_crawl, github, stackexchange,
            wikipedia). Default: all of them.
        urls_path: Where the URLs come from: an http(s) URL or a local file listing URLs
            (one per line, any subsets), or a local directory of ``<subset>.txt`` lists.
            Default: the official list,
            https://data.together.xyz/redpajama-data-1T/v1.0.0/urls.txt.
        num_connections: Number of files downloaded at the same time.
        retries: Retries per file after a failed attempt (an attempt that received new
            data resets the count).
        timeout: Seconds to wait for a connection or for data before an attempt fails.
        sha256_path: Optional checksum file of ``<sha256>  <relative/path>`` lines (as
            written by sha256sum, paths relative to DESTINATION_PATH); files listed in it
            are verified against their sha256.
        listings: RedPajama-Data-V2: listing files of base tags, one per line
            (``2023-06/0000/en_head``); each fetches ``documents/<tag>.json.gz``,
            ``quality_signals/<tag>.signals.json.gz`` and ``duplicates/<tag>.duplicates.parquet``
            (a tail tag: the documents only).
        base_url: RedPajama-Data-V2: the URL its layout starts below (with --listings).
        missing_lists: RedPajama-Data-V2: upstream's lists of files missing upstream
            (``urls/missing-documents.txt``, ``missing-signals.txt``, ``missing-duplicates.txt``
            of its Hugging Face repository: URLs, or paths from ``documents/``,
            ``quality_signals/`` or ``duplicates/`` on, one a line); those files are not asked for.
    """
    if num_connections < 1:
        raise PajamaError(f"num_connections must be at least 1, got {num_connections}")
    if retries < 0:
        raise PajamaError(f"retries must be 0 or more, got {retries}")
    if not timeout > 0:
        raise PajamaError(f"timeout must be a positive number of seconds, got {timeout}")
    wanted = _check_subsets(subsets)
    dest = Path(destination_path).expanduser()
    if dest.exists() and not dest.is_dir():
        raise PajamaError(f"{dest}: the destination exists and is not a directory")

    ctx = _Context(timeout=float(timeout), retries=int(retries))
    if listings:
        if wanted or urls_path is not None:
            raise PajamaError("--listings downloads RedPajama-Data-V2: it takes no --subsets or --urls_path (RedPajama-Data-1T's)")
        items = _load_v2_items(listings, base_url)
    elif missing_lists:
        raise PajamaError("--missing_lists names RedPajama-Data-V2 files: it goes with --listings")
    else:
        items = _load_items(ctx, urls_path, wanted)
    missing: dict[str, str] = {}  # V2 files missing upstream: relative path -> why we know
    if missing_lists:
        listed = _read_missing_lists(missing_lists)
        missing = {item.relpath.as_posix(): "on a list of files missing upstream" for item in items if item.relpath.as_posix() in listed}
        items = [item for item in items if item.relpath.as_posix() not in missing]
    if sha256_path is not None:
        hashes = _read_sha256_file(Path(sha256_path).expanduser())
        for item in items:
            item.sha256 = hashes.get(item.relpath.as_posix())
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PajamaError(f"{dest}: cannot create the destination directory: {_oserror(exc)}") from None

    failed: dict[str, str] = {}

    # Phase 1: find out which files are complete already and how large the others are.
    checking = progress_bar(total=len(items), desc="checking", unit="file", leave=False, dynamic_ncols=True)
    ctx.bar = checking
    todo: list[_Item] = []
    complete = 0
    for item, outcome in _run_pool(ctx, num_connections, items, lambda it: _probe(ctx, it, dest)):
        if listings and isinstance(outcome, _Missing):
            missing[item.relpath.as_posix()] = str(outcome)
        elif isinstance(outcome, BaseException):
            failed[item.url] = str(outcome)
            ctx.write(f"failed: {item.url}: {outcome}")
        elif outcome:
            complete += 1
        else:
            todo.append(item)
        checking.update(1)
    checking.close()

    # Phase 2: download what is missing, with one bar over all bytes.
    total = sum(item.size or 0 for item in todo)
    on_disk = sum(_file_size(_part_path(dest / item.relpath)) for item in todo)
    _log(
        f"{len(items)} files selected: {complete} complete, {len(todo)} to download "
        f"({_human(max(total - on_disk, 0))} left)" + (f", {len(failed)} failed" if failed else "")
    )
    bar = progress_bar(
        total=total,
        initial=on_disk,
        desc="downloading",
        unit="B",
        unit_scale=True,
        dynamic_ncols=True,
        smoothing=0.05,
        disable=not todo,
    )
    ctx.bar = bar
    done = 0
    bar.set_postfix_str(f"files 0/{len(todo)}")
    for item, outcome in _run_pool(ctx, num_connections, todo, lambda it: _download_one(ctx, it, dest)):
        if listings and isinstance(outcome, _Missing):
            missing[item.relpath.as_posix()] = str(outcome)
        elif isinstance(outcome, BaseException):
            failed[item.url] = str(outcome)
            ctx.write(f"failed: {item.url}: {outcome}")
        else:
            done += 1
        bar.set_postfix_str(
            f"files {done}/{len(todo)}" + (f", {len(failed)} failed" if failed else ""), refresh=True
        )
    bar.close()

    if listings:
        _report_corrupt_gzip(dest, [item for item in todo if item.url not in failed and item.relpath.as_posix() not in missing])
        _record_missing(dest, missing)
    _log(
        f"downloaded {done} files ({_human(ctx.received)} received), skipped {complete} already "
        f"complete, {len(failed)} failed" + (f", {len(missing)} missing upstream" if listings else "") + f"; destination: {dest}"
    )
    if failed:
        shown = list(failed.items())[:20]
        details = "; ".join(f"{url}: {error}" for url, error in shown)
        more = f"; and {len(failed) - len(shown)} more (listed above)" if len(failed) > len(shown) else ""
        raise PajamaError(
            f"{len(failed)} of {len(items)} files failed to download (completed files are kept; "
            f"run the command again to resume): {details}{more}"
        )


def url_relative_path(url: str) -> tuple[str, PurePosixPath]:
    """Return ``(subset, relative path)`` under which ``url`` is stored.

    The relative path is the URL path from the first component that names a subset on,
    e.g. ``common_crawl/2019-30/en_head_0000.json.gz.dedup.classifier.jsonl.zst``.
    Raises ValueError for anything that is not a plain http(s) URL of a file inside a
    subset folder, in particular for ``.`` / ``..`` components (also percent-encoded),
    encoded slashes or backslashes, and NUL bytes.
    """
    if not url or any(ch.isspace() for ch in url):
        raise ValueError(f"invalid URL {url!r}: it is empty or contains whitespace")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"invalid port in URL: {url}") from None
    components = [urllib.parse.unquote(c) for c in parts.path.split("/")[1:]]
    for comp in components:
        if comp in (".", "..") or any(ch in comp for ch in "/\\\0"):
            raise ValueError(f"unsafe path in URL {url}: component {comp!r} is not allowed")
    start = next((i for i, comp in enumerate(components) if comp in SUBSETS), None)
    if start is None:
        raise ValueError(
            f"cannot tell the subset of {url}: no path component is one of {', '.join(SUBSETS)}"
        )
    rel = components[start:]
    if len(rel) < 2 or "" in rel:
        raise ValueError(f"URL {url} does not name a file inside the {rel[0]} folder")
    return rel[0], PurePosixPath(*rel)


def v2_relative_paths(tag: str) -> list[PurePosixPath]:
    """The files of a RedPajama-Data-V2 base tag (``2023-06/0000/en_head``): its documents,
    and unless it is of the tail partition, its quality signals and duplicate list. Raises
    ValueError for anything that is not such a tag."""
    match = _V2_TAG.fullmatch(tag)
    if match is None:
        raise ValueError(f"{tag!r} is not a RedPajama-Data-V2 base tag such as 2023-06/0000/en_head (<snapshot>/<shard>/<language>_<head|middle|tail>)")
    paths = [PurePosixPath(f"documents/{tag}.json.gz")]
    if match["part"] != "tail":  # the tail has no signals or duplicate lists
        paths += [PurePosixPath(f"quality_signals/{tag}.signals.json.gz"), PurePosixPath(f"duplicates/{tag}.duplicates.parquet")]
    return paths


def _load_v2_items(listings: list[Path], base_url: str) -> list[_Item]:
    if isinstance(listings, (str, os.PathLike)):
        listings = [listings]
    if not re.match(r"https?://", base_url or "", re.IGNORECASE):
        raise PajamaError(f"--base_url {base_url!r}: expected an http(s) URL")
    base = base_url.rstrip("/")
    items: dict[PurePosixPath, _Item] = {}
    for listing in listings:
        path = Path(listing).expanduser()
        if not path.is_file():
            raise PajamaError(f"{path}: listing not found")
        for lineno, line in enumerate(_read_text(path, "the listing").splitlines(), 1):
            tag = line.strip()
            if not tag or tag.startswith("#"):
                continue
            try:
                rels = v2_relative_paths(tag)
            except ValueError as exc:
                raise PajamaError(f"{path}:{lineno}: {exc}") from None
            for rel in rels:
                items.setdefault(rel, _Item(url=f"{base}/{rel.as_posix()}", subset=rel.parts[0], relpath=rel))
    if not items:
        raise PajamaError(f"{', '.join(map(str, listings))}: no base tags listed")
    return list(items.values())


def _read_missing_lists(paths: list[Path] | Path) -> set[str]:
    """The V2 files that upstream's lists name as missing, as relative paths
    (``duplicates/2023-06/0000/en_head.duplicates.parquet``), whatever URL base the lists use."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = set()
    for listing in paths:
        path = Path(listing).expanduser()
        if not path.is_file():
            raise PajamaError(f"{path}: list of missing files not found")
        for lineno, line in enumerate(_read_text(path, "the list of missing files").splitlines(), 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            parts = urllib.parse.urlsplit(entry).path.split("/") if re.match(r"https?://", entry, re.IGNORECASE) else entry.split("/")
            start = next((i for i, part in enumerate(parts) if part in _V2_FOLDERS), None)
            if start is None:
                raise PajamaError(f"{path}:{lineno}: {entry[:200]!r} names no RedPajama-Data-V2 file (expected a URL or path with {', '.join(_V2_FOLDERS)}/ in it)")
            found.add("/".join(parts[start:]))
    return found


def _record_missing(dest: Path, missing: dict[str, str]) -> None:
    """Write the files missing upstream to ``MISSING_UPSTREAM`` (or remove a stale record) and name them."""
    record = dest / MISSING_UPSTREAM
    if not missing:
        record.unlink(missing_ok=True)
        return
    write_atomic(record, "".join(f"{rel}\n" for rel in sorted(missing)).encode("utf-8"))
    by_folder = {folder: sum(rel.startswith(folder + "/") for rel in missing) for folder in _V2_FOLDERS}
    counts = ", ".join(f"{n} {folder}" for folder, n in by_folder.items() if n)
    shown = "; ".join(f"{rel} ({why})" for rel, why in sorted(missing.items())[:5])
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    _log(
        f"{len(missing)} file(s) missing upstream ({counts}), recorded in {record}: {shown}{more}. "
        "prepare notes each: a missing duplicate list keeps its documents undeduplicated, a missing signals file leaves its documents out when filtering"
    )


def _report_corrupt_gzip(dest: Path, items: list[_Item]) -> None:
    """Check the gzip files just downloaded to the end: some of RedPajama-Data-V2's are
    corrupt upstream, where downloading again does not help. They are kept and named: prepare
    records the damage and keeps every document before it."""
    import zlib

    for item in items:
        final = dest / item.relpath
        if not final.name.endswith(".gz") or not final.is_file():
            continue
        problem = None
        try:
            with open(final, "rb") as f:
                decompressor = zlib.decompressobj(wbits=31)
                fed = False
                while data := f.read(CHUNK_SIZE):
                    while data:
                        decompressor.decompress(data)
                        fed = True
                        if decompressor.eof:
                            data, decompressor, fed = decompressor.unused_data, zlib.decompressobj(wbits=31), False
                        else:
                            data = b""
                if fed:
                    problem = "truncated gzip data"
        except zlib.error as exc:
            problem = f"corrupt gzip data ({exc})"
        except OSError as exc:
            problem = f"cannot read: {_oserror(exc)}"
        if problem:
            _log(f"{final}: {problem}, as served; kept: prepare records it and keeps the documents before the damage")


# --------------------------------------------------------------------------------------
# Internals


class _Retryable(Exception):
    """A failed attempt that is worth retrying (network trouble, 5xx, truncated body)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    """A failure that retrying will not fix (404, local disk error, sha256 mismatch)."""


class _Missing(_Permanent):
    """The server has no such file (HTTP 404 or 410)."""


class _Stopped(Exception):
    """The run is being interrupted (Ctrl-C in the main thread)."""


@dataclass
class _Item:
    url: str
    subset: str
    relpath: PurePosixPath
    sha256: str | None = None
    size: int | None = None  # the server's length, when known


@dataclass
class _Context:
    timeout: float
    retries: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bar: tqdm | None = None
    received: int = 0
    _local: threading.local = field(default_factory=threading.local)

    @property
    def opener(self) -> urllib.request.OpenerDirector:
        opener = getattr(self._local, "opener", None)
        if opener is None:
            opener = self._local.opener = urllib.request.build_opener()
        return opener

    def advance(self, n: int) -> None:
        """Count n bytes received and written to a .part file."""
        with self.lock:
            self.received += n
            if self.bar is not None:
                self.bar.update(n)

    def grow(self, n: int) -> None:
        """Add n bytes to the amount left to download (a size learnt late, a restart)."""
        if n and self.bar is not None:
            with self.lock:
                self.bar.total = (self.bar.total or 0) + n
                self.bar.refresh()

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(f"pajama: {message}", file=sys.stderr)
        else:
            _log(message)


def _log(message: str) -> None:
    print(f"pajama: {message}", file=sys.stderr, flush=True)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_subsets(subsets: Sequence[str] | None) -> tuple[str, ...] | None:
    if not subsets:
        return None
    if isinstance(subsets, str):
        subsets = [subsets]
    names = [s.strip() for s in subsets]
    unknown = [s for s in names if s not in SUBSETS]
    if unknown:
        raise PajamaError(
            f"unknown subset{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known subsets: {', '.join(SUBSETS)}"
        )
    return tuple(dict.fromkeys(names))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)


def _run_pool(
    ctx: _Context, workers: int, items: list[_Item], fn: Callable[[_Item], _T]
) -> Iterator[tuple[_Item, _T | _Permanent]]:
    """Run fn over items in a thread pool; yield (item, result or _Permanent error).

    Anything else raised by a worker (KeyboardInterrupt in the main thread, a bug) stops
    the other workers at their next chunk and is re-raised.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pajama-download") as pool:
        futures = {pool.submit(fn, item): item for item in items}
        try:
            for future in as_completed(futures):
                item = futures[future]
                try:
                    yield item, future.result()
                except _Permanent as exc:
                    yield item, exc
        except BaseException:
            ctx.stop.set()
            for future in futures:
                future.cancel()
            raise


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff will do


def _retrying(ctx: _Context, attempt: Callable[[], _T], progress: Callable[[], int] | None = None) -> _T:
    """Call attempt() until it succeeds, retrying _Retryable failures with backoff.

    Up to ctx.retries consecutive failures are retried; a failure after which progress()
    is higher than before (new bytes on disk) starts the count again.
    """
    failures = 0
    while True:
        if ctx.stop.is_set():
            raise _Stopped
        before = progress() if progress else 0
        try:
            return attempt()
        except _Retryable as exc:
            if progress is not None and progress() > before:
                failures = 0
            failures += 1
            if failures > ctx.retries:
                attempts = f"{failures} attempt{'s' if failures > 1 else ''}"
                raise _Permanent(f"{exc} (gave up after {attempts} in a row)") from None
            delay = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX) * random.uniform(0.5, 1.0)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, BACKOFF_MAX))
            if ctx.stop.wait(delay):
                raise _Stopped from None


def _describe(exc: BaseException, timeout: float) -> str:
    """A one-line description of a network error."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        if not isinstance(exc.reason, BaseException):
            return _one_line(f"connection failed: {exc.reason}")
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early ({len(exc.partial)} bytes read, {exc.expected} more expected)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return _one_line(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


def _open(ctx: _Context, url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """Send a request; return the response (an HTTPError for 4xx/5xx answers)."""
    request = urllib.request.Request(
        url,
        method=method,
        headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **(headers or {})},
    )
    try:
        return ctx.opener.open(request, timeout=ctx.timeout)
    except urllib.error.HTTPError as exc:
        return exc
    except _NETWORK_ERRORS as exc:
        raise _Retryable(_describe(exc, ctx.timeout)) from None


def _close(response) -> None:
    try:
        response.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        pass


def _check_status(response, status: int, ok: Sequence[int] = (200, 206)) -> None:
    if status in ok:
        return
    reason = getattr(response, "reason", "") or ""
    message = _one_line(f"HTTP {status} {reason}")
    if status in (404, 410):
        raise _Missing(message)
    if status in _RETRY_STATUSES or (500 <= status < 600 and status != 501):
        raise _Retryable(message, retry_after=_retry_after(response.headers))
    raise _Permanent(message)


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length") if headers is not None else None
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


# --------------------------------------------------------------------------------------
# URL lists and checksums


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PajamaError(f"{path}: cannot read {what}: {_oserror(exc)}") from None
    except UnicodeDecodeError as exc:
        raise PajamaError(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _fetch_text(ctx: _Context, url: str) -> str:
    def attempt() -> bytes:
        response = _open(ctx, url)
        try:
            status = response.getcode()
            _check_status(response, status, ok=(200,))
            try:
                return response.read()  # raises IncompleteRead on a truncated body
            except _NETWORK_ERRORS as exc:
                raise _Retryable(_describe(exc, ctx.timeout)) from None
        finally:
            _close(response)

    try:
        data = _retrying(ctx, attempt)
    except _Permanent as exc:
        raise PajamaError(f"cannot download the URL list {url}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PajamaError(f"the URL list {url} is not UTF-8 text") from None


def _load_items(ctx: _Context, urls_path: str | os.PathLike | None, wanted: tuple[str, ...] | None) -> list[_Item]:
    source = DEFAULT_URLS if urls_path is None else os.fspath(urls_path)
    lists: list[tuple[str, str]] = []  # (label for messages, text)
    if re.match(r"https?://", source, re.IGNORECASE):
        lists.append((source, _fetch_text(ctx, source)))
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            for subset in wanted or SUBSETS:
                list_file = path / f"{subset}.txt"
                if list_file.is_file():
                    lists.append((str(list_file), _read_text(list_file, "the URL list")))
                elif wanted:
                    raise PajamaError(f"{list_file}: no URL list for subset {subset!r} (file not found)")
            if not lists:
                raise PajamaError(
                    f"{path}: no URL lists in this directory (expected <subset>.txt files for the "
                    f"subsets {', '.join(SUBSETS)})"
                )
        elif path.is_file():
            lists.append((str(path), _read_text(path, "the URL list")))
        else:
            raise PajamaError(
                f"{path}: URL list not found (expected an http(s) URL, a file of URLs, or a "
                f"directory of <subset>.txt files)"
            )

    items: dict[str, _Item] = {}
    by_path: dict[PurePosixPath, str] = {}
    for label, text in lists:
        for lineno, line in enumerate(text.splitlines(), 1):
            url = line.strip()
            if not url or url.startswith("#"):
                continue
            try:
                subset, relpath = url_relative_path(url)
            except ValueError as exc:
                raise PajamaError(f"{label}:{lineno}: {exc}") from None
            if (wanted and subset not in wanted) or url in items:
                continue
            other = by_path.get(relpath)
            if other is not None:
                raise PajamaError(f"{label}:{lineno}: {url} and {other} would both be saved as {relpath}")
            by_path[relpath] = url
            items[url] = _Item(url=url, subset=subset, relpath=relpath)
    if not items:
        which = f" of the subsets {', '.join(wanted)}" if wanted else ""
        raise PajamaError(f"{source}: no URLs{which} found")
    return list(items.values())


def _read_sha256_file(path: Path) -> dict[str, str]:
    """Parse sha256sum output into {relative posix path: lowercase hex digest}.

    Paths are keyed from their first subset component on when they have one, so a file
    written as ``sha256sum data/arxiv/...`` matches too.
    """
    hashes: dict[str, str] = {}
    for lineno, line in enumerate(_read_text(path, "the sha256 file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SHA256_LINE.fullmatch(line)
        if match is None:
            raise PajamaError(
                f"{path}:{lineno}: expected '<sha256>  <relative/path>' (as sha256sum writes), "
                f"got {line[:100]!r}"
            )
        digest, name = match[1].lower(), PurePosixPath(match[2].replace("\\", "/"))
        parts = name.parts
        start = next((i for i, part in enumerate(parts) if part in SUBSETS), None)
        key = PurePosixPath(*parts[start:]).as_posix() if start is not None else name.as_posix()
        if hashes.get(key, digest) != digest:
            raise PajamaError(f"{path}:{lineno}: {key} is listed twice with different sha256 sums")
        hashes[key] = digest
    return hashes


# --------------------------------------------------------------------------------------
# Checking and downloading one file


def _sha256_of(ctx: _Context, path: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(4 << 20):
                if ctx.stop.is_set():
                    raise _Stopped
                hasher.update(block)
    except OSError as exc:
        raise _Permanent(f"cannot read {path}: {_oserror(exc)}") from None
    return hasher.hexdigest()


def _head_size(ctx: _Context, url: str) -> int | None:
    """The server's length of url (HEAD request), or None when it does not say."""

    def attempt() -> int | None:
        response = _open(ctx, url, "HEAD")
        try:
            status = response.getcode()
            if status in (404, 410):
                _check_status(response, status, ok=())
            if status in _RETRY_STATUSES or (500 <= status < 600 and status != 501):
                _check_status(response, status, ok=())
            if status != 200:
                return None  # e.g. 403/405/501 for HEAD; the GET will tell
            return _content_length(response.headers)
        finally:
            _close(response)

    return _retrying(ctx, attempt)


def _probe(ctx: _Context, item: _Item, dest: Path) -> bool:
    """True if item is complete on disk; otherwise record its size for the download."""
    final = dest / item.relpath
    if final.is_file():
        if item.sha256 is not None:
            if _sha256_of(ctx, final) == item.sha256:
                return True
            ctx.write(f"{final}: sha256 does not match, downloading it again")
        else:
            size = _head_size(ctx, item.url)
            have = _file_size(final)
            # A file only gets its final name once verified, so trust it when the server
            # does not tell its length.
            if size is None or size == have:
                return True
            ctx.write(f"{final}: {have} bytes but the server has {size}, downloading it again")
            item.size = size
            return False
    item.size = _head_size(ctx, item.url)
    return False


@dataclass
class _Part:
    """A .part file and the running sha256 of its contents."""

    path: Path
    want_sha256: bool
    hasher: "hashlib._Hash | None" = None
    hashed: int = 0
    high: int = 0  # most bytes it ever held in this run: progress for the retry count
    resumed: bool = False  # holds bytes from more than one response

    def size(self) -> int:
        return _file_size(self.path)

    def discard(self, ctx: _Context) -> None:
        n = self.size()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise _Permanent(f"cannot remove {self.path}: {_oserror(exc)}") from None
        ctx.grow(n)  # these bytes have to be downloaded again
        self.hasher, self.hashed, self.resumed = None, 0, False

    def sync_hasher(self, ctx: _Context, offset: int) -> None:
        """Make the running hash cover exactly the first offset bytes on disk."""
        if not self.want_sha256 or (self.hasher is not None and self.hashed == offset):
            return
        self.hasher, self.hashed = hashlib.sha256(), 0
        if offset:
            try:
                with open(self.path, "rb") as f:
                    while self.hashed < offset and (block := f.read(min(4 << 20, offset - self.hashed))):
                        self.hasher.update(block)
                        self.hashed += len(block)
            except OSError as exc:
                raise _Permanent(f"cannot read {self.path}: {_oserror(exc)}") from None


def _attempt(ctx: _Context, item: _Item, part: _Part) -> None:
    """One GET of item into part, resuming from what part holds. Raises on failure."""
    offset = part.size()
    if item.size is not None and offset > item.size:
        part.discard(ctx)
        offset = 0
    if offset and offset == item.size:
        return  # the .part is complete already (an earlier run stopped before renaming)

    response = _open(ctx, item.url, "GET", {"Range": f"bytes={offset}-"} if offset else None)
    restart = False
    try:
        status = response.getcode()
        if status == 416 and offset:
            match = _CONTENT_RANGE_UNSATISFIED.fullmatch(response.headers.get("Content-Range", "").strip())
            total = int(match[1]) if match else None
            if total == offset:
                ctx.grow(total - (item.size or 0))
                item.size = total
                return
            restart = True  # the .part is longer than the file or the server changed
        else:
            _check_status(response, status)
            if status == 206:
                content_range = response.headers.get("Content-Range", "")
                match = _CONTENT_RANGE.fullmatch(content_range.strip())
                if match is None or int(match[1]) != offset:
                    part.discard(ctx)
                    raise _Retryable(
                        f"asked for bytes {offset}- but the server answered Content-Range {content_range!r}"
                    )
                total = None if match[3] == "*" else int(match[3])
                length = _content_length(response.headers)
                if length is None:
                    length = int(match[2]) - offset + 1
                part.resumed = True
            else:  # 200: the whole file, even if a Range was asked for
                if offset:
                    part.discard(ctx)
                    offset = 0
                length = total = _content_length(response.headers)
            if total is not None and total != item.size:
                ctx.grow(total - (item.size or 0))
                item.size = total
            _receive(ctx, response, part, offset, length)
    finally:
        _close(response)
    if restart:
        part.discard(ctx)
        _attempt(ctx, item, part)
        return
    if item.size is not None and part.size() != item.size:
        have = part.size()
        part.discard(ctx)
        raise _Retryable(f"got {have} bytes but the server's length is {item.size}")


def _receive(ctx: _Context, response, part: _Part, offset: int, length: int | None) -> None:
    """Append the response body to part; raise _Retryable if it ends early."""
    part.sync_hasher(ctx, offset)
    received = 0
    try:
        with open(part.path, "ab") as f:
            while True:
                if ctx.stop.is_set():
                    raise _Stopped
                try:
                    chunk = response.read(CHUNK_SIZE)
                except _NETWORK_ERRORS as exc:
                    raise _Retryable(_describe(exc, ctx.timeout)) from None
                if not chunk:
                    break
                f.write(chunk)
                if part.hasher is not None:
                    part.hasher.update(chunk)
                    part.hashed += len(chunk)
                received += len(chunk)
                part.high = max(part.high, offset + received)
                ctx.advance(len(chunk))
    except OSError as exc:  # network errors were turned into _Retryable above
        raise _Permanent(f"cannot write {part.path}: {_oserror(exc)}") from None
    if length is not None and received < length:
        raise _Retryable(f"connection closed after {received} of {length} bytes")


def _download_one(ctx: _Context, item: _Item, dest: Path) -> None:
    final = dest / item.relpath
    part = _Part(_part_path(final), want_sha256=item.sha256 is not None)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Permanent(f"cannot create {final.parent}: {_oserror(exc)}") from None
    part.high = part.size()
    part.resumed = part.high > 0
    for round_ in range(2):
        _retrying(ctx, lambda: _attempt(ctx, item, part), progress=lambda: part.high)
        if item.sha256 is not None:
            part.sync_hasher(ctx, part.size())
            digest = part.hasher.hexdigest()
            if digest != item.sha256:
                resumed = part.resumed
                part.discard(ctx)
                if resumed and round_ == 0:
                    # The pieces may come from different versions of the file: once more
                    # from scratch.
                    ctx.write(f"{item.url}: sha256 mismatch after resuming, downloading it again")
                    continue
                raise _Permanent(f"sha256 mismatch: got {digest}, expected {item.sha256}")
        break
    try:
        os.replace(part.path, final)
    except OSError as exc:
        raise _Permanent(f"cannot rename {part.path} to {final}: {_oserror(exc)}") from None
