"""Export to Hugging Face and import from Hugging Face and Meta layouts: transformers loads the
export with pajama's logits and tokens, imports round-trip bit for bit, sharded (FSDP)
checkpoints export without GPUs, and nothing but tensors is ever unpickled."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file

from pajama import PajamaError, checkpoint
from pajama.generate import load_model
from pajama.hf import export, halves_to_interleaved, import_, interleaved_to_halves, parse_size
from pajama.model import LLaMA
from pajama.model_config import ModelConfig
from pajama.tokenizer import load_tokenizer

SAMPLE = Path(__file__).parents[1] / "pajama" / "sample"
TEXTS = [
    "Hello world",
    "The llama (Lama glama) is a domesticated South American camelid.",
    "digits 12345 and 3.14159",
    "two  spaces\nnew lines\n\n\tand a tab",
    "émoji 🦙 ünïcödé 日本語",
]


def train_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A small SentencePiece model with LLaMA's settings, on the bundled sample's text."""
    lines = []
    for path in sorted(SAMPLE.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            lines += [json.loads(line)["text"] for _, line in zip(range(15), f)]
    text = directory / "text.txt"
    text.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / "tokenizer"), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=0.99995, max_sentence_length=1 << 16, minloglevel=2,
    )  # fmt: skip
    return directory / "tokenizer.model"


def tiny_model(vocab_size: int, seed: int = 0, **shape) -> LLaMA:
    """A tiny model with large, varied weights: attention far from uniform and norms not all
    ones, so a wrong q/k permutation or a misplaced norm would show in the logits."""
    model = LLaMA(ModelConfig("tiny", n_layer=2, n_head=2, n_embd=64, vocab_size=vocab_size, block_size=64).replace(**shape))
    model.init_weights(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[1] ** 0.5)
    return model.eval()


def write_checkpoint(directory: Path, model: LLaMA, tokenizer_sha256: str | None, sharded: bool = False) -> Path:
    """A checkpoint in pajama's layout, as pretrain writes it (full or FSDP-sharded state)."""
    directory.mkdir(parents=True)
    meta = {"model": asdict(model.config), "tokenizer_sha256": tokenizer_sha256, "step": 10, "tokens": 640, "train": {}, "data": {}}
    (directory / checkpoint.META).write_text(json.dumps(meta))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if sharded:
        import torch.distributed.checkpoint as dcp

        state = {f"model.{k}": v for k, v in weights.items()} | {"step": 10}
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(directory / checkpoint.STATE)), no_dist=True)
    else:
        torch.save({"model": weights, "step": 10}, directory / checkpoint.STATE)
    return directory


def hf_model(directory: Path):
    import transformers
    dtype = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}
    return transformers.LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager", **dtype).eval()


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tokenizer, a tiny model, its checkpoint and its export."""
    root = tmp_path_factory.mktemp("hf")
    tokenizer = load_tokenizer(train_tokenizer(root))
    model = tiny_model(tokenizer.vocab_size)
    ckpt = write_checkpoint(root / "run" / "checkpoints" / "step-00000010", model, tokenizer.sha256)
    exported = root / "export"
    export(ckpt, exported, tokenizer_path=tokenizer.path)
    return root, tokenizer, model, ckpt, exported


def test_permutation_is_inverted_and_not_trivial():
    w = torch.arange(8 * 3).reshape(8, 3)
    halves = interleaved_to_halves(w, n_head=2)
    assert not torch.equal(halves, w)
    assert halves[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]  # each head: its even rows, then its odd rows
    assert torch.equal(halves_to_interleaved(halves, n_head=2), w)


def test_transformers_gives_pajama_logits(setup):
    _, tokenizer, model, _, exported = setup
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= names
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is False and config["torch_dtype"] == "float32"
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    ids = torch.randint(0, tokenizer.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids)
        got = hf_model(exported)(ids).logits
    assert relative_diff(got, expected) <= 1e-4


def test_transformers_tokenizer_gives_sentencepiece_ids(setup):
    import transformers
    _, tokenizer, _, _, exported = setup
    hf = transformers.AutoTokenizer.from_pretrained(exported)
    for text in TEXTS:  # none starts with whitespace: transformers 5 adds no "▁" before a leading space
        ids = hf(text)["input_ids"]
        assert ids == tokenizer.encode(text, bos=True, eos=False), text
        assert hf.decode(ids, skip_special_tokens=True) == text


def test_sharded_export_loads(setup, tmp_path):
    _, tokenizer, model, ckpt, _ = setup
    export(ckpt, tmp_path / "sharded", tokenizer_path=tokenizer.path, max_shard_size="150KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / "sharded" / f).stat().st_size <= 150_000 + 200_000 for f in files)
    assert len(index["weight_map"]) == len(model.state_dict())
    ids = torch.randint(0, tokenizer.vocab_size, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_diff(hf_model(tmp_path / "sharded")(ids).logits, model(ids)) <= 1e-4


def test_import_of_the_export_is_bit_identical(setup, tmp_path):
    _, tokenizer, model, _, exported = setup
    import_(exported, tmp_path / "imported", model_name="roundtrip")
    config, weights, meta = checkpoint.load_model_weights(tmp_path / "imported")
    assert config == model.config.replace(name="roundtrip")
    assert meta["tokenizer_sha256"] == tokenizer.sha256 and meta["step"] == 0
    assert (tmp_path / "imported" / "tokenizer.model").read_bytes() == tokenizer.model_bytes
    original = model.state_dict()
    assert sorted(weights) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(weights[name], tensor), name
    loaded, _ = load_model(tmp_path / "imported", torch.device("cpu"))
    ids = torch.randint(0, tokenizer.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_export_in_bfloat16(setup, tmp_path):
    _, tokenizer, model, ckpt, _ = setup
    export(ckpt, tmp_path / "bf16", tokenizer_path=tokenizer.path, dtype="bfloat16")
    tensors = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert torch.equal(tensors["lm_head.weight"], model.lm_head.weight.to(torch.bfloat16))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("release", ["llama2", "llama3"])
def test_meta_layout_with_two_model_parallel_shards_imports(setup, tmp_path, release):
    """Meta's model-parallel shards joined: Llama 1 and 2 cut the embedding table along the
    model width (ParallelEmbedding), Llama 3 along the vocabulary (VocabParallelEmbedding)."""
    _, tokenizer, model, _, _ = setup
    # Meta's names and the dim each model-parallel shard is cut along (None: every shard holds it all).
    layer = {
        "attention_norm.weight": ("attn_norm.weight", None), "ffn_norm.weight": ("mlp_norm.weight", None),
        "attention.wq.weight": ("attn.wq.weight", 0), "attention.wk.weight": ("attn.wk.weight", 0),
        "attention.wv.weight": ("attn.wv.weight", 0), "attention.wo.weight": ("attn.wo.weight", 1),
        "feed_forward.w1.weight": ("mlp.gate.weight", 0), "feed_forward.w3.weight": ("mlp.up.weight", 0),
        "feed_forward.w2.weight": ("mlp.down.weight", 1),
    }  # fmt: skip
    embedding_dim = 1 if release == "llama2" else 0
    top = {"tok_embeddings.weight": ("tok_embeddings.weight", embedding_dim), "norm.weight": ("norm.weight", None), "output.weight": ("lm_head.weight", 0)}
    mapping = dict(top) | {f"layers.{i}.{k}": (f"layers.{i}.{v}", d) for i in range(2) for k, (v, d) in layer.items()}
    sd = model.state_dict()
    source = tmp_path / "meta" / "tiny"
    source.mkdir(parents=True)
    for rank in range(2):
        shard = {name: (sd[ours] if dim is None else sd[ours].chunk(2, dim=dim)[rank]).clone() for name, (ours, dim) in mapping.items()}
        shard["rope.freqs"] = torch.ones(16)
        torch.save(shard, source / f"consolidated.{rank:02d}.pth")
    params = {"dim": 64, "multiple_of": 256, "n_heads": 2, "n_layers": 2, "norm_eps": 1e-6, "vocab_size": -1}
    if release == "llama3":
        params |= {"n_kv_heads": 2, "rope_theta": 500000.0, "vocab_size": tokenizer.vocab_size}
    (source / "params.json").write_text(json.dumps(params))
    (tmp_path / "meta" / "tokenizer.model").write_bytes(tokenizer.model_bytes)  # Meta ships it beside the model directories
    import_(source, tmp_path / "imported")
    config, weights, meta = checkpoint.load_model_weights(tmp_path / "imported")
    # params.json gives no context length: Llama 3's is its pre-training one.
    expected = {"llama2": {"block_size": 2048}, "llama3": {"block_size": 8192, "rope_base": 500000.0}}[release]
    assert config == model.config.replace(name="imported", **expected)
    assert meta["tokenizer_sha256"] == tokenizer.sha256
    assert sorted(weights) == sorted(sd) and all(torch.equal(weights[k], sd[k]) for k in sd)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_exports_without_gpus(setup, tmp_path):
    _, tokenizer, model, _, exported = setup
    ckpt = write_checkpoint(tmp_path / "fsdp", model, tokenizer.sha256, sharded=True)
    assert (ckpt / checkpoint.STATE).is_dir()
    export(ckpt, tmp_path / "export", tokenizer_path=tokenizer.path)
    got, want = load_file(str(tmp_path / "export" / "model.safetensors")), load_file(str(exported / "model.safetensors"))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_export_checks_the_tokenizer(setup, tmp_path):
    root, tokenizer, model, ckpt, _ = setup
    other = tmp_path / "other"
    other.mkdir()
    other_tokenizer = train_tokenizer(other, vocab_size=420)
    with pytest.raises(PajamaError, match="not the tokenizer"):
        export(ckpt, tmp_path / "a", tokenizer_path=other_tokenizer)
    with pytest.raises(PajamaError, match="no tokenizer kept with the checkpoint"):
        export(ckpt, tmp_path / "b")
    # Found without --tokenizer_path when it lies in the run directory.
    (root / "run" / "tokenizer.model").write_bytes(tokenizer.model_bytes)
    try:
        export(root / "run", tmp_path / "c")  # the run directory: its newest checkpoint
    finally:
        (root / "run" / "tokenizer.model").unlink()
    assert (tmp_path / "c" / "tokenizer.model").read_bytes() == tokenizer.model_bytes
    with pytest.raises(PajamaError, match="already exists"):
        export(ckpt, tmp_path / "c", tokenizer_path=tokenizer.path)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary directory left behind


class _Trap:
    """Unpickling this would run ``_sprung``: the loader must refuse it instead."""

    def __reduce__(self):
        return (_sprung, ())


SPRUNG = []


def _sprung():
    SPRUNG.append(True)
    return {}


def test_import_never_unpickles_objects(setup, tmp_path):
    _, _, _, _, exported = setup
    source = tmp_path / "bin"
    source.mkdir()
    (source / "config.json").write_bytes((exported / "config.json").read_bytes())
    torch.save({"model.embed_tokens.weight": _Trap()}, source / "pytorch_model.bin")
    with pytest.raises(PajamaError, match="tensors only"):
        import_(source, tmp_path / "imported")
    assert not SPRUNG and not (tmp_path / "imported").exists()


def test_import_loads_pytorch_bins_and_refuses_other_architectures(setup, tmp_path):
    _, _, model, _, exported = setup
    source = tmp_path / "bin"
    source.mkdir()
    config = json.loads((exported / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": False}))
    torch.save(load_file(str(exported / "model.safetensors")), source / "pytorch_model.bin")
    import_(source, tmp_path / "imported")
    _, weights, meta = checkpoint.load_model_weights(tmp_path / "imported")
    assert meta["tokenizer_sha256"] is None
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # Tied embeddings that store the table twice: one table kept; two different tables refused.
    (source / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    with pytest.raises(PajamaError, match="lm_head.weight differs"):
        import_(source, tmp_path / "tied")
    tensors = load_file(str(exported / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    torch.save(tensors, source / "pytorch_model.bin")
    import_(source, tmp_path / "tied")
    tied_config, weights, _ = checkpoint.load_model_weights(tmp_path / "tied")
    assert tied_config.tie_embeddings and "lm_head.weight" not in weights
    for changes, problem in (({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "RoPE scaling of type 'yarn'"), ({"attention_bias": True}, "biases")):
        (source / "config.json").write_text(json.dumps(config | changes))
        with pytest.raises(PajamaError, match=problem):
            import_(source, tmp_path / "other")


FAMILIES = {
    "gqa": {"n_head": 4, "n_kv_head": 2},  # TinyLlama's kind: query heads share key/value heads in groups
    "mqa": {"n_head": 4, "n_kv_head": 1},
    "tied": {"n_head": 4, "n_kv_head": 2, "tie_embeddings": True},  # Llama 3.2 1B/3B
    "llama3-rope": {"n_head": 4, "n_kv_head": 2, "rope_base": 500000.0, "rope_scaling_factor": 32.0, "rope_original_context": 32},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_exports_with_transformers_logits(setup, tmp_path, family):
    _, tokenizer, _, _, _ = setup
    model = tiny_model(tokenizer.vocab_size, seed=3, **FAMILIES[family])
    ckpt = write_checkpoint(tmp_path / "ckpt", model, tokenizer.sha256)
    export(ckpt, tmp_path / "export", tokenizer_path=tokenizer.path)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["num_key_value_heads"] == model.config.n_kv_head and config["tie_word_embeddings"] == model.config.tie_embeddings
    assert ("lm_head.weight" in load_file(str(tmp_path / "export" / "model.safetensors"))) != model.config.tie_embeddings
    ids = torch.randint(0, tokenizer.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_diff(hf_model(tmp_path / "export")(ids).logits, model(ids)) <= 1e-4
    import_(tmp_path / "export", tmp_path / "imported", model_name="tiny", block_size=64)  # the whole context, rotary scaling's too
    config, weights, _ = checkpoint.load_model_weights(tmp_path / "imported")
    assert config == model.config
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transformers_model_imports_bit_identically(setup, tmp_path, family):
    """A random model made by transformers (its own layout and conventions) imports into pajama
    with the same logits, and exports back to the same tensors, bit for bit."""
    import transformers

    shape = FAMILIES[family]
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    hf_config = transformers.LlamaConfig(
        vocab_size=setup[1].vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=shape["n_head"],
        num_key_value_heads=shape["n_kv_head"], max_position_embeddings=64, rms_norm_eps=1e-5,
        tie_word_embeddings=shape.get("tie_embeddings", False), rope_theta=shape.get("rope_base", 10000.0),
        rope_scaling=rope if "rope_scaling_factor" in shape else None,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in reference.parameters():  # norms away from one: a misplaced norm shows
            p.add_(0.3 * torch.randn_like(p))
    reference.save_pretrained(tmp_path / "hf")
    import_(tmp_path / "hf", tmp_path / "imported", block_size=64)
    config, _, _ = checkpoint.load_model_weights(tmp_path / "imported")
    assert (config.n_kv_head, config.tie_embeddings, config.intermediate_size) == (shape["n_kv_head"], hf_config.tie_word_embeddings, 160)
    assert config.rope_scaling_factor == (32.0 if "rope_scaling_factor" in shape else None)
    loaded, _ = load_model(tmp_path / "imported", torch.device("cpu"))
    ids = torch.randint(0, hf_config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert relative_diff(loaded(ids), reference(ids).logits) <= 1e-4
    export(tmp_path / "imported", tmp_path / "back", tokenizer_path=setup[1].path)
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    original = {k: v for k, v in reference.state_dict().items() if not (hf_config.tie_word_embeddings and k == "lm_head.weight")}
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[k], v) for k, v in original.items())


def test_import_keeps_the_pre_training_context_of_rotary_scaled_models(setup, tmp_path, capsys):
    """Llama 3.1 / 3.2 declare the context their rotary scaling reaches (131,072) as
    max_position_embeddings; imported, they keep the one they were pre-trained on (8192, the
    scaling's original context) unless --block_size asks for more, up to the declared one."""
    _, tokenizer, _, _, _ = setup
    model = tiny_model(tokenizer.vocab_size, seed=3, **FAMILIES["llama3-rope"])  # context 64, original context 32
    export(write_checkpoint(tmp_path / "ckpt", model, tokenizer.sha256), tmp_path / "export", tokenizer_path=tokenizer.path)
    import_(tmp_path / "export", tmp_path / "default")
    assert checkpoint.load_model_weights(tmp_path / "default")[0].block_size == 32
    assert "context 32 (it extends to 64: --block_size 64)" in capsys.readouterr().out
    import_(tmp_path / "export", tmp_path / "longer", block_size=48)
    assert checkpoint.load_model_weights(tmp_path / "longer")[0].block_size == 48
    with pytest.raises(PajamaError, match="--block_size 65: .* declares a context of at most 64 tokens"):
        import_(tmp_path / "export", tmp_path / "too_long", block_size=65)
    plain = tiny_model(tokenizer.vocab_size, seed=3, **FAMILIES["gqa"])  # no rotary scaling: max_position_embeddings
    export(write_checkpoint(tmp_path / "plain_ckpt", plain, tokenizer.sha256), tmp_path / "plain_export", tokenizer_path=tokenizer.path)
    import_(tmp_path / "plain_export", tmp_path / "plain")
    assert checkpoint.load_model_weights(tmp_path / "plain")[0].block_size == 64


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("150KB") == 150_000
    assert parse_size("1000") == 1000
    with pytest.raises(PajamaError):
        parse_size("five gigabytes")


def test_llama3_shaped_model_with_a_tokenizer_json_exports_and_imports(hf_tokenizer, stdlib_texts, tmp_path):
    """A Llama-3.2-shaped model (grouped-query attention, tied embeddings, Llama 3 rotary
    scaling) with a byte-level BPE tokenizer.json: transformers loads the export's tokenizer
    with the same ids and the model with the same logits; import brings the tokenizer.json back."""
    import transformers

    model = tiny_model(hf_tokenizer.vocab_size, seed=5, **FAMILIES["tied"], rope_base=500000.0, rope_scaling_factor=32.0, rope_original_context=32)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000010", model, hf_tokenizer.sha256)
    hf_tokenizer.copy_to(tmp_path / "run")  # as pretrain keeps it
    export(tmp_path / "run", tmp_path / "export")
    assert (tmp_path / "export" / "tokenizer.json").read_bytes() == hf_tokenizer.path.read_bytes()
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (hf_tokenizer.bos_id, hf_tokenizer.eos_id)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    for text in stdlib_texts[:20] + TEXTS:
        assert auto(text, add_special_tokens=False)["input_ids"] == hf_tokenizer.encode(text, bos=False, eos=False), text
    assert (auto.bos_token, auto.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")
    ids = torch.tensor([hf_tokenizer.encode(stdlib_texts[0], eos=False)[:64]])
    with torch.no_grad():
        assert relative_diff(hf_model(tmp_path / "export")(ids).logits, model(ids)) <= 1e-4
    import_(tmp_path / "export", tmp_path / "imported", model_name="tiny", block_size=64)
    config, weights, meta = checkpoint.load_model_weights(tmp_path / "imported")
    assert config == model.config and meta["tokenizer_sha256"] == hf_tokenizer.sha256
    assert (tmp_path / "imported" / "tokenizer.json").read_bytes() == hf_tokenizer.path.read_bytes()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
