"""The SentencePiece tokenizer: LLaMA's conventions, exact round trips, exact splitting of long texts."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pajama import PajamaError
from pajama.tokenizer import PIECE, SPLIT_ABOVE, Tokenizer


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
        tok = Tokenizer(tmp_path / f"{name}.model")
        assert not tok.splittable
        text = "\n\n".join(stdlib_texts[:100])
        assert tok.split(text) == [text]
        assert np.concatenate(list(tok.encode_batches([text], np.dtype(np.int32)))).tolist() == tok.encode(text)


def test_bad_tokenizer_paths_are_one_line_errors_naming_the_path(tmp_path):
    text = tmp_path / "tokenizer.json"
    text.write_text(json.dumps({"model": "not sentencepiece"}))
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    for path, message in [
        (text, "not a SentencePiece model"),
        (empty, "not a SentencePiece model"),
        (tmp_path / "missing.model", "tokenizer not found"),
        (tmp_path, "tokenizer not found"),  # a directory without tokenizer.model
    ]:
        with pytest.raises(PajamaError) as e:
            Tokenizer(path)
        assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_train_tokenizer_on_the_bundled_sample_layout(tmp_path):
    import pajama
    from pajama.tokenizer import train_tokenizer

    path = train_tokenizer(Path(pajama.__file__).parent / "sample", tmp_path, vocab_size=600, sample=True, max_bytes=300_000)
    tok = Tokenizer(path)
    assert tok.vocab_size == 600 and tok.splittable
    assert tok.decode(tok.encode("import os\n    return x  # done", bos=False, eos=False)) == "import os\n    return x  # done"


def test_train_tokenizer_uses_what_it_can_read_of_a_damaged_file(tmp_path, jsonl, stdlib_texts, capsys):
    from pajama.tokenizer import train_tokenizer

    jsonl(tmp_path / "corpus" / "c4" / "a.jsonl", stdlib_texts[:500])
    broken = jsonl(tmp_path / "corpus" / "arxiv" / "b.jsonl.zst", stdlib_texts * 2, compress="zst")
    broken.write_bytes(broken.read_bytes()[:-100])
    tok = Tokenizer(train_tokenizer(tmp_path / "corpus", tmp_path / "model", vocab_size=500))
    assert tok.vocab_size == 500
    assert f"note: {broken}:" in capsys.readouterr().out
