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
    assert [line.split()[0] for line in listing] == list(PRESETS)
    assert "65,285,660,672" in listing[-1]


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


def test_forward_is_causal_and_kv_cache_agrees():
    torch.manual_seed(0)
    model = LLaMA(_tiny())
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
