import pytest
import torch

from pajama import PajamaError
from pajama.generate import generate_ids, sample_next
from pajama.model import KVCache, LLaMA
from pajama.model_config import ModelConfig


def _model():
    model = LLaMA(ModelConfig("t", n_layer=2, n_head=2, n_embd=32, vocab_size=50, block_size=64))
    model.init_weights(seed=1)
    return model.eval()


def test_greedy_generation_with_kv_cache_equals_full_recomputation():
    model = _model()
    prompt = [1, 7, 9, 3]
    cached = list(generate_ids(model, prompt, max_new_tokens=20, temperature=0.0))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt) :]


def test_generation_stops_at_eos_and_at_the_context():
    model = _model()
    prompt = [1, 7, 9, 3]
    first = next(generate_ids(model, prompt, max_new_tokens=5, temperature=0.0))
    assert list(generate_ids(model, prompt, max_new_tokens=5, temperature=0.0, eos_id=first)) == []
    assert len(list(generate_ids(model, prompt, max_new_tokens=1000, temperature=0.0))) == 64 - len(prompt)


def test_sampling_is_seeded_and_filters():
    model = _model()
    a = list(generate_ids(model, [1, 2], max_new_tokens=15, temperature=1.0, top_k=None, seed=5))
    b = list(generate_ids(model, [1, 2], max_new_tokens=15, temperature=1.0, top_k=None, seed=5))
    assert a == b
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]])
    generator = torch.Generator().manual_seed(0)
    assert {int(sample_next(logits, 1.0, 1, None, generator)) for _ in range(20)} == {2}  # top-k 1
    assert {int(sample_next(logits, 1.0, None, 0.5, generator)) for _ in range(20)} == {2}  # top-p below the top token's share
    assert {int(sample_next(logits, 1.0, 2, None, generator)) for _ in range(200)} == {2, 3}


def test_the_kv_cache_holds_the_request_not_the_whole_context():
    """Sized to prompt + max_new_tokens (capped at the context): a model whose context is
    131,072 tokens (Llama 3.2's) needs 8.6 GB of cache in fp32 for all of it, 13 MB for 200."""
    model = _model()
    capacities = []
    model.register_forward_pre_hook(lambda module, args: capacities.append(args[1][0].k.size(2)))
    prompt = [1, 7, 9, 3]
    tokens = list(generate_ids(model, prompt, max_new_tokens=5, temperature=0.0))
    assert len(tokens) == 5 and set(capacities) == {4 + 5}
    capacities.clear()
    assert len(list(generate_ids(model, prompt, max_new_tokens=1000, temperature=0.0))) == 64 - 4
    assert set(capacities) == {64}
    cache = KVCache(1, model.config, torch.device("cpu"), torch.float32, capacity=4)
    with pytest.raises(PajamaError, match="the KV cache holds 4 tokens; 5 were given"):
        model(torch.tensor([[1, 2, 3, 4, 5]]), [cache] * 2)
