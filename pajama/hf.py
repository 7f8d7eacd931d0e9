"""Hugging Face and Meta checkpoints: export a pajama checkpoint for ``transformers``, import
a Hugging Face LLaMA directory or Meta's ``consolidated.*.pth`` release as a pajama checkpoint.

Nothing here needs ``transformers`` or a GPU: JSON files are written by hand, weights go
through ``safetensors`` and ``torch.load(weights_only=True)`` (no pickled objects are ever
run), and a sharded (FSDP) training checkpoint is read in this one process.

Layouts. pajama's parameter names follow its modules (``layers.N.attn.wq.weight`` ...);
rotary embeddings rotate interleaved pairs of each head's dimensions, as Meta's reference
does, so Meta's weights load as they are. Hugging Face's ``LlamaForCausalLM`` rotates the
two halves of each head instead, so its q and k projections hold each head's rows in another
order: export permutes them one way, import the other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from pajama import PajamaError
from pajama.model_config import ModelConfig
from pajama.tokenizer import AnyTokenizer, load_tokenizer

# torch, and the modules that import it, are imported by the functions that use them: building
# the parser of ``pajama export`` / ``pajama import`` (their --help) imports this module. Not even
# for the annotations (which stay unevaluated): the CLI's signature parser runs ``if TYPE_CHECKING:`` blocks.

DTYPES = ("float32", "bfloat16", "float16")  # torch's names
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

# pajama name (inside ``layers.N.``) -> Hugging Face name (inside ``model.layers.N.``)
HF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}
HF_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "lm_head.weight": "lm_head.weight"}

# Meta name (inside ``layers.N.``) -> (pajama name, dim its model-parallel shards are cut along; None: replicated)
META_LAYER_NAMES = {
    "attention_norm.weight": ("attn_norm.weight", None),
    "attention.wq.weight": ("attn.wq.weight", 0),
    "attention.wk.weight": ("attn.wk.weight", 0),
    "attention.wv.weight": ("attn.wv.weight", 0),
    "attention.wo.weight": ("attn.wo.weight", 1),
    "ffn_norm.weight": ("mlp_norm.weight", None),
    "feed_forward.w1.weight": ("mlp.gate.weight", 0),
    "feed_forward.w3.weight": ("mlp.up.weight", 0),
    "feed_forward.w2.weight": ("mlp.down.weight", 1),
}
# The embedding table's dim is read off the shards: Llama 1 and 2 cut it along dim 1 (model
# width), Llama 3 along dim 0 (vocabulary; VocabParallelEmbedding).
META_TOP_NAMES = {"tok_embeddings.weight": ("tok_embeddings.weight", "embedding"), "norm.weight": ("norm.weight", None), "output.weight": ("lm_head.weight", 0)}

_LAYER = re.compile(r"layers\.(\d+)\.(.+)")


# -- the q/k permutation ------------------------------------------------------------------


def interleaved_to_halves(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q or k projection from Meta's rotary layout (each head's pairs (0, 1),
    (2, 3), ... rotate together) to Hugging Face's (pairs (i, i + head_size / 2))."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def halves_to_interleaved(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_halves`."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).transpose(1, 2).reshape(rows, cols)


# -- export -------------------------------------------------------------------------------


def export(
    checkpoint: Path,
    destination_path: Path,
    tokenizer_path: Path | None = None,
    max_shard_size: str = "5GB",
    dtype: str = "float32",
) -> None:
    """Export a pajama checkpoint as a Hugging Face LLaMA model directory.

    The directory loads with ``transformers``' ``LlamaForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained``: ``config.json``, safetensors weights (sharded above
    ``max_shard_size``, with ``model.safetensors.index.json``), and the tokenizer
    (``tokenizer.model`` or ``tokenizer.json``) with its ``tokenizer_config.json``. Works on full and sharded (FSDP)
    checkpoints, without GPUs and without ``transformers`` installed.

    Args:
        checkpoint: checkpoint directory, or a training out_dir (its newest checkpoint).
        destination_path: directory to create (must not exist, or be empty).
        tokenizer_path: the tokenizer the training data was prepared with (default: the copy
            kept with the checkpoint or in its run directory); its checksum must match the
            checkpoint's.
        max_shard_size: largest weights file, e.g. 5GB, 500MB, 2GiB (a larger single tensor
            gets a file of its own).
        dtype: dtype of the exported weights: float32, bfloat16 or float16.
    """
    import pajama.checkpoint as ckpt

    torch_dtype = _parse_dtype(dtype)
    limit = parse_size(max_shard_size)
    path = ckpt.resolve(Path(checkpoint))
    config, weights, meta = ckpt.load_model_weights(path)
    _check_fits(config, weights, str(path))
    tokenizer = _export_tokenizer(path, tokenizer_path, meta, config)
    destination = Path(destination_path).expanduser()
    plan = _hf_plan(config, weights, torch_dtype)
    with _staging(destination) as tmp:
        shards = _write_safetensors(tmp, plan, limit)
        _write_json(tmp / "config.json", hf_config(config, tokenizer, dtype=_dtype_name(torch_dtype)))
        _write_json(tmp / "generation_config.json", {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id})
        _write_tokenizer(tmp, tokenizer, config)
    total = sum(t.numel() for t in weights.values())
    print(f"wrote {destination}: {total:,} parameters in {shards} safetensors file(s), {_dtype_name(torch_dtype)}, from {path}")


def hf_config(config: ModelConfig, tokenizer: AnyTokenizer | None = None, dtype: str = "float32") -> dict:
    """``config.json`` of ``LlamaForCausalLM`` for a pajama model shape."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_scaling": _hf_rope_scaling(config),
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": tokenizer.bos_id if tokenizer else 1,
        "eos_token_id": tokenizer.eos_id if tokenizer else 2,
        "pad_token_id": None,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype,
    }


def _hf_rope_scaling(config: ModelConfig) -> dict | None:
    if config.rope_scaling_factor is None:
        return None
    return {
        "rope_type": "llama3",
        "factor": config.rope_scaling_factor,
        "low_freq_factor": config.rope_low_freq_factor,
        "high_freq_factor": config.rope_high_freq_factor,
        "original_max_position_embeddings": config.rope_original_context,
    }


def parse_size(text: str | int) -> int:
    """Bytes in ``5GB`` (10**9), ``2GiB`` (2**30), ``500MB``, ``100KB``, or a plain number."""
    if isinstance(text, int):
        size = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise PajamaError(f"--max_shard_size {text!r}: expected a size such as 5GB, 500MB or 2GiB")
        number, unit = float(m.group(1)), (m.group(2) or "B").upper()
        if unit == "B":
            factor = 1
        else:
            base = 1024 if "I" in unit else 1000
            factor = base ** ("KMGT".index(unit[0]) + 1)
        size = int(number * factor)
    if size < 1:
        raise PajamaError(f"--max_shard_size must be positive, got {text!r}")
    return size


def _parse_dtype(dtype: str) -> torch.dtype:
    import torch

    name = DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPES:
        raise PajamaError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of a pajama model of this shape, in module order (nothing allocated)."""
    import torch

    from pajama.model import LLaMA

    with torch.device("meta"):
        model = LLaMA(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _check_fits(config: ModelConfig, weights: dict[str, torch.Tensor], where: str) -> None:
    expected = _expected_shapes(config)
    missing = [n for n in expected if n not in weights]
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else [])
        tied = " with tied embeddings" if config.tie_embeddings else ""
        raise PajamaError(f"{where}: the weights do not fit a {config.n_layer}-layer LLaMA{tied} ({'; '.join(parts)})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise PajamaError(f"{where}: weight {name} has shape {tuple(weights[name].shape)}, expected {shape}")


def _hf_plan(config: ModelConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> list[tuple[str, Callable[[], torch.Tensor], int]]:
    """(Hugging Face name, function making its tensor, bytes) in module order; tensors are made
    one shard at a time so that at most one shard of converted weights is in memory."""
    plan = []
    for name in _expected_shapes(config):
        m = _LAYER.fullmatch(name)
        hf_name = f"model.layers.{m.group(1)}.{HF_LAYER_NAMES[m.group(2)]}" if m else HF_TOP_NAMES[name]
        permute = m is not None and m.group(2) in ("attn.wq.weight", "attn.wk.weight")

        heads = config.n_head if name.endswith("attn.wq.weight") else config.n_kv_head

        def make(name=name, permute=permute, heads=heads) -> torch.Tensor:
            t = weights[name]
            if permute:
                t = interleaved_to_halves(t, heads)
            return t.to(dtype).contiguous()

        plan.append((hf_name, make, weights[name].numel() * dtype.itemsize))
    return plan


def _write_safetensors(directory: Path, plan: list, limit: int) -> int:
    """Write the weights as one ``model.safetensors``, or as numbered shards of at most
    ``limit`` bytes each plus ``model.safetensors.index.json``; returns the number of files."""
    from safetensors.torch import save_file

    groups: list[list] = [[]]
    size = 0
    for item in plan:
        if groups[-1] and size + item[2] > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item[2]
    n = len(groups)
    weight_map = {}
    for i, group in enumerate(groups):
        filename = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({name: make() for name, make, _ in group}, str(directory / filename), metadata={"format": "pt"})
        _follow_umask(directory / filename)
        weight_map.update({name: filename for name, _, _ in group})
    if n > 1:
        index = {"metadata": {"total_size": sum(item[2] for item in plan)}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(directory / "model.safetensors.index.json", index)
    return n


def _export_tokenizer(path: Path, tokenizer_path: Path | None, meta: dict, config: ModelConfig) -> AnyTokenizer:
    """The tokenizer to ship: the one given, else the copy kept with the checkpoint or its run;
    it must be the one the checkpoint's data was prepared with."""
    import pajama.checkpoint as ckpt

    tokenizer = ckpt.load_tokenizer_of(path, meta, tokenizer_path)
    if tokenizer.vocab_size > config.vocab_size:
        raise PajamaError(f"{tokenizer.path}: {tokenizer.vocab_size} tokens, more than the model's vocabulary of {config.vocab_size}")
    if tokenizer.vocab_size < config.vocab_size:
        print(f"note: {tokenizer.path} has {tokenizer.vocab_size} tokens, the model {config.vocab_size} rows of vocabulary: is it the right tokenizer?")
    return tokenizer


def _write_tokenizer(directory: Path, tokenizer: AnyTokenizer, config: ModelConfig) -> None:
    """The tokenizer's files, and the JSON that makes ``transformers``' AutoTokenizer load it:
    SentencePiece as a LLaMA tokenizer (BOS added, EOS not, SentencePiece's legacy handling of
    the text); a ``tokenizer.json`` as it is, with its own tokenizer_config.json when it has one."""
    tokenizer.copy_to(directory)
    if tokenizer.kind == "huggingface":
        if not (directory / "tokenizer_config.json").exists():
            pieces = {"bos_token": tokenizer.backend.id_to_token(tokenizer.bos_id), "eos_token": tokenizer.backend.id_to_token(tokenizer.eos_id)}
            _write_json(
                directory / "tokenizer_config.json",
                {"tokenizer_class": "PreTrainedTokenizerFast", **pieces, "clean_up_tokenization_spaces": False, "model_max_length": config.block_size},
            )
        return
    sp = tokenizer.processor
    special = {"bos_token": tokenizer.bos_id, "eos_token": tokenizer.eos_id}
    if sp.unk_id() >= 0:
        special["unk_token"] = sp.unk_id()
    pieces = {key: sp.id_to_piece(i) for key, i in special.items()}

    def added(piece: str) -> dict:
        return {"content": piece, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}

    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            **pieces,
            "pad_token": None,
            "legacy": True,
            "clean_up_tokenization_spaces": False,
            "spaces_between_special_tokens": False,
            "sp_model_kwargs": {},
            "use_default_system_prompt": False,
            "model_max_length": config.block_size,
            "added_tokens_decoder": {str(i): added(sp.id_to_piece(i)) for i in sorted(special.values())},
        },
    )
    _write_json(directory / "special_tokens_map.json", {key: added(piece) for key, piece in pieces.items()})


# -- import -------------------------------------------------------------------------------


def import_(source: Path, destination_path: Path, model_name: str | None = None, block_size: int | None = None) -> None:
    """Import a Hugging Face LLaMA directory or Meta's LLaMA release as a pajama checkpoint.

    Reads ``config.json`` with safetensors or ``pytorch_model*.bin`` weights (with their
    index when sharded), or Meta's ``params.json`` with ``consolidated.*.pth`` (model-parallel
    shards are joined). Writes ``meta.json`` and ``state`` (plus the source's
    ``tokenizer.model`` or ``tokenizer.json``, when it has one) atomically; ``pajama pretrain --initial_checkpoint``,
    ``generate``, ``evaluate`` and ``export`` read the result. Weights keep the source's dtype.
    The LLaMA family's architecture: grouped-query attention, tied embeddings, any rotary base
    and Llama 3's rotary scaling (TinyLlama, Llama 2, Llama 3.x); biases, other activations
    and other rotary scalings are refused.

    Args:
        source: Hugging Face model directory, or a directory of Meta's consolidated.*.pth.
        destination_path: checkpoint directory to create (must not exist, or be empty).
        model_name: name recorded in the checkpoint's model config (default: imported).
        block_size: the context length of the imported model, which sizes the rotary tables and
            what fine-tuning and evaluation take (default: the family's pre-training context:
            Llama 3.1 / 3.2's rotary scaling's original_max_position_embeddings, 8192, rather than
            the 131,072 the scaling extends it to; else max_position_embeddings, or Meta's
            max_seq_len). At most the context the source declares.
    """
    import torch

    import pajama.checkpoint as ckpt

    source = Path(source).expanduser()
    if not source.is_dir():
        raise PajamaError(f"{source}: not a directory")
    name = model_name or "imported"
    if block_size is not None and block_size < 1:
        raise PajamaError(f"--block_size must be >= 1, got {block_size}")
    if (source / "params.json").is_file() and any(source.glob("consolidated.*.pth")):
        config, weights, longest = _read_meta_release(source, name)
        kind = "Meta"
    elif (source / "config.json").is_file():
        config, weights, longest = _read_hf(source, name)
        kind = "Hugging Face"
    else:
        raise PajamaError(f"{source}: neither a Hugging Face model (config.json) nor Meta's release (params.json and consolidated.*.pth)")
    if block_size is not None:
        if longest is not None and block_size > longest:
            raise PajamaError(f"--block_size {block_size}: {source} declares a context of at most {longest} tokens")
        config = config.replace(block_size=block_size)
    _check_fits(config, weights, str(source))
    tokenizer = _source_tokenizer(source)
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise PajamaError(f"{tokenizer.path}: {tokenizer.vocab_size} tokens, more than the model's vocabulary of {config.vocab_size}")
    meta = {
        "model": asdict(config),
        "tokenizer_sha256": tokenizer.sha256 if tokenizer else None,
        "step": 0,
        "tokens": 0,
        "train": {},
        "data": {},
        "imported_from": str(source.resolve()),
    }
    destination = Path(destination_path).expanduser()
    with _staging(destination) as tmp:
        torch.save({"model": {n: weights[n].contiguous() for n in _expected_shapes(config)}}, tmp / ckpt.STATE)
        _write_json(tmp / ckpt.META, meta)
        if tokenizer is not None:
            tokenizer.copy_to(tmp)
    dtypes = sorted({_dtype_name(t.dtype) for t in weights.values()})
    print(
        f"imported {source} ({kind} layout) into {destination}: {config.num_parameters():,} parameters ({', '.join(dtypes)}), "
        f"{config.n_layer} layers, {config.n_head} heads, d {config.n_embd}, vocab {config.vocab_size}, context {config.block_size}"
        + (f" (it extends to {longest}: --block_size {longest})" if block_size is None and longest is not None and longest > config.block_size else "")
        + (f"; tokenizer {tokenizer.path.name} ({tokenizer.kind})" if tokenizer else "; no tokenizer.model or tokenizer.json found beside it")
    )


def _source_tokenizer(source: Path) -> AnyTokenizer | None:
    """The tokenizer shipped with a model: in its directory (Hugging Face), or beside it
    (Meta's releases keep tokenizer.model next to the model directories)."""
    for place in (source, source.parent):
        if any((place / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
            return load_tokenizer(place)
    return None


def _read_hf(source: Path, name: str) -> tuple[ModelConfig, dict[str, torch.Tensor], int]:
    """The model config (its context the pre-training one), the weights in pajama's layout,
    and the longest context the config declares (max_position_embeddings)."""
    import torch

    config_path = source / "config.json"
    cfg = _read_json(config_path)
    if cfg.get("model_type", "llama") != "llama":
        raise PajamaError(f"{config_path}: model_type {cfg.get('model_type')!r}; only llama models can be imported")
    try:
        n_embd, n_head, n_layer = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    except KeyError as e:
        raise PajamaError(f"{config_path}: missing {e.args[0]}") from None
    n_kv_head = int(cfg.get("num_key_value_heads") or n_head)
    tied = bool(cfg.get("tie_word_embeddings", False))
    problems = []
    if cfg.get("head_dim") not in (None, n_embd // n_head):
        problems.append(f"head_dim {cfg['head_dim']} is not hidden_size / num_attention_heads")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"activation {cfg['hidden_act']}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        problems.append("biases")
    # transformers 5 writes rope_parameters (theta and scaling together), earlier versions rope_theta / rope_scaling
    rope = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        problems.append(f"RoPE scaling of type {rope_type!r} (only Llama 3's is implemented)")
    if problems:
        raise PajamaError(f"{config_path}: not an architecture of the LLaMA family as pajama implements it: {'; '.join(problems)}")
    scaling = {}
    if rope_type == "llama3":
        try:
            scaling = dict(
                rope_scaling_factor=float(rope["factor"]), rope_low_freq_factor=float(rope["low_freq_factor"]),
                rope_high_freq_factor=float(rope["high_freq_factor"]), rope_original_context=int(rope["original_max_position_embeddings"]),
            )  # fmt: skip
        except KeyError as e:
            raise PajamaError(f"{config_path}: llama3 rotary scaling without {e.args[0]}") from None
    raw = _load_hf_weights(source)
    weights: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        hf_name = key.removeprefix("model.") if key != "lm_head.weight" else key
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # older exports saved the rotary table; pajama recomputes it
        pajama_name = _from_hf_name(hf_name)
        if pajama_name is None:
            raise PajamaError(f"{source}: unexpected weight {key} (not part of a LLaMA model)")
        if pajama_name.endswith("attn.wq.weight"):
            tensor = halves_to_interleaved(tensor, n_head)
        elif pajama_name.endswith("attn.wk.weight"):
            tensor = halves_to_interleaved(tensor, n_kv_head)
        weights[pajama_name] = tensor
    if tied and "lm_head.weight" in weights:
        # Some tied checkpoints store the table twice; a different second copy means the config is wrong.
        if "tok_embeddings.weight" in weights and not torch.equal(weights["lm_head.weight"], weights["tok_embeddings.weight"]):
            raise PajamaError(f"{config_path}: tie_word_embeddings is true but lm_head.weight differs from the embedding table")
        del weights["lm_head.weight"]
    longest = int(cfg.get("max_position_embeddings", 2048))
    config = _config_from_weights(
        name, weights, str(source), n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_kv_head=n_kv_head, tie_embeddings=tied,
        # Llama 3.1 / 3.2 declare the 131,072 tokens their rotary scaling reaches; they were pre-trained on 8192.
        block_size=min(longest, scaling.get("rope_original_context", longest)), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_base=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0), **scaling,
    )  # fmt: skip
    return config, weights, longest


def _from_hf_name(hf_name: str) -> str | None:
    for pajama_name, hf in HF_TOP_NAMES.items():
        if hf.removeprefix("model.") == hf_name:
            return pajama_name
    m = _LAYER.fullmatch(hf_name)
    if m:
        for pajama_name, hf in HF_LAYER_NAMES.items():
            if hf == m.group(2):
                return f"layers.{m.group(1)}.{pajama_name}"
    return None


def _load_hf_weights(source: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face directory: safetensors preferred, else PyTorch bins."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index_path = source / index_name
        if index_path.is_file():
            weight_map = _read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict):
                raise PajamaError(f"{index_path}: no weight_map")
            files = sorted(set(weight_map.values()))
        elif (source / single).is_file():
            files = [single]
        else:
            continue
        out: dict[str, torch.Tensor] = {}
        for filename in files:
            path = source / filename
            if not path.is_file():
                raise PajamaError(f"{path}: listed in {index_path} but missing")
            out.update(_load_safetensors(path) if filename.endswith(".safetensors") else _load_torch(path))
        return out
    raise PajamaError(f"{source}: no weights found (model.safetensors, model.safetensors.index.json, pytorch_model.bin or its index)")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise PajamaError(f"{path}: cannot read safetensors file: {e}") from None


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save`` file of tensors only: anything else is refused, never unpickled."""
    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format cannot be mapped
    except Exception as e:  # UnpicklingError for objects other than tensors, RuntimeError / EOFError for damage
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PajamaError(f"{path}: cannot load as tensors only ({first})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PajamaError(f"{path}: expected a dict of tensors")
    return data


def _read_meta_release(source: Path, name: str) -> tuple[ModelConfig, dict[str, torch.Tensor], int | None]:
    """The model config, the weights in pajama's layout (model-parallel shards joined), and the
    longest context params.json declares (None: it declares none)."""
    import torch

    params_path = source / "params.json"
    params = _read_json(params_path)
    try:
        n_embd, n_head, n_layer = int(params["dim"]), int(params["n_heads"]), int(params["n_layers"])
    except KeyError as e:
        raise PajamaError(f"{params_path}: missing {e.args[0]}") from None
    n_kv_head = int(params.get("n_kv_heads") or n_head)
    shard_paths = sorted(source.glob("consolidated.*.pth"))
    shards = [_load_torch(p) for p in shard_paths]
    names = [k for k in shards[0] if k != "rope.freqs"]
    for path, shard in zip(shard_paths[1:], shards[1:]):
        if sorted(k for k in shard if k != "rope.freqs") != sorted(names):
            raise PajamaError(f"{path}: holds other weights than {shard_paths[0].name}")
    weights: dict[str, torch.Tensor] = {}
    for key in names:
        m = _LAYER.fullmatch(key)
        entry = META_LAYER_NAMES.get(m.group(2)) if m else META_TOP_NAMES.get(key)
        if entry is None:
            raise PajamaError(f"{shard_paths[0]}: unexpected weight {key} (not part of a LLaMA model)")
        pajama_name, dim = entry
        if m:
            pajama_name = f"layers.{m.group(1)}.{pajama_name}"
        pieces = [shard[key] for shard in shards]
        if dim == "embedding":
            dim = _embedding_shard_dim(pieces, n_embd, shard_paths[0])
        weights[pajama_name] = pieces[0] if dim is None or len(pieces) == 1 else torch.cat(pieces, dim=dim)
    scaling = {}
    if params.get("use_scaled_rope"):
        # Meta's reference scales by 8 (Llama 3.1) unless params.json says otherwise
        scaling = {"rope_scaling_factor": float(params.get("rope_scaling_factor") or 8.0)}
        if "rope_scaling_factor" not in params:
            print(f"note: {params_path} asks for scaled rotary frequencies without a factor: using Llama 3.1's 8")
    config = _config_from_weights(
        name, weights, str(source), n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_kv_head=n_kv_head,
        tie_embeddings="lm_head.weight" not in weights,  # Meta's tied releases ship no output.weight
        # Meta's params.json seldom gives max_seq_len; Llama 3 (rotary base 500,000) was pre-trained on 8192 tokens.
        block_size=int(params.get("max_seq_len") or (8192 if float(params.get("rope_theta", 10000.0)) >= 500000 else 2048)),
        norm_eps=float(params.get("norm_eps", 1e-6)),
        rope_base=float(params.get("rope_theta", 10000.0)), **scaling,
    )  # fmt: skip
    return config, weights, int(params["max_seq_len"]) if "max_seq_len" in params else None


def _embedding_shard_dim(pieces: list[torch.Tensor], n_embd: int, where: Path) -> int:
    """The dim Meta's model-parallel shards cut the embedding table along: 0 (vocabulary rows,
    Llama 3) where each holds the full width, 1 (Llama 1 and 2) where their widths add up to it."""
    widths = [int(p.shape[1]) for p in pieces]
    if all(w == n_embd for w in widths):
        return 0
    if sum(widths) == n_embd:
        return 1
    raise PajamaError(f"{where}: tok_embeddings.weight shards of widths {widths} make neither the model width {n_embd} nor one table cut by rows")


def _config_from_weights(name: str, weights: dict[str, torch.Tensor], where: str, **shape) -> ModelConfig:
    """The model config: the source's shape, vocabulary and MLP width read off the weights."""
    for needed in ("tok_embeddings.weight", "layers.0.mlp.gate.weight"):
        if needed not in weights:
            raise PajamaError(f"{where}: no weight for {needed}")
    return ModelConfig(
        name=name,
        vocab_size=int(weights["tok_embeddings.weight"].shape[0]),
        intermediate_size=int(weights["layers.0.mlp.gate.weight"].shape[0]),
        **shape,
    )


# -- files --------------------------------------------------------------------------------


@contextmanager
def _staging(destination: Path) -> Iterator[Path]:
    """A hidden temporary directory beside ``destination``, renamed to it when the block
    finishes (removed if it fails): a crash never leaves a half-written result."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise PajamaError(f"{destination}: already exists; choose another destination or remove it")
    tmp = destination.parent / f".{destination.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _follow_umask(path: Path) -> None:
    """Give ``path`` the mode of a file pajama writes itself (0666 less the umask): safetensors
    creates its files 0600, which others on a shared filesystem cannot read."""
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PajamaError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise PajamaError(f"{path}: expected a JSON object")
    return data
