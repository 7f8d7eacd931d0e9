"""The recipes under recipes/: each is a --config that pajama pretrain takes as it is, and trains
at tiny scale once its data paths are filled in and its shape and hardware made small."""

import shutil
from pathlib import Path

import pytest
import test_train
import torch
import yaml
from test_train import pajama

from pajama import checkpoint
from pajama.cli import build_parser
from pajama.model_config import preset

prepared = test_train.prepared  # the fixture: the bundled sample, prepared

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_the_recipes_name_their_hardware():
    assert [r.name for r in RECIPES] == ["llama-7b-redpajama.yaml", "llama3.2-1b-redpajama-v2.yaml", "quickstart.yaml", "tinyllama-1.1b-slimpajama.yaml"]
    for recipe in RECIPES:
        settings = yaml.safe_load(recipe.read_text())
        assert {"accelerator", "devices", "num_nodes", "train_data_dir", "model_name"} <= set(settings), recipe.name
        assert "# Hardware: " in recipe.read_text(), recipe.name
        if settings["accelerator"] == "cuda":
            assert settings["dry_run_gpu"] in ("a100-40g", "a100-80g", "h100", "h200"), recipe.name  # the GPU, as --dry_run takes it


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.stem)
def test_recipe_parses_and_trains_at_tiny_scale(recipe, prepared, tmp_path):
    data, _ = prepared
    settings = yaml.safe_load(recipe.read_text())
    parser, _ = build_parser(["pretrain"])
    parsed = parser.parse_args(["pretrain", "--config", str(recipe)]).pretrain
    for key in ("learning_rate", "min_lr", "batch_size", "lr_schedule", "max_iters", "max_tokens", "mixture"):
        assert parsed[key] == settings.get(key), key  # every value read as written
    # The data paths filled in: one directory, or the recipe's several (copies of the sample under their names).
    if isinstance(settings["train_data_dir"], dict):
        dirs = {}
        for name, weight in settings["train_data_dir"].items():
            shutil.copytree(data, tmp_path / Path(name).name)
            dirs[str(tmp_path / Path(name).name)] = weight
        train_data = yaml.safe_dump(dirs, default_flow_style=True).strip()
    else:
        train_data = str(data)
    shape = preset(settings["model_name"])
    small = {"n_layer": 1, "n_embd": 64, "n_head": 4, "n_kv_head": 4 if shape.n_kv_head == shape.n_head else 2, "intermediate_size": 128}
    budget = ["--max_tokens", "256"] if "max_tokens" in settings else ["--max_iters", "2"]  # 2 steps of 4 x 32 tokens
    warmup = ["--warmup_tokens", "1"] if "warmup_tokens" in settings else ["--warmup_iters", "1"]
    out = tmp_path / "run"
    result = pajama(
        "pretrain", "--config", recipe, "--train_data_dir", train_data, "--out_dir", out,
        "--model_overrides", yaml.safe_dump(small, default_flow_style=True).strip(), "--block_size", "32",
        "--batch_size", "4", "--micro_batch_size", "2", "--devices", "1", "--num_nodes", "1", "--accelerator", "cpu",
        "--strategy", "auto", "--precision", "32-true", "--eval_iters", "1", "--save_interval", "2", "--eval_interval", "2",
        *budget, *warmup,
    )  # fmt: skip
    assert "2 steps (256 tokens)" in result.stdout
    meta = checkpoint.read_meta(out)
    assert meta["step"] == 2 and meta["model"]["n_layer"] == 1 and meta["schedule"]["kind"] == settings["lr_schedule"]
    for key in ("learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "mixture"):
        assert meta["train"][key] == settings.get(key, meta["train"][key]), key  # the recipe's, not the defaults
    state = torch.load(out / "checkpoints" / "step-00000002" / "state", weights_only=True)
    if (settings.get("mixture") or {}).get("github") == 0:
        assert not any(n for name, n in state["sampler"]["counts"].items() if name.endswith("github"))
