import pytest
import torch

from pajama.memory import GB, activation_bytes_per_token_layer, estimate
from pajama.model import LLaMA
from pajama.model_config import ModelConfig, preset


def saved_activation_bytes(model: LLaMA, idx: torch.Tensor, precision: str) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of the blocks (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape[::-1]) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        is_weight_copy = t.dtype == torch.bfloat16 and tuple(t.shape) in weight_shapes
        if storage.data_ptr() not in weights and not is_weight_copy:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    T = idx.size(1)
    x = model.tok_embeddings(idx).detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "32-true"):
        for block in model.layers:
            x = block(x, model.rope_cos[:T], model.rope_sin[:T])
    return sum(saved.values())


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
@pytest.mark.parametrize("n_kv_head", [4, 1])  # multi-head and multi-query attention
def test_activation_estimate_matches_the_saved_tensors(precision, n_kv_head):
    config = ModelConfig("m", n_layer=3, n_head=4, n_embd=192, vocab_size=500, block_size=128, n_kv_head=n_kv_head)
    model = LLaMA(config)
    model.init_weights(0)
    idx = torch.randint(0, 500, (3, 100))  # shapes chosen so that no activation looks like a weight
    measured = saved_activation_bytes(model, idx, precision) / (3 * 100 * config.n_layer)
    estimated = activation_bytes_per_token_layer(config, precision)
    assert abs(measured - estimated) / estimated < 0.05, (measured, estimated)


def test_plan_shards_state_and_checkpointing_saves_activations():
    config = preset("7B")
    single = estimate(config, 1, 1, 2048, "single", False)
    fsdp = estimate(config, 4, 1, 2048, "fsdp", False)
    assert single["AdamW state"] == 8 * config.num_parameters()
    assert fsdp["AdamW state"] == single["AdamW state"] / 4
    assert fsdp["total"] == sum(v for k, v in fsdp.items() if k != "total")
    checkpointed = estimate(config, 4, 1, 2048, "fsdp", True)
    assert checkpointed["activations"] < fsdp["activations"] / 5
    # 7B on 4 x 40 GB with micro-batch 5 needs activation checkpointing, as the howto found.
    assert estimate(config, 4, 5, 2048, "fsdp", False)["total"] > 40 * GB > estimate(config, 4, 5, 2048, "fsdp", True)["total"]
