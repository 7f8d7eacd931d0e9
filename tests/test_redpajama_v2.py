"""RedPajama-Data-V2: finding its files, filtering on quality signals (checked against an
independent implementation of each rule), exact deduplication, damaged and missing files,
the tail partition, YAML rules, ``data inspect --rejected``, and downloading from listings."""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pajama import PajamaError
from pajama.corpora import detect_layout, find_source_files
from pajama.corpora.quality import load_rules
from pajama.prepare import prepare

SNAPSHOTS = ("2022-49", "2023-06")
# The rules of the dataset card's Gopher example (``gopher_card``), which the documents below are crafted against.
GOPHER = (
    "gopher_card_word_count_min", "gopher_card_word_count_max", "gopher_card_mean_word_length_min", "gopher_card_mean_word_length_max",
    "gopher_card_symbol_to_word_ratio", "gopher_card_bullet_lines", "gopher_card_top_2gram",
)  # fmt: skip
BULLETS = ("-", "*", "•", "●")


# -- signals, computed here the way RedPajama-V2 describes them -------------------------------


def compute_signals(text: str) -> dict[str, list]:
    """Quality signals of ``text`` as spans: document-level ones with one span, the
    bullet-point one with one span per line."""
    words = text.split()
    n = len(words)
    chars = sum(len(w) for w in words)
    bigrams = Counter(zip(words, words[1:]))
    top = bigrams.most_common(1)
    top_frac = top[0][1] * (len(top[0][0][0]) + len(top[0][0][1])) / chars if top and chars else 0.0
    lines, spans, start = text.split("\n"), [], 0
    for line in lines:
        spans.append([start, start + len(line), 1.0 if line.lstrip().startswith(BULLETS) else 0.0])
        start += len(line) + 1
    whole = [[0, len(text), None]]

    def doc(value):
        return [[0, len(text), value]] if value is not None else whole

    return {
        "ccnet_nlines": doc(len(lines)),
        "rps_doc_word_count": doc(n),
        "rps_doc_mean_word_length": doc(chars / n if n else None),
        "rps_doc_symbol_to_word_ratio": doc((text.count("#") + text.count("...")) / n if n else None),
        "rps_doc_frac_chars_top_2gram": doc(top_frac),
        "rps_lines_start_with_bulletpoint": spans,
    }


def gopher_rejects(signals: dict) -> tuple[set[str], set[str]]:
    """(rules of the dataset card's Gopher example that reject, those whose value is null),
    written from the card apart from pajama."""

    def first(name):
        spans = signals.get(name) or []
        return spans[0][2] if spans else None

    out, null = set(), set()
    for name, signal, low, high in (
        ("word_count", "rps_doc_word_count", 50, 10_000),
        ("mean_word_length", "rps_doc_mean_word_length", 3, 10),
    ):
        value = first(signal)
        if value is None:
            null |= {f"gopher_card_{name}_min", f"gopher_card_{name}_max"}
        else:
            if value < low:
                out.add(f"gopher_card_{name}_min")
            if value > high:
                out.add(f"gopher_card_{name}_max")
    for name, signal, high in (("symbol_to_word_ratio", "rps_doc_symbol_to_word_ratio", 0.1), ("top_2gram", "rps_doc_frac_chars_top_2gram", 0.2)):
        value = first(signal)
        if value is None:
            null.add(f"gopher_card_{name}")
        elif value > high:
            out.add(f"gopher_card_{name}")
    bullets = [s[2] for s in signals.get("rps_lines_start_with_bulletpoint") or [] if s[2] is not None]
    lines = first("ccnet_nlines")
    if not bullets or not lines:
        null.add("gopher_card_bullet_lines")
    elif sum(bullets) / lines > 0.9:
        out.add("gopher_card_bullet_lines")
    return out, null


def crafted_documents(rng: random.Random, prose: list[str]) -> list[tuple[str, dict | None]]:
    """Documents made to fail one Gopher rule each, ones that pass them all, and ones with
    null signals; (text, signals to write instead of the computed ones, or None)."""
    long_prose = " ".join(prose)
    vocabulary = sorted({w for t in prose for w in t.split() if w.isalpha() and 4 <= len(w) <= 8})

    def words(n, pick=vocabulary):
        return " ".join(rng.choice(pick) for _ in range(n))

    letters = "abcdefghijklmnopqrstuvwxyz"
    docs = [
        (words(20), None),  # too few words
        (" ".join(long_prose.split()[:10_500]) if len(long_prose.split()) > 10_500 else words(10_500), None),  # too many
        (" ".join(rng.choice(letters) + rng.choice(letters) for _ in range(80)), None),  # words too short
        (" ".join("".join(rng.choice(letters) for _ in range(14)) for _ in range(80)), None),  # too long
        (words(60) + " " + " ".join(["#"] * 12), None),  # symbols
        ("\n".join(f"- {words(6)}" for _ in range(15)), None),  # bullet points
        (" ".join(["quality signal"] * 40) + " " + words(20), None),  # one 2-gram
        (words(120), None),  # passes all
        ("\n".join(words(12) + "." for _ in range(8)), None),  # passes all
    ]
    text = words(30)
    nulls = compute_signals(text)
    nulls["rps_doc_word_count"] = [[0, len(text), None]]  # null: the word-count rules cannot reject it
    docs.append((text, nulls))
    text = words(70)
    nulls = compute_signals(text)
    nulls["rps_doc_mean_word_length"] = []  # no span: null too
    nulls["ccnet_nlines"] = [[0, len(text), None]]
    docs.append((text, nulls))
    return docs


# -- the tree ------------------------------------------------------------------------------


def write_gzip_lines(path: Path, records: list[dict]) -> bytes:
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records), mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def complete_lines(data: bytes) -> list[bytes]:
    """The complete lines a damaged gzip stream gives before its damage."""
    out = zlib.decompressobj(wbits=31).decompress(data)
    return out.split(b"\n")[:-1]


class V2Tree:
    """A RedPajama-Data-V2 tree and everything the test knows about it."""

    def __init__(self, root: Path):
        self.root = root
        self.documents: dict[str, list[str]] = {}  # tag -> texts by row (as readable after any damage)
        self.signals: dict[str, list[dict]] = {}  # tag -> signals by row
        self.duplicates: dict[str, set[str]] = {}  # tag -> ids listed (files written)
        self.truncated: str | None = None


@pytest.fixture(scope="module")
def v2(tmp_path_factory, stdlib_texts) -> V2Tree:
    """Two snapshots; shards with head, middle and tail files (and a de file); Gopher-crafted
    documents mixed into real prose; a shard whose duplicate lists are missing; a signals
    file whose lines are shuffled (so joined on id); a truncated documents file."""
    rng = random.Random(11)
    tree = V2Tree(tmp_path_factory.mktemp("rpv2") / "RedPajama-Data-V2")
    prose = iter(stdlib_texts)
    plan = [(s, f"{k:04d}", p) for s in SNAPSHOTS for k in range(2) for p in ("head", "middle")] + [("2023-06", "0002", "head")]
    crafted = crafted_documents(rng, stdlib_texts[:400])
    for i, (snapshot, shard, part) in enumerate(plan):
        tag = f"{snapshot}/{shard}/en_{part}"
        texts = [next(prose) for _ in range(rng.randint(12, 25))]
        signals = [compute_signals(t) for t in texts]
        for text, override in crafted[i % 3 :: 3] if i < 9 else crafted:
            row = rng.randrange(len(texts) + 1)
            texts.insert(row, text)
            signals.insert(row, override or compute_signals(text))
        records = [{"url": f"https://example.com/{tag}/{r}", "raw_content": t, "nlines": t.count("\n") + 1} for r, t in enumerate(texts)]
        data = write_gzip_lines(tree.root / "documents" / f"{tag}.json.gz", records)
        lines = [{"id": f"{tag}.json.gz/{r}", "id_int": r, "metadata": {}, "quality_signals": s} for r, s in enumerate(signals)]
        if tag == "2023-06/0001/en_middle":
            rng.shuffle(lines)  # lines out of order: joined on id
        write_gzip_lines(tree.root / "quality_signals" / f"{tag}.signals.json.gz", lines)
        tree.documents[tag], tree.signals[tag] = texts, signals
        if shard != "0001" or snapshot != "2022-49":  # 2022-49/0001: duplicate lists missing
            ids = [f"{tag}.json.gz/{r}" for r in sorted(rng.sample(range(len(texts)), 4))]
            table = pa.table({"doc_id": pa.array(ids)})
            path = tree.root / "duplicates" / f"{tag}.duplicates.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            tree.duplicates[tag] = set(ids)
        if tag == "2023-06/0002/en_head":  # truncated: its first rows stay readable
            cut = data[: len(data) * 2 // 3]
            (tree.root / "documents" / f"{tag}.json.gz").write_bytes(cut)
            tree.documents[tag] = [json.loads(line)["raw_content"] for line in complete_lines(cut)]
            tree.truncated = tag
    for snapshot in SNAPSHOTS:  # tail: documents only; and a German file, not asked for by default
        for name in ("en_tail", "de_head"):
            tag = f"{snapshot}/0000/{name}"
            texts = [next(prose) for _ in range(5)]
            write_gzip_lines(tree.root / "documents" / f"{tag}.json.gz", [{"raw_content": t} for t in texts])
            tree.documents[tag] = texts
    return tree


def head_middle_tags(tree: V2Tree) -> list[str]:
    """The en head and middle files in the order of their output names."""
    tags = [t for t in tree.documents if t.endswith(("en_head", "en_middle"))]
    return sorted(tags, key=lambda t: "rpv2_en_" + t.replace("/", "_").replace("en_", ""))


def expected_outcome(tree: V2Tree, judge, dedup: bool) -> tuple[list[str], dict[str, list[str]], Counter]:
    """Kept texts in output order, removed document ids per rule, nulls per rule."""
    kept, removed, null = [], {}, Counter()
    for tag in head_middle_tags(tree):
        for row, text in enumerate(tree.documents[tag]):
            doc_id = f"{tag}.json.gz/{row}"
            hits, nulls = judge(tree.signals[tag][row])
            null.update(nulls)
            if dedup and doc_id in tree.duplicates.get(tag, set()):
                hits = hits | {"exact_duplicate"}
            if not text:
                continue
            for name in hits:
                removed.setdefault(name, []).append(doc_id)
            if not hits:
                kept.append(text)
    return kept, removed, null


def chunk_stream(destination: Path) -> np.ndarray:
    manifest = json.loads((destination / "manifest.json").read_text())
    parts = [np.frombuffer((destination / c["file"]).read_bytes()[24:], dtype=np.uint16)[: c["tokens"]] for c in manifest["chunks"]]
    return np.concatenate(parts)


def token_count(tokenizer, text: str) -> int:
    return sum(len(a) for a in tokenizer.encode_batches([text], np.dtype(np.uint16)))


def run(source: Path, tokenizer_model: Path, destination: Path, **kwargs) -> None:
    prepare(source, tokenizer_model, destination, **{"chunk_size": 4096, "num_workers": 1, **kwargs})


# -- tests ---------------------------------------------------------------------------------


def test_fixture_has_a_document_failing_each_gopher_rule_alone_and_null_values(v2):
    alone, nulls = Counter(), Counter()
    for tag in head_middle_tags(v2):
        for signals in v2.signals[tag]:
            hits, null = gopher_rejects(signals)
            if len(hits) == 1:
                alone.update(hits)
            nulls.update(null)
    assert set(alone) == set(GOPHER)
    assert nulls["gopher_card_word_count_min"] and nulls["gopher_card_mean_word_length_max"] and nulls["gopher_card_bullet_lines"]


def test_layout_is_detected_and_files_chosen(v2):
    assert detect_layout(v2.root) == "redpajama_v2"
    files = find_source_files(v2.root)
    assert {f.relpath for f in files} == {f"documents/{t}.json.gz" for t in v2.documents if t.endswith(("en_head", "en_middle"))}
    assert {f.subset for f in files} == {"rpv2_en"}
    assert [f.prefix for f in files] == sorted(f.prefix for f in files)
    only = find_source_files(v2.root, snapshots=["2023-06"], languages=["de", "en"], partitions=["head"], layout="redpajama_v2")
    assert {f.relpath for f in only} == {"documents/2023-06/0000/de_head.json.gz", "documents/2023-06/0000/en_head.json.gz", "documents/2023-06/0001/en_head.json.gz", "documents/2023-06/0002/en_head.json.gz"}
    assert {f.subset for f in only} == {"rpv2_en", "rpv2_de"}
    with pytest.raises(PajamaError, match="no snapshot folder"):
        find_source_files(v2.root, snapshots=["2019-01"])
    with pytest.raises(PajamaError, match="unknown 'nl'"):
        find_source_files(v2.root, languages=["nl"])


@pytest.fixture(scope="module")
def gopher_prepared(v2, tokenizer_model, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("rpv2_gopher") / "data"
    with pytest.raises(PajamaError, match="could not be read to the end"):  # the truncated file
        run(v2.root, tokenizer_model, destination, filters="gopher_card", dedup=True, count_removed_tokens=True)
    return destination


def test_gopher_and_dedup_keep_exactly_what_the_rules_keep(v2, gopher_prepared, tokenizer):
    kept, removed, null = expected_outcome(v2, gopher_rejects, dedup=True)
    assert removed.keys() == {*GOPHER, "exact_duplicate"}
    expected = np.concatenate([a for t in kept for a in tokenizer.encode_batches([t], np.dtype(np.uint16))])
    assert np.array_equal(chunk_stream(gopher_prepared), expected)
    manifest = json.loads((gopher_prepared / "manifest.json").read_text())
    assert manifest["documents"] == len(kept)
    report = manifest["filtering"]
    assert report["rules"] == [*GOPHER, "exact_duplicate"]
    every_id = {i for ids in removed.values() for i in ids}
    assert report["removed"]["documents"] == len(every_id)
    texts = {f"{t}.json.gz/{r}": x for t in v2.documents for r, x in enumerate(v2.documents[t])}
    assert report["removed"]["characters"] == sum(len(texts[i]) for i in every_id)
    assert report["removed"]["tokens"] == sum(token_count(tokenizer, texts[i]) for i in every_id)
    assert report["read"] == report["kept"] + report["removed"]["documents"] == len(kept) + len(every_id)
    for name, ids in removed.items():
        entry = report["by_rule"][name]
        assert entry["documents"] == len(ids), name
        assert entry["characters"] == sum(len(texts[i]) for i in ids), name
        assert entry["tokens"] == sum(token_count(tokenizer, texts[i]) for i in ids), name
        assert entry["null"] == null[name], name
        assert entry["examples"] and set(entry["examples"]) <= set(ids)
    missing = [n for n in report["notes"] if "no duplicate list" in n]
    assert len(missing) == 2 and all("2022-49/0001" in n for n in missing)
    assert len(manifest["errors"]) == 1 and v2.truncated in manifest["errors"][0]


def test_removed_documents_are_counted_in_characters_without_tokenizing_them(v2, gopher_prepared, tokenizer_model, tmp_path, monkeypatch, capsys):
    import pajama.prepare

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("removed documents were tokenized without --count_removed_tokens")

    monkeypatch.setattr(pajama.prepare, "_token_counts", no_tokenizing)
    destination = tmp_path / "data"
    with pytest.raises(PajamaError, match="could not be read to the end"):
        run(v2.root, tokenizer_model, destination, filters="gopher_card", dedup=True)
    report = json.loads((destination / "manifest.json").read_text())["filtering"]
    counted = json.loads((gopher_prepared / "manifest.json").read_text())["filtering"]
    assert report["removed"] == {k: counted["removed"][k] for k in ("documents", "characters")}
    assert report["by_rule"] == {name: {k: v for k, v in entry.items() if k != "tokens"} for name, entry in counted["by_rule"].items()}
    out = capsys.readouterr().out
    assert re.search(r"filters: [\d,]+ of [\d,]+ documents removed \([\d.]+%\), [\d,]+ characters; [\d,]+ kept", out)
    assert " tokens" not in out.split("filters: ", 1)[1].split("\n")[1]  # no tokens column
    assert sorted(p.name for p in destination.glob("*.bin")) == sorted(p.name for p in gopher_prepared.glob("*.bin"))


def test_summary_lists_every_rule(v2, gopher_prepared, tokenizer_model, capsys):
    from pajama.data import inspect

    inspect(gopher_prepared, documents=0, rejected=4, seed=1)
    out = capsys.readouterr().out
    for name in GOPHER:
        assert name in out
    shown = re.findall(r"--- (removed|kept): (\S+)", out)
    assert shown and any(k == "removed" for k, _ in shown) and any(k == "kept" for k, _ in shown)
    _, removed, _ = expected_outcome(v2, gopher_rejects, dedup=True)
    removed_ids = {i for ids in removed.values() for i in ids}
    for kind, doc_id in shown:
        assert (doc_id in removed_ids) == (kind == "removed")


def test_tail_with_filters_is_refused_before_any_work(v2, tokenizer_model, tmp_path):
    destination = tmp_path / "data"
    for kwargs in ({"filters": "gopher"}, {"dedup": True}):
        with pytest.raises(PajamaError, match=r"tail file\(s\) selected \(documents/2022-49/0000/en_tail.json.gz"):
            run(v2.root, tokenizer_model, destination, partitions=["head", "middle", "tail"], **kwargs)
        assert not destination.exists()
    run(v2.root, tokenizer_model, destination, partitions=["tail"])
    manifest = json.loads((destination / "manifest.json").read_text())
    assert manifest["documents"] == sum(len(v2.documents[f"{s}/0000/en_tail"]) for s in SNAPSHOTS)
    assert "filtering" not in manifest


def test_yaml_rules_and_their_errors(v2, tokenizer_model, tokenizer, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- {name: few_words, signal: rps_doc_word_count, op: '<', threshold: 100}\n"
        "- {name: many_bullets, signal: rps_lines_start_with_bulletpoint, op: '>=', threshold: 3, aggregate: sum}\n"
        "- {name: null_length, signal: rps_doc_mean_word_length, op: '>', threshold: 1000, on_null: reject}\n"
    )

    def judge(signals):
        def first(name):
            spans = signals.get(name) or []
            return spans[0][2] if spans else None

        hits, null = set(), set()
        wc = first("rps_doc_word_count")
        if wc is None:
            null.add("few_words")
        elif wc < 100:
            hits.add("few_words")
        bullets = [s[2] for s in signals["rps_lines_start_with_bulletpoint"] if s[2] is not None]
        if not bullets:
            null.add("many_bullets")
        elif sum(bullets) >= 3:
            hits.add("many_bullets")
        length = first("rps_doc_mean_word_length")
        if length is None:
            null.add("null_length")
            hits.add("null_length")
        elif length > 1000:
            hits.add("null_length")
        return hits, null

    destination = tmp_path / "data"
    with pytest.raises(PajamaError, match="could not be read to the end"):
        run(v2.root, tokenizer_model, destination, filter_rules=rules)
    kept, removed, null = expected_outcome(v2, judge, dedup=False)
    assert removed["null_length"]  # on_null: reject removed something
    expected = np.concatenate([a for t in kept for a in tokenizer.encode_batches([t], np.dtype(np.uint16))])
    assert np.array_equal(chunk_stream(destination), expected)
    report = json.loads((destination / "manifest.json").read_text())["filtering"]
    assert {n: e["documents"] for n, e in report["by_rule"].items()} == {n: len(ids) for n, ids in removed.items()}
    assert {n: e["null"] for n, e in report["by_rule"].items() if e["null"]} == {n: c for n, c in null.items() if c}

    for text, message in (
        ("- {signal: x, op: '=<', threshold: 1}\n", r"rules.yaml: rule 1: op '=<' is not one of"),
        ("- {signal: x, op: '<', threshold: 1}\n- {name: two, signal: y, op: '>'}\n", r"rules.yaml: rule 2 \(two\): missing 'threshold'"),
        ("- {signal: x, op: '<', threshold: 1, aggregate: max}\n", "aggregate 'max' is not one of"),
        ("- {signal: x, op: '<', threshold: 1, on_null: drop}\n", "on_null 'drop' is not one of"),
        ("- {signal: x, op: '<', threshold: one}\n", "threshold 'one' must be a number"),
        ("signal: x\n", "expected a list of rules"),
        ("- [unclosed\n", "not valid YAML"),
    ):
        rules.write_text(text)
        with pytest.raises(PajamaError, match=message):
            load_rules(rules)
    with pytest.raises(PajamaError, match="unknown filter set 'gopherr'"):
        run(v2.root, tokenizer_model, tmp_path / "other", filters="gopherr")


def test_damaged_signals_file_keeps_the_documents_before_it(v2, tokenizer_model, tokenizer, tmp_path):
    import shutil

    root = tmp_path / "v2"
    tag = "2023-06/0000/en_head"
    for rel in (f"documents/{tag}.json.gz", f"quality_signals/{tag}.signals.json.gz", f"duplicates/{tag}.duplicates.parquet"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(v2.root / rel, root / rel)
    signals = root / "quality_signals" / f"{tag}.signals.json.gz"
    data = signals.read_bytes()
    signals.write_bytes(data[: len(data) // 2])
    judged = len(complete_lines(data[: len(data) // 2]))
    destination = tmp_path / "data"
    with pytest.raises(PajamaError, match="could not be read to the end"):
        run(root, tokenizer_model, destination, filters=["gopher_card"], snapshots=["2023-06"], partitions=["head"])
    manifest = json.loads((destination / "manifest.json").read_text())
    assert "signals file" in manifest["errors"][0]
    kept = [t for t, s in zip(v2.documents[tag][:judged], v2.signals[tag][:judged]) if not gopher_rejects(s)[0]]
    assert manifest["documents"] == len(kept)
    assert manifest["filtering"]["read"] == judged == manifest["filtering"]["kept"] + manifest["filtering"]["removed"]["documents"]


def test_missing_signals_file_is_a_note_and_the_unit_is_redone_once_it_is_there(v2, tokenizer_model, tokenizer, tmp_path, capsys):
    import shutil

    root = tmp_path / "v2"
    tag = "2023-06/0000/en_head"
    for rel in (f"documents/{tag}.json.gz", f"duplicates/{tag}.duplicates.parquet"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(v2.root / rel, root / rel)
    # Some signals files are missing upstream: nothing of the documents file can be judged, and
    # rerunning does not help, so it is a note, not an error; its documents are left out.
    destination = tmp_path / "data"
    run(root, tokenizer_model, destination, filters=["gopher_card"], snapshots=["2023-06"], partitions=["head"])
    assert "quality_signals/2023-06/0000/en_head.signals.json.gz missing" in capsys.readouterr().out
    manifest = json.loads((destination / "manifest.json").read_text())
    report = manifest["filtering"]
    assert manifest["documents"] == 0 and manifest["errors"] == []
    assert report["read"] == report["removed"]["documents"] == report["by_rule"]["missing_signals"]["documents"] == len(v2.documents[tag])
    assert any("no signals file" in n for n in report["notes"])

    # Once it is there (published later), the same command redoes that unit.
    signals = root / "quality_signals" / f"{tag}.signals.json.gz"
    signals.parent.mkdir(parents=True)
    shutil.copy(v2.root / "quality_signals" / f"{tag}.signals.json.gz", signals)
    run(root, tokenizer_model, destination, filters=["gopher_card"], snapshots=["2023-06"], partitions=["head"])
    assert "0 already done, 1 to do" in capsys.readouterr().out
    kept = [t for t, s in zip(v2.documents[tag], v2.signals[tag]) if not gopher_rejects(s)[0]]
    assert json.loads((destination / "manifest.json").read_text())["documents"] == len(kept)


# -- download ------------------------------------------------------------------------------


def test_download_from_listings(v2, tmp_path, capsys):
    import http.server
    import threading

    from pajama.download import download

    files = {p.relative_to(v2.root).as_posix(): p.read_bytes() for p in v2.root.rglob("*") if p.is_file()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _body(self):
            rel = self.path.split("/v1.0.0/", 1)[-1]
            return files.get(rel)

        def do_HEAD(self):
            body = self._body()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()

        def do_GET(self):
            body = self._body()
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        listing = tmp_path / "en-2023-06-head_middle.txt"
        listing.write_text("2023-06/0000/en_head\n2023-06/0001/en_middle\n\n# a comment\n2023-06/0002/en_head\n")
        tail = tmp_path / "en-2023-06-tail.txt"
        tail.write_text("2023-06/0000/en_tail\n")
        destination = tmp_path / "dest"
        base = f"http://127.0.0.1:{server.server_address[1]}/redpajama-data-v2/v1.0.0"
        download(destination, listings=[listing, tail], base_url=base, retries=0)
        got = {p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file()}
        want = {
            "documents/2023-06/0000/en_head.json.gz", "quality_signals/2023-06/0000/en_head.signals.json.gz", "duplicates/2023-06/0000/en_head.duplicates.parquet",
            "documents/2023-06/0001/en_middle.json.gz", "quality_signals/2023-06/0001/en_middle.signals.json.gz", "duplicates/2023-06/0001/en_middle.duplicates.parquet",
            "documents/2023-06/0000/en_tail.json.gz",
            "documents/2023-06/0002/en_head.json.gz", "quality_signals/2023-06/0002/en_head.signals.json.gz", "duplicates/2023-06/0002/en_head.duplicates.parquet",
        }  # fmt: skip
        assert got == want
        assert all((destination / rel).read_bytes() == files[rel] for rel in want)
        # The truncated documents file is kept, and named as damaged upstream.
        assert re.search(r"en_head.json.gz: truncated gzip data, as served; kept", capsys.readouterr().err)
        download(destination, listings=[listing, tail], base_url=base, retries=0)  # all there: nothing to do
        assert "0 failed" in capsys.readouterr().err
        bad = tmp_path / "bad.txt"
        bad.write_text("2023-06/0000/english_head\n")
        with pytest.raises(PajamaError, match=r"bad.txt:1: "):
            download(destination, listings=[bad], base_url=base, retries=0)
    finally:
        server.shutdown()
        server.server_close()


# -- the gopher set is the paper's rules, gopher_card the card's example ------------------


def test_gopher_is_the_papers_rules_and_gopher_card_the_cards_example():
    from pajama.corpora.quality import builtin_rules, judge

    def first(s, name):
        return s[name][0][2] if s.get(name) else None

    def bullet_share(s):
        lines = first(s, "ccnet_nlines")
        return sum(x[2] for x in s["rps_lines_start_with_bulletpoint"]) / lines if lines else None

    # Rae et al. 2021, appendix A.1.1: 50 to 100,000 words; mean word length 3 to 10; symbol-to-word
    # ratio at most 0.1; at most 90 % of lines starting with a bullet, 30 % ending with an ellipsis;
    # at least 80 % of words with an alphabetic character; top 2/3/4-gram character fractions at most
    # 0.20/0.18/0.16; duplicate 5..10-gram fractions at most 0.15, 0.14, 0.13, 0.12, 0.11, 0.10.
    paper = {
        "gopher_word_count_min": (lambda s: first(s, "rps_doc_word_count"), lambda v: v < 50),
        "gopher_word_count_max": (lambda s: first(s, "rps_doc_word_count"), lambda v: v > 100_000),
        "gopher_mean_word_length_min": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v < 3),
        "gopher_mean_word_length_max": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v > 10),
        "gopher_symbol_to_word_ratio": (lambda s: first(s, "rps_doc_symbol_to_word_ratio"), lambda v: v > 0.1),
        "gopher_bullet_lines": (bullet_share, lambda v: v > 0.9),
        "gopher_ellipsis_lines": (lambda s: first(s, "rps_doc_frac_lines_end_with_ellipsis"), lambda v: v > 0.3),
        "gopher_alphabetic_words": (lambda s: first(s, "rps_doc_frac_no_alph_words"), lambda v: 1 - v < 0.8),
        "gopher_top_2gram": (lambda s: first(s, "rps_doc_frac_chars_top_2gram"), lambda v: v > 0.20),
        "gopher_top_3gram": (lambda s: first(s, "rps_doc_frac_chars_top_3gram"), lambda v: v > 0.18),
        "gopher_top_4gram": (lambda s: first(s, "rps_doc_frac_chars_top_4gram"), lambda v: v > 0.16),
        "gopher_dupe_5grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_5grams"), lambda v: v > 0.15),
        "gopher_dupe_6grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_6grams"), lambda v: v > 0.14),
        "gopher_dupe_7grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_7grams"), lambda v: v > 0.13),
        "gopher_dupe_8grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_8grams"), lambda v: v > 0.12),
        "gopher_dupe_9grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_9grams"), lambda v: v > 0.11),
        "gopher_dupe_10grams": (lambda s: first(s, "rps_doc_frac_chars_dupe_10grams"), lambda v: v > 0.10),
    }
    # The RedPajama-V2 dataset card's example: word count < 50 or > 10,000; mean word length < 3 or
    # > 10; symbol-to-word ratio > 0.1; bullet-start lines / ccnet_nlines > 0.9; top 2-gram > 0.2.
    card = {
        "gopher_card_word_count_min": (lambda s: first(s, "rps_doc_word_count"), lambda v: v < 50),
        "gopher_card_word_count_max": (lambda s: first(s, "rps_doc_word_count"), lambda v: v > 10_000),
        "gopher_card_mean_word_length_min": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v < 3),
        "gopher_card_mean_word_length_max": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v > 10),
        "gopher_card_symbol_to_word_ratio": (lambda s: first(s, "rps_doc_symbol_to_word_ratio"), lambda v: v > 0.1),
        "gopher_card_bullet_lines": (bullet_share, lambda v: v > 0.9),
        "gopher_card_top_2gram": (lambda s: first(s, "rps_doc_frac_chars_top_2gram"), lambda v: v > 0.2),
    }
    for name, checks in (("gopher", paper), ("gopher_card", card)):
        rules = builtin_rules(name)
        assert [r.name for r in rules] == list(checks)
        rng = random.Random(7)
        seen = Counter()
        for _ in range(2000):
            n_lines = rng.randint(1, 6)
            signals = {
                "rps_doc_word_count": [[0, 1, rng.choice([10, 49, 50, 5_000, 10_000, 10_001, 100_000, 100_001])]],
                "rps_doc_mean_word_length": [[0, 1, rng.uniform(2, 11)]],
                "rps_doc_symbol_to_word_ratio": [[0, 1, rng.uniform(0, 0.15)]],
                "ccnet_nlines": [[0, 1, n_lines]],
                "rps_lines_start_with_bulletpoint": [[i, i + 1, float(rng.random() < 0.9)] for i in range(n_lines)],
                "rps_doc_frac_lines_end_with_ellipsis": [[0, 1, rng.uniform(0, 0.4)]],
                "rps_doc_frac_no_alph_words": [[0, 1, rng.uniform(0, 0.3)]],
                **{f"rps_doc_frac_chars_top_{n}gram": [[0, 1, rng.uniform(0, 0.3)]] for n in (2, 3, 4)},
                **{f"rps_doc_frac_chars_dupe_{n}grams": [[0, 1, rng.uniform(0, 0.2)]] for n in range(5, 11)},
            }
            want = {rule for rule, (value_of, rejects) in checks.items() if rejects(value_of(signals))}
            hits, null = judge(rules, signals)
            assert (set(hits), null) == (want, []), (name, signals)
            seen.update(hits)
        assert set(seen) == set(checks), name  # every rule rejected something
    # A document of 50,000 words: too long for the card's example, not for the paper.
    long = {"rps_doc_word_count": [[0, 1, 50_000]]}
    assert "gopher_card_word_count_max" in judge(builtin_rules("gopher_card"), long)[0]
    assert "gopher_word_count_max" not in judge(builtin_rules("gopher"), long)[0]


# -- the c4 and refinedweb sets, on random signals -----------------------------------------


def test_c4_and_refinedweb_rules_against_an_independent_reading(v2):
    from pajama.corpora.quality import builtin_rules, judge

    rng = random.Random(5)

    def doc(value):
        return [[0, 100, value]]

    def lines(values):
        return [[i, i + 1, v] for i, v in enumerate(values)]

    def maybe(value):
        return None if rng.random() < 0.15 else value

    def first(s, name):
        return s[name][0][2] if s.get(name) else None

    def mean(s, name):
        values = [x[2] for x in s.get(name, []) if x[2] is not None]
        return sum(values) / len(values) if values else None

    checks = {  # rule -> (value, rejects) written from the papers' descriptions
        "c4_curly_bracket": (lambda s: first(s, "rps_doc_curly_bracket"), lambda v: v > 0),
        "c4_lorem_ipsum": (lambda s: first(s, "rps_doc_lorem_ipsum"), lambda v: v > 0),
        "c4_bad_words": (lambda s: first(s, "rps_doc_ldnoobw_words"), lambda v: v > 0),
        "c4_terminal_punctuation": (lambda s: mean(s, "rps_lines_ending_with_terminal_punctution_mark"), lambda v: v < 0.5),
        "c4_num_sentences": (lambda s: first(s, "rps_doc_num_sentences"), lambda v: v < 3),
        "c4_javascript": (lambda s: mean(s, "rps_lines_javascript_counts"), lambda v: v > 0.25),
        "refinedweb_word_count_min": (lambda s: first(s, "rps_doc_word_count"), lambda v: v < 50),
        "refinedweb_word_count_max": (lambda s: first(s, "rps_doc_word_count"), lambda v: v > 100_000),
        "refinedweb_mean_word_length_min": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v < 2),
        "refinedweb_mean_word_length_max": (lambda s: first(s, "rps_doc_mean_word_length"), lambda v: v > 10),
        "refinedweb_symbol_to_word_ratio": (lambda s: first(s, "rps_doc_symbol_to_word_ratio"), lambda v: v > 0.1),
        "refinedweb_top_2gram": (lambda s: first(s, "rps_doc_frac_chars_top_2gram"), lambda v: v > 0.2),
        "refinedweb_top_3gram": (lambda s: first(s, "rps_doc_frac_chars_top_3gram"), lambda v: v > 0.18),
        "refinedweb_top_4gram": (lambda s: first(s, "rps_doc_frac_chars_top_4gram"), lambda v: v > 0.16),
        **{
            f"refinedweb_dupe_{n}grams": ((lambda s, n=n: first(s, f"rps_doc_frac_chars_dupe_{n}grams")), (lambda v, limit=limit: v > limit))
            for n, limit in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
        },
        "refinedweb_ut1_blacklist": (lambda s: first(s, "rps_doc_ut1_blacklist"), lambda v: True),  # listed: any category
    }
    rules = builtin_rules("c4,refinedweb")
    assert [r.name for r in rules] == list(checks)
    seen = Counter()
    for _ in range(3000):
        signals = {
            "rps_doc_curly_bracket": doc(maybe(rng.choice([0, 0, 0, 0.01]))),
            "rps_doc_lorem_ipsum": doc(maybe(rng.choice([0, 0, 0, 0.002]))),
            "rps_doc_ldnoobw_words": doc(maybe(rng.choice([0, 0, 0, 1, 2]))),
            "rps_lines_ending_with_terminal_punctution_mark": lines([maybe(rng.choice([0, 1])) for _ in range(rng.randint(0, 6))]),
            "rps_doc_num_sentences": doc(maybe(rng.randint(0, 8))),
            "rps_lines_javascript_counts": lines([maybe(rng.choice([0, 0, 0, 1])) for _ in range(rng.randint(1, 6))]),
            "rps_doc_word_count": doc(maybe(rng.choice([10, 60, 500, 200_000]))),
            "rps_doc_mean_word_length": doc(maybe(rng.uniform(1, 12))),
            "rps_doc_symbol_to_word_ratio": doc(maybe(rng.uniform(0, 0.15))),
            "rps_doc_ut1_blacklist": doc(None if rng.random() < 0.8 else rng.choice(["adult", "gambling"])),
            **{f"rps_doc_frac_chars_top_{n}gram": doc(maybe(rng.uniform(0, 0.3))) for n in (2, 3, 4)},
            **{f"rps_doc_frac_chars_dupe_{n}grams": doc(maybe(rng.uniform(0, 0.2))) for n in range(5, 11)},
        }
        want_hits, want_null = set(), set()
        for name, (value_of, rejects) in checks.items():
            value = value_of(signals)
            if value is None:
                want_null.add(name)
            elif rejects(value):
                want_hits.add(name)
        hits, null = judge(rules, signals)
        assert (set(hits), set(null)) == (want_hits, want_null), signals
        seen.update(hits)
    assert set(seen) == set(checks)  # every rule rejected something


def test_command_line_with_every_filter_set(v2, tokenizer_model, tmp_path, capsys):
    from pajama.cli import main

    destination = tmp_path / "data"
    main([
        "prepare", "--source_path", str(v2.root), "--tokenizer_path", str(tokenizer_model), "--destination_path", str(destination),
        "--layout", "redpajama_v2", "--snapshots", "2022-49", "--partitions", "head,middle", "--filters", "gopher,c4,refinedweb",
        "--dedup", "true", "--chunk_size", "4096", "--num_workers", "1",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "filters: " in out and "c4_curly_bracket" in out and "no duplicate list" in out
    report = json.loads((destination / "manifest.json").read_text())["filtering"]
    # The tree has no signals of the c4 and refinedweb sets but Gopher's: null for every
    # document, so those rules remove nothing (Gopher's own signals do, through refinedweb's too).
    assert report["by_rule"]["c4_curly_bracket"] == {"documents": 0, "characters": 0, "null": report["read"], "examples": []}
    assert report["by_rule"]["refinedweb_word_count_min"]["documents"] == sum(
        1 for t in v2.documents if t.startswith("2022-49") and t.endswith(("en_head", "en_middle")) for s in v2.signals[t] if (s["rps_doc_word_count"][0][2] or 100) < 50
    )
    main(["data", "verify", str(destination)])
    assert "OK: " in capsys.readouterr().out
    main(["data", "inspect", str(destination), "--documents", "0", "--rejected", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert len(re.findall(r"--- removed: ", out)) == 2 and len(re.findall(r"--- kept: ", out)) == 2
    # Other filters are other output: refused in the same destination.
    with pytest.raises(SystemExit):
        main(["prepare", "--source_path", str(v2.root), "--tokenizer_path", str(tokenizer_model), "--destination_path", str(destination), "--snapshots", "2022-49", "--filters", "gopher", "--chunk_size", "4096"])
    assert "other settings" in capsys.readouterr().err


def test_output_is_the_same_with_two_workers(v2, gopher_prepared, tokenizer_model, tmp_path):
    destination = tmp_path / "data"
    with pytest.raises(PajamaError, match="could not be read to the end"):
        run(v2.root, tokenizer_model, destination, filters="gopher_card", dedup=True, count_removed_tokens=True, num_workers=2)
    files = sorted(p.name for p in gopher_prepared.glob("*.bin"))
    assert files == sorted(p.name for p in destination.glob("*.bin"))
    assert all((destination / f).read_bytes() == (gopher_prepared / f).read_bytes() for f in files)
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (gopher_prepared, destination))
    assert one["filtering"] == two["filtering"]
