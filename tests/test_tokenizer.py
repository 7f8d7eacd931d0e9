"""Tokenizers: SentencePiece with LLaMA's conventions and Hugging Face tokenizer.json files; exact
round trips, the library's own ids, exact splitting of long texts, loading, copies."""

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pajama import PajamaError
from pajama.tokenizer import load_tokenizer
from pajama.tokenizer.sentencepiece import PIECE, SPLIT_ABOVE


def test_special_ids_and_vocabulary(tokenizer):
    sp = tokenizer.processor
    assert tokenizer.vocab_size == 1000
    assert (sp.unk_id(), tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert len(tokenizer.sha256) == 64


def test_encode_decode_round_trip_on_real_text(tokenizer, stdlib_texts):
    for text in stdlib_texts[:300] + ["  leading spaces", "trailing  ", "tabs\tand\r\nCRLF", "a\x00b", " \n "]:
        ids = tokenizer.encode(text)
        assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
        assert tokenizer.bos_id not in ids[1:-1] and tokenizer.eos_id not in ids[1:-1]
        assert tokenizer.decode(ids[1:-1]) == text


def test_byte_fallback_round_trips_unseen_characters(tokenizer):
    text = "llamas 😀 and ünïcödé ∑ 漢字"
    ids = tokenizer.encode(text, bos=False, eos=False)
    assert tokenizer.decode(ids) == text
    assert 0 not in ids  # never <unk>
    assert any(tokenizer.processor.is_byte(i) for i in ids)


def test_digits_are_split(tokenizer):
    ids = tokenizer.encode("In 2023 there were 1234567 tokens", bos=False, eos=False)
    pieces = [tokenizer.processor.id_to_piece(i) for i in ids]
    assert all(sum(ch.isdigit() for ch in piece) <= 1 for piece in pieces)
    assert sum(ch.isdigit() for piece in pieces for ch in piece) == 11


def test_encode_batches_frames_each_text(tokenizer, stdlib_texts):
    texts = stdlib_texts + ["\n\n".join(stdlib_texts[i : i + 20]) for i in range(0, 400, 20)]
    assert sum(len(tokenizer.split(t)) > 1 for t in texts) > 10  # encoded in pieces
    batches = list(tokenizer.encode_batches(texts, np.dtype(np.uint16), max_chars=50_000))
    assert len(batches) > 5 and all(b.dtype == np.uint16 for b in batches)
    expected = [i for t in texts for i in tokenizer.encode(t)]
    assert np.concatenate(batches).tolist() == expected
    assert list(tokenizer.encode_batches([], np.dtype(np.uint16))) == []


def test_encode_batches_frames_empty_texts_and_texts_longer_than_a_batch(tokenizer, stdlib_texts):
    texts = ["", stdlib_texts[0], "", "\n\n".join(stdlib_texts[:300]), "", stdlib_texts[1]]
    expected = [i for t in texts for i in tokenizer.encode(t)]
    for max_chars in (1, 1_000, 50_000, 10**9):
        assert np.concatenate(list(tokenizer.encode_batches(texts, np.dtype(np.int32), max_chars=max_chars))).tolist() == expected


def long_texts(stdlib_texts) -> list[str]:
    """Long real texts: module sources (code, deep indentation) and joined docstrings."""
    import collections, difflib, json as json_module, pathlib, textwrap  # noqa: E401

    sources = [inspect.getsource(m) for m in (collections, difflib, json_module.decoder, json_module.encoder, pathlib, textwrap)]
    joined = ["\n\n".join(stdlib_texts[i : i + 200]) for i in range(0, 1200, 200)]
    odd = [
        "word " * 20_000,  # single spaces everywhere
        "x  " * 20_000,  # only double spaces: no cut point is exact
        "y \u2581 " * 10_000,  # SentencePiece's own space symbol in the text
        "z" * 50_000,  # no space at all
        "emoji 😀 and 漢字 " * 5_000,
    ]
    return sources + joined + odd


def test_long_texts_are_split_and_give_exactly_the_ids_of_the_whole(tokenizer, stdlib_texts):
    assert tokenizer.splittable
    texts = [t for t in long_texts(stdlib_texts) if len(t) > SPLIT_ABOVE]
    assert len(texts) >= 12
    for text in texts:
        pieces = tokenizer.split(text)
        assert "".join(p + " " for p in pieces)[:-1] == text  # each cut removed exactly one space
        if text[:4] not in ("x  x", "zzzz"):
            assert len(pieces) > 1 and max(map(len, pieces)) < 3 * PIECE, text[:20]
        whole = tokenizer.encode(text)
        assert np.concatenate(list(tokenizer.encode_batches([text], np.dtype(np.int32)))).tolist() == whole
    # A bounded step size streams the same ids.
    stream = np.concatenate(list(tokenizer.encode_batches(texts, np.dtype(np.int32), max_chars=20_000)))
    assert stream.tolist() == [i for t in texts for i in tokenizer.encode(t)]


def test_models_where_splitting_is_not_exact_are_not_split(tmp_path, stdlib_texts):
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(line for t in stdlib_texts for line in t.splitlines() if line.strip()))
    # SentencePiece's defaults: NFKC normalisation and removal of extra whitespace.
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "nfkc"), model_type="bpe", vocab_size=500, minloglevel=2)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "unigram"), model_type="unigram", vocab_size=500, normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    for name in ("nfkc", "unigram"):
        tok = load_tokenizer(tmp_path / f"{name}.model")
        assert not tok.splittable
        text = "\n\n".join(stdlib_texts[:100])
        assert tok.split(text) == [text]
        assert np.concatenate(list(tok.encode_batches([text], np.dtype(np.int32)))).tolist() == tok.encode(text)


def test_bad_tokenizer_paths_are_one_line_errors_naming_the_path(tmp_path):
    (tmp_path / "a").mkdir()
    not_a_tokenizer = tmp_path / "a" / "tokenizer.json"
    not_a_tokenizer.write_text(json.dumps({"model": "not sentencepiece"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [')
    wrong_fields = tmp_path / "wrong.json"
    wrong_fields.write_text(json.dumps({"model": {"type": "Nonsense"}}))
    garbage = tmp_path / "garbage"
    garbage.write_text("{ this is not json")
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    tiktoken = tmp_path / "llama3" / "tokenizer.model"  # Meta's own Llama 3 files: tiktoken's format
    tiktoken.parent.mkdir()
    tiktoken.write_text("IQ== 0\nIg== 1\nIw== 2\n")
    (tmp_path / "empty_dir").mkdir()
    for path, message in [
        (not_a_tokenizer, "not a Hugging Face tokenizer.json"),
        (tmp_path / "a", "not a Hugging Face tokenizer.json"),  # the directory's tokenizer.json
        (broken, "not a Hugging Face tokenizer.json"),
        (wrong_fields, "not a Hugging Face tokenizer.json"),
        (garbage, "not a Hugging Face tokenizer.json"),  # no .json, but it starts like JSON
        (empty, "not a SentencePiece model"),
        (tiktoken, "not a SentencePiece model but a tiktoken BPE file"),
        (tmp_path / "missing.model", "tokenizer not found"),
        (tmp_path / "empty_dir", "tokenizer not found (no tokenizer.model or tokenizer.json in this directory)"),
    ]:
        with pytest.raises(PajamaError) as e:
            load_tokenizer(path)
        assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_train_tokenizer_on_the_bundled_sample_layout(tmp_path):
    import pajama
    from pajama.tokenizer import train_tokenizer

    path = train_tokenizer(Path(pajama.__file__).parent / "sample", tmp_path, vocab_size=600, sample=True, max_bytes=300_000)
    tok = load_tokenizer(path)
    assert tok.vocab_size == 600 and tok.splittable
    assert tok.decode(tok.encode("import os\n    return x  # done", bos=False, eos=False)) == "import os\n    return x  # done"


def test_train_tokenizer_uses_what_it_can_read_of_a_damaged_file(tmp_path, jsonl, stdlib_texts, capsys):
    from pajama.tokenizer import train_tokenizer

    jsonl(tmp_path / "corpus" / "c4" / "a.jsonl", stdlib_texts[:500])
    broken = jsonl(tmp_path / "corpus" / "arxiv" / "b.jsonl.zst", stdlib_texts * 2, compress="zst")
    broken.write_bytes(broken.read_bytes()[:-100])
    tok = load_tokenizer(train_tokenizer(tmp_path / "corpus", tmp_path / "model", vocab_size=500))
    assert tok.vocab_size == 500
    assert f"note: {broken}:" in capsys.readouterr().out


# -- Hugging Face tokenizer.json -----------------------------------------------------------------

ODD_TEXTS = [
    "",
    " ",
    "  leading spaces",
    "trailing  ",
    "tabs\tand\r\nCRLF\r\n",
    "a\x00b",
    "llamas 😀 and ünïcödé ∑ 漢字",
    "In 2023 there were 1234567 tokens",
    "the text of a special token: <|end_of_text|> and <|begin_of_text|>, read as text",
]


def test_hf_tokenizer_attributes(hf_tokenizer, hf_tokenizer_json):
    import hashlib

    import tokenizers

    library = tokenizers.Tokenizer.from_file(str(hf_tokenizer_json))
    assert (hf_tokenizer.kind, hf_tokenizer.path, hf_tokenizer.files) == ("huggingface", hf_tokenizer_json, [hf_tokenizer_json])
    assert hf_tokenizer.sha256 == hashlib.sha256(hf_tokenizer_json.read_bytes()).hexdigest()
    assert hf_tokenizer.vocab_size == 500 == library.get_vocab_size(with_added_tokens=True)
    assert (hf_tokenizer.bos_id, hf_tokenizer.eos_id) == (library.token_to_id("<|begin_of_text|>"), library.token_to_id("<|end_of_text|>"))
    assert hf_tokenizer.splittable


def test_hf_ids_are_the_library_s_own_and_decode_back_exactly(hf_tokenizer, hf_tokenizer_json, stdlib_texts):
    from conftest import library_ids

    texts = stdlib_texts[:300] + ODD_TEXTS
    for text, expected in zip(texts, library_ids(hf_tokenizer_json, texts)):
        ids = hf_tokenizer.encode(text)
        assert ids == [hf_tokenizer.bos_id] + expected + [hf_tokenizer.eos_id]
        assert hf_tokenizer.bos_id not in ids[1:-1] and hf_tokenizer.eos_id not in ids[1:-1]
        assert hf_tokenizer.decode(ids) == text == hf_tokenizer.decode(np.array(ids[1:-1]))


def test_hf_text_of_a_special_token_stays_text(hf_tokenizer, hf_tokenizer_json):
    import tokenizers

    text = "a web page about tokenizers: <|end_of_text|>"
    plain = tokenizers.Tokenizer.from_file(str(hf_tokenizer_json)).encode(text, add_special_tokens=False).ids
    assert plain[-1] == hf_tokenizer.eos_id  # what the library does by default: a document would end early
    ids = hf_tokenizer.encode(text, bos=False, eos=False)
    assert hf_tokenizer.eos_id not in ids and len(ids) > len(plain)
    assert hf_tokenizer.decode(ids) == text


def test_hf_encode_batches_frames_each_text_on_any_number_of_threads(hf_tokenizer, stdlib_texts):
    texts = ODD_TEXTS + stdlib_texts + ["\n\n".join(stdlib_texts[:300])] + ODD_TEXTS
    expected = [i for t in texts for i in hf_tokenizer.encode(t)]
    for max_chars, num_threads in ((1, 1), (1_000, 3), (50_000, 1), (50_000, 2), (10**9, 4)):
        batches = list(hf_tokenizer.encode_batches(texts, np.dtype(np.uint16), max_chars=max_chars, num_threads=num_threads))
        assert all(b.dtype == np.uint16 for b in batches)
        assert np.concatenate(batches).tolist() == expected, (max_chars, num_threads)
    assert list(hf_tokenizer.encode_batches([], np.dtype(np.uint16))) == []


def test_hf_encoding_in_a_worker_starts_none_of_the_library_s_threads(hf_tokenizer_json):
    # The library would put a thread on every core in every worker process: with
    # num_threads=1 none may start, and with 2 ours are gone once the batch is done.
    code = f"""
import os, sys
import numpy as np
from pajama.tokenizer import load_tokenizer
threads = lambda: len(os.listdir("/proc/self/task"))
tok = load_tokenizer({str(hf_tokenizer_json)!r})
texts = [open({str(Path(inspect.getfile(inspect)))!r}).read()] * 10
before = threads()
for n in (1, 2):
    for ids in tok.encode_batches(texts, np.dtype(np.int32), max_chars=100_000, num_threads=n):
        pass
print(before, threads(), os.environ.get("TOKENIZERS_PARALLELISM"))
tok.backend.encode_batch(texts)  # the library's own threads, as a check that they show
print(threads() > before)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    env["RAYON_NUM_THREADS"] = "2"  # so the check sees threads on a machine of any size
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    counts, check = result.stdout.splitlines()
    before, after, variable = counts.split()
    assert before == after and variable == "None"  # the variable is left as it was
    assert check == "True"


def long_hf_texts(stdlib_texts) -> list[str]:
    """Texts longer than SPLIT_ABOVE: module sources, joined docstrings, and odd ones."""
    import collections, difflib, pathlib, textwrap  # noqa: E401

    return [
        "\n".join(inspect.getsource(m) for m in (collections, difflib, pathlib, textwrap)),
        "\n\n".join(stdlib_texts[:500]),
        "word \nword \n" * 12_000,  # a space before every newline: no exact cut
        "x.\ny\r\nz\n\nA\n1\n" * 12_000,  # cuts only before "y" and "x"
        "z" * 140_000,  # no newline at all
        "foo bar\nbaz qux \n" * 10_000,
        "a\n\nb\n\n" * 25_000,  # no cut: every newline is next to another
        "emoji 😀\nand 漢字\n" * 10_000,
    ]


@pytest.mark.parametrize("pattern", ["gpt2", "llama3"])
def test_hf_long_texts_are_split_exactly(stdlib_texts, tmp_path, pattern):
    from pajama.tokenizer.huggingface import PIECE, SPLIT_ABOVE, SPLIT_PATTERNS

    from conftest import library_ids, write_hf_tokenizer

    llama3 = next(p for p in SPLIT_PATTERNS if "{1,3}" in p)
    # Short texts that end in a newline teach merges of the newline with what comes before
    # it: a cut anywhere else than where the pre-tokenizer always cuts then changes the ids.
    ends = ["word \n", "x.\n", "\t\n", "1\n", "a\n"] * 3000
    path = write_hf_tokenizer(tmp_path, stdlib_texts[:1000] + ends, vocab_size=400, split_pattern=llama3 if pattern == "llama3" else None)
    tok = load_tokenizer(path)
    assert tok.splittable
    texts = long_hf_texts(stdlib_texts)
    assert all(len(t) > SPLIT_ABOVE for t in texts)
    for text, expected in zip(texts, library_ids(path, texts)):
        pieces = tok.split(text)
        assert "".join(pieces) == text
        if not text.startswith(("word \n", "zzz", "a\n\nb")):
            assert len(pieces) > 1 and all(len(p) >= PIECE for p in pieces[:-1]), text[:20]
        else:
            assert pieces == [text]
        assert np.concatenate(list(tok.encode_batches([text], np.dtype(np.int32)))).tolist() == [tok.bos_id] + expected + [tok.eos_id]
    stream = np.concatenate(list(tok.encode_batches(texts, np.dtype(np.int32), max_chars=70_000, num_threads=2)))
    assert stream.tolist() == [i for t in texts for i in tok.encode(t)]


def test_hf_tokenizers_where_splitting_is_not_exact_are_not_split(stdlib_texts, tmp_path):
    from tokenizers import AddedToken, normalizers, pre_tokenizers

    from conftest import write_hf_tokenizer

    base = load_tokenizer(write_hf_tokenizer(tmp_path / "base", stdlib_texts[:500], vocab_size=300))
    variants = {
        "normalizer": lambda t: setattr(t, "normalizer", normalizers.NFKC()),
        "prefix space": lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
        "added token": lambda t: t.add_tokens([AddedToken("\nimport", lstrip=True)]),
        "whitespace split": lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace()),
    }
    text = "\n\n".join(stdlib_texts[:1500])
    for name, change in variants.items():
        change(base.backend)
        (tmp_path / name).mkdir()
        base.backend.save(str(tmp_path / name / "tokenizer.json"))
        tok = load_tokenizer(tmp_path / name / "tokenizer.json")
        assert not tok.splittable, name
        assert tok.split(text) == [text]
        assert np.concatenate(list(tok.encode_batches([text], np.dtype(np.int32)))).tolist() == tok.encode(text)
        base = load_tokenizer(tmp_path / "base" / "tokenizer.json")


def small_hf_tokenizer(directory: Path, specials: tuple[str, ...], config: dict | None = None, template: str | None = None) -> Path:
    """A tiny tokenizer.json with these special tokens, a tokenizer_config.json beside it
    and a post-processor template, if given."""
    from tokenizers import Tokenizer, processors

    from conftest import write_hf_tokenizer

    path = write_hf_tokenizer(directory, ["some text to learn from"] * 10, vocab_size=280, specials=specials)
    if template is not None:
        tok = Tokenizer.from_file(str(path))
        marks = [(t, tok.token_to_id(t)) for t in specials]
        tok.post_processor = processors.Sequence([processors.ByteLevel(), processors.TemplateProcessing(single=template, special_tokens=marks)])
        tok.save(str(path))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def test_hf_bos_and_eos_come_from_a_known_pair_then_the_config_then_the_template(tmp_path):
    def ids(tok, *tokens):
        return [tok.backend.token_to_id(t) for t in tokens]

    # Llama 3 Instruct: its configuration's EOS ends a turn; documents end with <|end_of_text|>.
    instruct = load_tokenizer(small_hf_tokenizer(tmp_path / "instruct", ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"), config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}))
    assert [instruct.bos_id, instruct.eos_id] == ids(instruct, "<|begin_of_text|>", "<|end_of_text|>")
    assert instruct.files == [instruct.path, tmp_path / "instruct" / "tokenizer_config.json"]
    # The configuration: strings or {"content": ...}.
    configured = load_tokenizer(small_hf_tokenizer(tmp_path / "config", ("[START]", "[END]"), config={"bos_token": {"content": "[START]", "lstrip": False}, "eos_token": "[END]"}))
    assert [configured.bos_id, configured.eos_id] == ids(configured, "[START]", "[END]")
    # The template, inside a sequence of post-processors.
    templated = load_tokenizer(small_hf_tokenizer(tmp_path / "template", ("[START]", "[END]"), template="[START] $A [END]"))
    assert [templated.bos_id, templated.eos_id] == ids(templated, "[START]", "[END]")
    # The configuration first, the template for what it does not name.
    mixed = load_tokenizer(small_hf_tokenizer(tmp_path / "mixed", ("[A]", "[B]", "[C]"), config={"bos_token": "[B]", "eos_token": None}, template="[A] $A [C]"))
    assert [mixed.bos_id, mixed.eos_id] == ids(mixed, "[B]", "[C]")
    # None, or one token for both.
    for name, specials, config, template, message in [
        ("none", ("[X]",), None, None, "cannot tell which token BOS and EOS are"),
        ("no_eos", ("[X]", "[Y]"), None, "[X] $A", "cannot tell which token EOS is"),
        ("same", ("<|endoftext|>",), {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}, None, "the same token (<|endoftext|>, id 0) would begin and end every document"),
    ]:
        path = small_hf_tokenizer(tmp_path / name, specials, config=config, template=template)
        with pytest.raises(PajamaError) as e:
            load_tokenizer(path)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_hf_worker_gets_the_tokenizer_by_path_and_checks_it_by_hash(hf_tokenizer_json, tmp_path):
    import pickle
    import shutil

    path = tmp_path / "tokenizer.json"
    shutil.copy(hf_tokenizer_json, path)
    tok = load_tokenizer(path)
    sent = pickle.dumps(tok)
    assert len(sent) < path.stat().st_size // 10
    copy = pickle.loads(sent)
    assert (copy.sha256, copy.vocab_size, copy.bos_id, copy.eos_id, copy.splittable) == (tok.sha256, tok.vocab_size, tok.bos_id, tok.eos_id, tok.splittable)
    text = "Return the sum of a and b. <|end_of_text|>"
    assert copy.encode(text) == tok.encode(text)
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(PajamaError, match="changed while in use"):
        pickle.loads(sent)


def test_vocabularies_past_65500_produce_ids_past_16_bits(hf_tokenizer_json_int32, hf_tokenizer, stdlib_texts):
    tok = load_tokenizer(hf_tokenizer_json_int32)
    assert tok.vocab_size == 65536 + 500 and (tok.bos_id, tok.eos_id) == (hf_tokenizer.bos_id + 65536, hf_tokenizer.eos_id + 65536)
    ids = np.concatenate(list(tok.encode_batches(stdlib_texts[:50], np.dtype(np.int32))))
    assert ids.min() >= 65536 and ids.max() < tok.vocab_size
    assert (ids - 65536).tolist() == [i for t in stdlib_texts[:50] for i in hf_tokenizer.encode(t)]
    assert tok.decode(tok.encode(stdlib_texts[0])) == stdlib_texts[0]


def test_copy_to_keeps_the_files_and_find_tokenizer_finds_them(tokenizer_model, tmp_path):
    import hashlib
    import os as os_module

    from pajama.tokenizer import find_tokenizer

    hf = load_tokenizer(small_hf_tokenizer(tmp_path / "source", ("[START]", "[END]"), config={"bos_token": "[START]", "eos_token": "[END]"}))
    renamed = tmp_path / "source" / "llama.json"  # the main file is kept as tokenizer.json whatever its name
    hf.path.rename(renamed)
    hf = load_tokenizer(renamed)
    sp = load_tokenizer(tokenizer_model)
    kept = tmp_path / "kept"
    kept.mkdir()
    assert find_tokenizer(kept) is None
    (kept / "tokenizer.model").write_bytes(b"an older, different file")
    for tok in (sp, hf):
        tok.copy_to(kept)
        assert (kept / tok.file_name).read_bytes() == tok.path.read_bytes()
    assert (kept / "tokenizer_config.json").read_bytes() == (renamed.parent / "tokenizer_config.json").read_bytes()
    assert sorted(p.name for p in kept.iterdir()) == ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]  # no temporary files
    stamps = {p.name: os_module.stat(p).st_mtime_ns for p in kept.iterdir()}
    time.sleep(0.01)
    sp.copy_to(kept)
    hf.copy_to(kept)  # again, as on resumption or on another node: nothing is rewritten
    assert {p.name: os_module.stat(p).st_mtime_ns for p in kept.iterdir()} == stamps
    found = find_tokenizer(kept, hf.sha256)
    assert found.kind == "huggingface" and (found.bos_id, found.eos_id, found.sha256) == (hf.bos_id, hf.eos_id, hashlib.sha256(renamed.read_bytes()).hexdigest())
    assert find_tokenizer(kept, sp.sha256).kind == "sentencepiece"
    assert find_tokenizer(kept, "0" * 64) is None
    assert load_tokenizer(kept).kind == "sentencepiece"  # both there: the tokenizer.model
    (kept / "tokenizer.model").unlink()
    assert load_tokenizer(kept).kind == "huggingface"
    hf.path.write_bytes(hf.path.read_bytes() + b" ")
    with pytest.raises(PajamaError, match="changed while in use"):
        hf.copy_to(tmp_path / "elsewhere")


def test_a_directory_with_meta_s_llama3_tokenizer_model_uses_its_tokenizer_json(hf_tokenizer_json, tmp_path):
    import shutil

    shutil.copy(hf_tokenizer_json, tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")
    assert load_tokenizer(tmp_path).kind == "huggingface"


def test_the_tokenizer_package_does_not_import_torch(hf_tokenizer_json, tokenizer_model):
    code = f"import sys\nfrom pajama.tokenizer import load_tokenizer\nfor p in ({str(hf_tokenizer_json)!r}, {str(tokenizer_model)!r}):\n    load_tokenizer(p).encode('x')\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
