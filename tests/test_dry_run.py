"""pajama pretrain --dry_run: a GPU cluster run rehearsed on this CPU-only machine."""

import subprocess
import sys
from pathlib import Path

import pytest

from pajama import PajamaError
from pajama.training import TrainConfig, pretrain


def pajama(*args):
    return subprocess.run([sys.executable, "-m", "pajama.cli", *map(str, args)], capture_output=True, text=True)


def test_a_32_gpu_run_is_rehearsed_without_a_gpu_or_data(tmp_path):
    out = tmp_path / "run"
    result = pajama(
        "pretrain", "--dry_run", "true", "--accelerator", "cuda", "--devices", "8", "--num_nodes", "4", "--model_name", "tiny",
        "--micro_batch_size", "2", "--batch_size", "128", "--max_iters", "1000", "--train_data_dir", tmp_path / "not-here", "--out_dir", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "planning with the preset's vocabulary of 32000" in text
    assert "precision bf16-mixed: H100 SXM 80GB (compute capability 9.0) has bf16" in text
    assert "traced step: tiny, 32 device(s) (fsdp, cuda), micro-batch 2 x 256 tokens x 2 accumulation, bf16-mixed" in text
    for part in ("weights", "gradients", "optimizer state", "activations", "logits and loss", "gathered weights and buffers", "total"):
        assert f"    {part} " in text
    assert "FLOPs per device per step" in text and "all_gather" in text and "reduce_scatter" in text
    assert "sharded: each of the 32 devices writes" in text
    assert "32 device(s) x 2 sequences x 2 accumulation = 128 sequences (32,768 tokens) per step; 1,000 steps" in text
    assert "estimated time to step 1,000" in text and "an estimate" in text
    assert "dry run done: fits" in text
    assert not out.exists()  # nothing written: no run happened


def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path):
    result = pajama("pretrain", "--dry_run", "true", "--accelerator", "cuda", "--devices", "8", "--num_nodes", "16", "--model_name", "tiny", "--micro_batch_size", "2")
    assert result.returncode == 1
    assert "--batch_size 125 does not split into micro-batches of 2 on 128 device(s)" in result.stderr
    result = pajama("pretrain", "--dry_run", "true", "--dry_run_gpu", "v100", "--model_name", "tiny")
    assert result.returncode == 1 and "--dry_run_gpu must be one of" in result.stderr


def test_a_run_that_does_not_fit_is_refused_with_what_would(tmp_path, monkeypatch):
    import pajama.training.dry_run as dry_run

    monkeypatch.setattr(dry_run, "available_memory", lambda: 200e6 / dry_run.CPU_MEMORY_SHARE)  # 200 MB for the process
    config = TrainConfig(
        dry_run=True, accelerator="cpu", model_name="tiny", model_overrides={"n_layer": 4}, block_size=256, batch_size=16, micro_batch_size=16,
        precision="32-true", train_data_dir=tmp_path / "not-here", out_dir=tmp_path / "run",
    )  # fmt: skip
    with pytest.raises(PajamaError, match=r"tiny does not fit: micro-batch 16 of 256 tokens on 1 device\(s\) needs .* what fits: --activation_checkpointing"):
        pretrain(config)


RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_fits_and_divides_on_the_hardware_it_names(recipe, tmp_path):
    # The recipe's own devices, nodes and GPU (dry_run_gpu); its data paths need not exist.
    result = pajama("pretrain", "--config", recipe, "--dry_run", "true", "--out_dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run done: fits" in result.stdout
