import math
import re
import subprocess
import sys

import pytest
import torch

from pajama import PajamaError
from pajama.model import KVCache, LLaMA, apply_rope, rope_cache
from pajama.model_config import PRESETS, ModelConfig, preset

# REFERENCE: Meta's LLaMA v1 parameter counts.
LLAMA_COUNTS = {"7B": 6_738_415_616, "13B": 13_015_864_320, "30B": 32_528_943_616, "65B": 65_285_660_672}
LLAMA_SHAPES = {"7B": (32, 32, 4096, 11008), "13B": (40, 40, 5120, 13824), "30B": (60, 52, 6656, 17920), "65B": (80, 64, 8192, 22016)}


@pytest.mark.parametrize("name", sorted(LLAMA_COUNTS))
def test_llama_presets_have_meta_shapes_and_exact_counts(name):
    config = preset(name)
    assert (config.n_layer, config.n_head, config.n_embd, config.intermediate_size) == LLAMA_SHAPES[name]
    assert config.head_size == 128 and config.vocab_size == 32000 and config.block_size == 2048
    assert config.num_parameters() == LLAMA_COUNTS[name]
    with torch.device("meta"):  # the formula agrees with the modules actually built
        model = LLaMA(config)
    assert sum(p.numel() for p in model.parameters()) == LLAMA_COUNTS[name]


# REFERENCE: the published parameter counts of the family's later members.
FAMILY_COUNTS = {
    "tinyllama-1.1b": 1_100_048_384, "llama2-7b": 6_738_415_616, "llama3.2-1b": 1_235_814_400,
    "llama3.2-3b": 3_212_749_824, "llama3-8b": 8_030_261_248,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAMILY_COUNTS))
def test_family_presets_have_exact_counts(name):
    config = preset(name)
    assert config.num_parameters() == FAMILY_COUNTS[name]
    with torch.device("meta"):
        model = LLaMA(config)
    assert sum(p.numel() for p in model.parameters()) == FAMILY_COUNTS[name]
    # the key/value projections are n_kv_head heads wide
    assert tuple(model.layers[0].attn.wk.weight.shape) == (config.n_kv_head * config.head_size, config.n_embd)
    assert (model.lm_head is None) == config.tie_embeddings


def test_small_presets_count_what_they_build():
    for name in ("tiny", "small", "medium", "1B"):
        with torch.device("meta"):
            model = LLaMA(PRESETS[name])
        assert sum(p.numel() for p in model.parameters()) == PRESETS[name].num_parameters()


def test_unknown_preset_lists_known_ones():
    with pytest.raises(PajamaError, match="known models: tiny, small"):
        preset("8B")


def test_model_command_prints_counts():
    out = subprocess.run([sys.executable, "-m", "pajama.cli", "model", "7B"], capture_output=True, text=True, check=True).stdout
    assert "6,738,415,616" in out
    listing = subprocess.run([sys.executable, "-m", "pajama.cli", "model"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split()[0] for line in listing[: len(PRESETS)]] == list(PRESETS)
    assert "65,285,660,672" in listing[list(PRESETS).index("65B")]
    assert "1,100,048,384" in subprocess.run([sys.executable, "-m", "pajama.cli", "model", "tinyllama-1.1b"], capture_output=True, text=True, check=True).stdout
    aliases = {line.split()[0]: line.split(None, 1)[1] for line in listing[len(PRESETS) + 2 :]}  # after a blank line and a heading
    assert "Llama-3.2-1B," in aliases["llama3.2-1b"] and "tiny-llama-1.1b," in aliases["tinyllama-1.1b"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("7b", "7B"), ("TINY", "tiny"), ("TinyLlama-1.1b", "tinyllama-1.1b"), ("tiny-llama-1.1b", "tinyllama-1.1b"),
     ("TinyLlama-1.1B-intermediate-step-1431k-3T", "tinyllama-1.1b"), ("Llama-3.2-1B", "llama3.2-1b"), ("Llama-3.2-3B", "llama3.2-3b"),
     ("Llama-2-7b-hf", "llama2-7b"), ("Meta-Llama-3-8B", "llama3-8b"), ("Llama-3.1-8B", "llama3-8b"), ("llama-3.2-1b-instruct", "llama3.2-1b")],  # fmt: skip
)
def test_presets_are_found_in_any_case_and_by_litgpt_names(name, expected):
    assert preset(name) is PRESETS[expected]


@pytest.mark.parametrize(("typo", "suggestion"), [("llama3.2-1", "llama3.2-1b"), ("tinyllama", "tinyllama-1.1b"), ("Llama-3.2-1", "Llama-3.2-1B"), ("smal", "small")])
def test_a_mistyped_preset_gets_a_suggestion(typo, suggestion):
    with pytest.raises(PajamaError, match=f"unknown model '{typo}'; did you mean {re.escape(suggestion)}\\? known models: tiny, small"):
        preset(typo)


def _tiny(**changes):
    return ModelConfig("t", n_layer=2, n_head=2, n_embd=32, vocab_size=97, block_size=32).replace(**changes)


def test_rope_matches_complex_rotation_of_interleaved_pairs():
    config = _tiny()
    cos, sin = rope_cache(config)
    x = torch.randn(2, 2, 8, config.head_size)
    # Meta's formulation: view consecutive pairs as complex numbers and multiply by e^(i*theta).
    freqs = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))[:8]
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos[:8], sin[:8]), expected)


@pytest.mark.parametrize(
    "changes",
    [{}, {"n_head": 4, "n_kv_head": 2}, {"n_head": 4, "n_kv_head": 1}, {"tie_embeddings": True}, {"rope_base": 500000.0, "rope_scaling_factor": 8.0, "rope_original_context": 16}],
    ids=["mha", "gqa", "mqa", "tied", "llama3-rope"],
)
def test_forward_is_causal_and_kv_cache_agrees(changes):
    torch.manual_seed(0)
    model = LLaMA(_tiny(**changes))
    model.init_weights(0)
    idx = torch.randint(0, 97, (2, 20))
    logits = model(idx)
    assert logits.shape == (2, 20, 97)
    changed = idx.clone()
    changed[:, 15:] = (changed[:, 15:] + 1) % 97
    torch.testing.assert_close(model(changed)[:, :15], logits[:, :15])  # the future does not leak
    caches = [KVCache(2, model.config, idx.device, torch.float32) for _ in model.layers]
    stepwise = torch.cat([model(idx[:, :12], caches), model(idx[:, 12:13], caches), model(idx[:, 13:], caches)], 1)
    torch.testing.assert_close(stepwise, logits, atol=1e-5, rtol=1e-4)
    assert caches[0].k.size(1) == model.config.n_kv_head  # only the key/value heads are cached


def test_grouped_query_attention_is_multi_head_attention_with_shared_key_value_heads():
    """A GQA model computes what a multi-head model computes when each key/value head is copied
    to the query heads of its group (the definition), whichever way attention shares them."""
    torch.manual_seed(0)
    gqa = LLaMA(_tiny(n_head=4, n_kv_head=2))
    gqa.init_weights(0)
    mha = LLaMA(_tiny(n_head=4))
    state = gqa.state_dict()
    for i in range(2):
        for name in ("wk", "wv"):
            w = state[f"layers.{i}.attn.{name}.weight"].unflatten(0, (2, -1))  # (kv heads, head size, d)
            state[f"layers.{i}.attn.{name}.weight"] = w.repeat_interleave(2, dim=0).flatten(0, 1)
    mha.load_state_dict(state)
    idx = torch.randint(0, 97, (2, 20))
    torch.testing.assert_close(gqa(idx), mha(idx), atol=1e-5, rtol=1e-4)


def test_shared_key_value_heads_go_to_sdpa_only_where_a_fused_kernel_takes_them():
    """On CUDA only the flash kernel takes enable_gqa, and it takes no mask and no fp32: there the
    key/value heads are expanded, so that the memory-efficient kernel takes the call instead of
    the math kernel's full score matrix."""
    from pajama.model import shares_kv_heads

    for dtype in (torch.bfloat16, torch.float16):
        assert shares_kv_heads("cuda", dtype, masked=False)
        assert not shares_kv_heads("cuda", dtype, masked=True)  # --document_mask, a prompt after a prefix
        assert not shares_kv_heads("cuda", dtype, masked=False, flash_capable=False)  # V100, T4: no flash kernel
    assert not shares_kv_heads("cuda", torch.float32, masked=False)
    assert shares_kv_heads("cpu", torch.float32, masked=True)  # the CPU flash kernel takes shared heads and masks


class _SDPACalls(torch.overrides.TorchFunctionMode):
    """Records the arguments scaled_dot_product_attention receives (and runs it)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls.append({"key_heads": args[1].size(1), "mask": kwargs.get("attn_mask") is not None, "is_causal": kwargs.get("is_causal", False)})
        return func(*args, **kwargs)


def test_kv_cache_prefill_is_causal_without_a_mask_and_expanding_heads_changes_nothing(monkeypatch):
    """A prompt into an empty cache is plain causal attention: no mask, so a fused kernel takes
    it; a prompt after a prefix needs the mask. Expanded key/value heads (where SDPA's own
    sharing would reach no fused kernel) give the outputs shared heads give."""
    import pajama.model as model_module
    from pajama.model import document_ids

    torch.manual_seed(0)
    model = LLaMA(_tiny(n_head=4, n_kv_head=2))
    model.init_weights(0)
    idx = torch.randint(2, 97, (2, 20))
    idx[:, [0, 7, 15]] = 1
    caches = [KVCache(2, model.config, idx.device, torch.float32) for _ in model.layers]
    with torch.no_grad(), _SDPACalls() as sdpa:
        model(idx[:, :12], caches)  # empty cache
        model(idx[:, 12:], caches)  # after a prefix of 12
    assert [(c["mask"], c["is_causal"]) for c in sdpa.calls] == [(False, True)] * 2 + [(True, False)] * 2
    with torch.no_grad():
        shared = [model(idx), model(idx, doc_ids=document_ids(idx, 1))]
        monkeypatch.setattr(model_module, "_SDPA_GQA", False)  # as on CUDA with a mask: expanded
        with _SDPACalls() as sdpa:
            expanded = [model(idx), model(idx, doc_ids=document_ids(idx, 1))]
    assert {c["key_heads"] for c in sdpa.calls} == {4}
    for a, b in zip(shared, expanded):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_llama3_rope_scaling_keeps_short_wavelengths_and_stretches_long_ones():
    from pajama.model import rope_frequencies

    config = _tiny(n_head=1, rope_base=500000.0, rope_scaling_factor=8.0, rope_original_context=64)  # head size 32: 16 frequencies
    plain = rope_frequencies(config.replace(rope_scaling_factor=None))
    scaled = rope_frequencies(config)
    wavelength = 2 * math.pi / plain
    short, long = wavelength < 64 / 4, wavelength > 64 / 1
    assert short.any() and long.any() and (~short & ~long).any()
    torch.testing.assert_close(scaled[short], plain[short])
    torch.testing.assert_close(scaled[long], plain[long] / 8)
    between = ~short & ~long
    assert ((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8)).all()


def test_tied_model_has_one_table_used_for_input_and_output():
    model = LLaMA(_tiny(tie_embeddings=True))
    model.init_weights(0)
    assert "lm_head.weight" not in model.state_dict() and model.lm_head is None
    hidden = []
    model.norm.register_forward_hook(lambda module, args, out: hidden.append(out))
    idx = torch.randint(0, 97, (2, 10))
    logits = model(idx)
    torch.testing.assert_close(logits, hidden[0] @ model.tok_embeddings.weight.T)
    logits.sum().backward()  # both uses reach the one table
    assert model.tok_embeddings.weight.grad[idx.flatten()].abs().sum() > 0
    unused = torch.ones(97, dtype=torch.bool)
    unused[idx.flatten()] = False
    assert model.tok_embeddings.weight.grad[unused].abs().sum() > 0  # rows never fed in still get the output's gradient


def test_init_from_meta_is_deterministic_and_finite():
    config = _tiny()
    with torch.device("meta"):
        a = LLaMA(config)
    a.to_empty(device="cpu")
    a.init_weights(seed=3)
    b = LLaMA(config)
    b.init_weights(seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.isfinite(pa).all(), name
        assert torch.equal(pa, pb), name
    assert torch.equal(a.rope_cos, b.rope_cos)
    assert torch.equal(a.norm.weight, torch.ones(32))
    c = LLaMA(config)
    c.init_weights(seed=4)
    assert not torch.equal(c.lm_head.weight, b.lm_head.weight)


def test_weights_stay_fp32_under_autocast():
    model = LLaMA(_tiny())
    model.init_weights(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, 97, (1, 8)))
    assert logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_context_overflow_is_a_clear_error():
    model = LLaMA(_tiny())
    model.init_weights(0)
    with pytest.raises(PajamaError, match="exceeds the model's context of 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("changes", [{}, {"n_head": 4, "n_kv_head": 2}], ids=["mha", "gqa"])
def test_document_mask_equals_running_each_document_alone(changes):
    """Packed documents under the document mask get the logits each gets on its own: rotary
    attention depends on relative positions only, so where a document sits does not matter."""
    from pajama.model import document_ids

    torch.manual_seed(0)
    model = LLaMA(_tiny(**changes))
    model.init_weights(0)
    bos = 1
    docs = [torch.randint(3, 97, (n,)) for n in (6, 8, 3, 5)]
    docs = [torch.cat([torch.tensor([bos]), d]) for d in docs]
    tail = torch.randint(3, 97, (5,))  # the end of a document that began in an earlier sequence
    packed = torch.cat([tail, *docs]).unsqueeze(0)
    assert packed.size(1) <= 32
    with torch.no_grad():
        masked = model(packed, doc_ids=document_ids(packed, bos))
        unmasked = model(packed)
        start = 0
        for piece in [tail, *docs]:
            alone = model(piece.unsqueeze(0))
            torch.testing.assert_close(masked[:, start : start + len(piece)], alone, atol=2e-5, rtol=1e-4)
            start += len(piece)
    assert not torch.allclose(masked[:, 5 + 7 :], unmasked[:, 5 + 7 :], atol=1e-3)  # without the mask, later documents see earlier ones
    # Two rows with different boundaries in one batch: each row gets its own mask.
    batch = torch.stack([packed[0], packed[0].roll(3)])
    with torch.no_grad():
        both = model(batch, doc_ids=document_ids(batch, bos))
    torch.testing.assert_close(both[:1], masked, atol=2e-5, rtol=1e-4)
