"""pajama evaluate: fixed sequences, deterministic, equal to a direct computation, and refusing
data prepared with another tokenizer."""

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F

from pajama import PajamaError, checkpoint
from pajama.chunks import ChunkWriter, dtype_for_vocab
from pajama.evaluation.perplexity import evaluate
from pajama.model import LLaMA
from pajama.model_config import ModelConfig
from pajama.corpora import LLAMA_WEIGHTS
from pajama.tokenizer import AnyTokenizer, load_tokenizer

SAMPLE = Path(__file__).parents[1] / "pajama" / "sample"
SUBSETS = {"arxiv": "arxiv_sample.jsonl", "c4": "c4_sample.jsonl", "github": "github_sample.jsonl"}
DOCS = {"arxiv": 1, "c4": 30, "github": 6}  # documents per subset: streams of different lengths


def documents(filename: str, count: int, chars: int = 3000) -> list[str]:
    with open(SAMPLE / filename, encoding="utf-8") as f:
        return [json.loads(line)["text"][:chars] for _, line in zip(range(count), f)]


def prepare(directory: Path, tokenizer: AnyTokenizer, sha256: str | None = None) -> Path:
    """A prepared directory as ``pajama prepare`` writes it: chunk files and a manifest."""
    directory.mkdir(parents=True)
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    chunks = []
    for subset, filename in SUBSETS.items():
        writer = ChunkWriter(directory, f"{subset}_sample-0000", 2000, dtype, filler=tokenizer.eos_id)
        texts = documents(filename, DOCS[subset], chars=400 if subset == "arxiv" else 3000)  # arxiv: shorter than the budget
        for ids in tokenizer.encode_batches(texts, dtype):
            writer.add(ids)
        chunks += [{"file": name, "subset": subset, "tokens": n} for name, n in writer.close()]
    manifest = {"tokenizer": {"sha256": sha256 or tokenizer.sha256, "vocab_size": tokenizer.vocab_size}, "chunks": chunks}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    text = root / "text.txt"
    text.write_text("\n".join(t for f in SUBSETS.values() for t in documents(f, 10)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(root / "tokenizer"), model_type="bpe", vocab_size=400, byte_fallback=True, character_coverage=0.995,
        split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, max_sentence_length=1 << 16, minloglevel=2,
    )  # fmt: skip
    tokenizer = load_tokenizer(root / "tokenizer.model")
    model = LLaMA(ModelConfig("tiny", n_layer=2, n_head=2, n_embd=64, vocab_size=tokenizer.vocab_size, block_size=64))
    model.init_weights(3)
    model.eval()
    ckpt = root / "run" / "checkpoints" / "step-00000020"
    ckpt.mkdir(parents=True)
    meta = {"model": asdict(model.config), "tokenizer_sha256": tokenizer.sha256, "step": 20, "tokens": 1280, "train": {}, "data": {}}
    (ckpt / checkpoint.META).write_text(json.dumps(meta))
    torch.save({"model": model.state_dict()}, ckpt / checkpoint.STATE)
    data = prepare(root / "data", tokenizer)
    return root, tokenizer, model, ckpt, data


def direct(model, data: Path, max_tokens: int, seq: int, bos: int | None = None) -> dict[str, float]:
    """Per-subset mean loss over the first N blocks of each stream, computed one sequence at a
    time; with ``bos``, each document of a sequence (they start at BOS) run on its own."""
    manifest = json.loads((data / "manifest.json").read_text())
    streams: dict[str, list] = {}
    for chunk in manifest["chunks"]:
        raw = np.fromfile(data / chunk["file"], dtype=np.uint16, offset=24)
        streams.setdefault(chunk["subset"], []).append(raw[: chunk["tokens"]])
    n = (max_tokens // len(streams)) // seq
    out = {}
    for subset, pieces in sorted(streams.items()):
        tokens = torch.from_numpy(np.concatenate(pieces).astype(np.int64))
        count = min(len(tokens) // (seq + 1), n)
        losses = []
        with torch.no_grad():
            for b in tokens[: count * (seq + 1)].view(count, seq + 1):
                x = b[:-1]
                starts = [0] + [i for i in range(1, seq) if bos is not None and x[i] == bos] + [seq]
                logits = torch.cat([model(x[start:end][None])[0] for start, end in zip(starts, starts[1:])])
                losses.append(F.cross_entropy(logits, b[1:]).item())
        out[subset] = (sum(losses) / count, count)
    return out


def test_evaluate_is_deterministic_and_matches_a_direct_computation(setup, capsys):
    _, _, model, ckpt, data = setup
    # fp32, to compare with the direct fp32 computation below
    first = evaluate(ckpt, data, max_tokens=3 * 64 * 8, micro_batch_size=3, accelerator="cpu", precision="32-true")
    assert evaluate(ckpt, data, max_tokens=3 * 64 * 8, micro_batch_size=3, accelerator="cpu", precision="32-true") == first
    other_batches = evaluate(ckpt.parents[1], data, max_tokens=3 * 64 * 8, micro_batch_size=8, accelerator="cpu", precision="32-true")  # the run dir: its newest
    assert other_batches["loss"] == pytest.approx(first["loss"], rel=1e-6)

    expected = direct(model, data, 3 * 64 * 8, 64)
    assert sorted(first["subsets"]) == sorted(expected)
    for subset, (loss, count) in expected.items():
        got = first["subsets"][subset]
        assert got["sequences"] == count and got["tokens"] == count * 64
        assert got["loss"] == pytest.approx(loss, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert first["subsets"]["arxiv"]["sequences"] < 8 == first["subsets"]["c4"]["sequences"]  # arxiv is short, c4 is cut at the budget
    assert first["tokens"] == sum(s["tokens"] for s in first["subsets"].values()) <= 3 * 64 * 8
    weights = {s: LLAMA_WEIGHTS[s] for s in expected}
    mixed = sum(weights[s] * expected[s][0] for s in expected) / sum(weights.values())
    assert first["loss"] == pytest.approx(mixed, rel=1e-5)
    per_token = sum(loss * count for loss, count in expected.values()) / sum(count for _, count in expected.values())
    assert first["token_weighted_loss"] == pytest.approx(per_token, rel=1e-5)
    assert first["step"] == 20 and first["block_size"] == 64
    table = capsys.readouterr().out
    assert "overall (mixture)" in table and "github" in table


def test_document_mask_scores_each_document_on_its_own(setup):
    _, tokenizer, model, ckpt, data = setup
    masked = evaluate(ckpt, data, max_tokens=3 * 64 * 4, micro_batch_size=3, accelerator="cpu", precision="32-true", document_mask=True)
    packed = evaluate(ckpt, data, max_tokens=3 * 64 * 4, micro_batch_size=3, accelerator="cpu", precision="32-true")
    assert masked["document_mask"] and not packed["document_mask"]  # the checkpoint was trained without the mask
    expected = direct(model, data, 3 * 64 * 4, 64, bos=tokenizer.bos_id)
    for subset, (loss, _) in expected.items():
        assert masked["subsets"][subset]["loss"] == pytest.approx(loss, rel=1e-5)
    assert masked["subsets"]["c4"]["loss"] != pytest.approx(packed["subsets"]["c4"]["loss"], rel=1e-4)  # c4's short documents share sequences


def test_block_size_and_limits(setup):
    _, _, model, ckpt, data = setup
    short = evaluate(ckpt, data, max_tokens=3 * 32 * 4, block_size=32, accelerator="cpu")
    assert short["block_size"] == 32 and all(s["sequences"] == 4 for s in short["subsets"].values())
    expected = direct(model, data, 3 * 32 * 4, 32)
    assert all(short["subsets"][s]["loss"] == pytest.approx(loss, rel=1e-5) for s, (loss, _) in expected.items())
    with pytest.raises(PajamaError, match="block_size"):
        evaluate(ckpt, data, block_size=65, accelerator="cpu")
    with pytest.raises(PajamaError, match="max_tokens"):
        evaluate(ckpt, data, max_tokens=100, accelerator="cpu")


def test_refuses_data_prepared_with_another_tokenizer(setup):
    root, tokenizer, _, ckpt, _ = setup
    other = prepare(root / "other", tokenizer, sha256="0" * 64)
    with pytest.raises(PajamaError, match="another tokenizer"):
        evaluate(ckpt, other, accelerator="cpu")
