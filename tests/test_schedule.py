"""Learning rate schedules (cosine, WSD, constant), budgets in tokens, cool-downs from a WSD
checkpoint, and data stages: on the bundled sample, through the CLI as a user runs them."""

import math
import shutil
from pathlib import Path

import pytest
import test_train
import torch
import yaml
from test_train import SMALL, losses, pajama, rows

from pajama import PajamaError, checkpoint
from pajama.loader import MixtureSampler, load_prepared, split_blocks, stream_weights
from pajama.training import TrainConfig, pretrain
from pajama.training.config import data_stages
from pajama.training.schedule import plan_schedule

prepared = test_train.prepared  # the fixture: the bundled sample, prepared

TOKENS_PER_STEP = 8 * 32  # SMALL's batch x block
SAMPLE = Path(__file__).parents[1] / "pajama" / "sample"


def lrs(run_dir):
    return {int(r["step"]): float(r["lr"]) for r in rows(run_dir) if r["lr"]}


def test_token_budgets_become_steps_and_wsd_holds_the_peak_then_decays_to_min_lr():
    config = TrainConfig(lr_schedule="wsd", max_tokens=10_000, warmup_tokens=1_000, decay_fraction=0.25, learning_rate=1e-3, min_lr=1e-4)
    max_iters, schedule = plan_schedule(config, tokens_per_step=256)
    assert max_iters == 40 and schedule.warmup == 4  # rounded up: at least the tokens asked for
    assert [schedule(s) for s in range(4)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3]
    assert {schedule(s) for s in range(4, 30)} == {1e-3}  # stable for all but the last quarter
    decay = [schedule(s) for s in range(30, 40)]
    assert all(a > b for a, b in zip([1e-3, *decay], decay)) and decay[-1] == 1e-4  # min_lr on the last step
    linear = plan_schedule(TrainConfig(**{**vars(config), "decay_shape": "linear"}), 256)[1]
    assert math.isclose(linear(34), 1e-4 + 0.5 * 9e-4) and math.isclose(schedule(34), 1e-4 + (1 - math.sqrt(0.5)) * 9e-4)
    # --decay_tokens instead of the fraction.
    assert plan_schedule(TrainConfig(**{**vars(config), "decay_fraction": None, "decay_tokens": 2_560}), 256)[1].decay_start == 30
    # The defaults are the seed's recipe, in optimizer steps: 600000 steps, 2000 of warm-up, cosine to min_lr.
    max_iters, cosine = plan_schedule(TrainConfig(), tokens_per_step=125 * 2048)
    assert max_iters == 600_000 and cosine.warmup == 2000 and cosine(1999) == 6e-4 and cosine(600_000) == 6e-5
    assert math.isclose(cosine(301_000), 6e-5 + 0.5 * (6e-4 - 6e-5))  # half-way through the decay
    constant = plan_schedule(TrainConfig(lr_schedule="constant", max_iters=10, warmup_iters=2), 1)[1]
    assert [constant(s) for s in (0, 1, 2, 9, 100)] == [3e-4, 6e-4, 6e-4, 6e-4, 6e-4]


def test_data_stages_are_checked_when_read():
    assert [s.start_tokens for s in data_stages(TrainConfig(stages=[{"start_tokens": 100, "mixture": {"c4": 1}}]))] == [0, 100]
    stage = data_stages(TrainConfig(train_data_dir="a", mixture={"c4": 1}, stages=[{"start_tokens": 5, "train_data_dir": "b"}]))[1]
    assert (stage.train_data_dir, stage.mixture) == ("b", {"c4": 1})  # what a stage does not name, it keeps
    for stages, message in [
        ([{"start_tokens": 0, "mixture": {}}], "stage 1's start_tokens must be an integer above the previous stage's start"),
        ([{"start_tokens": 9, "mixture": {}}, {"start_tokens": 9, "mixture": {}}], "stage 2's start_tokens must be an integer above"),
        ([{"start_tokens": 9}], "stage 1 changes nothing"),
        ([{"start_tokens": 9, "data": "x"}], "stage 1 has unknown key"),
    ]:
        with pytest.raises(PajamaError, match=message):
            data_stages(TrainConfig(stages=stages))


def test_each_data_stage_has_its_own_sample_order(prepared):
    data, _ = prepared
    splits, _ = split_blocks(load_prepared(data), 33, 0.005, holdout=True)
    weights = stream_weights({n: s.stream.tokens for n, s in splits.items()}, None, None)
    draws = {stage: MixtureSampler(splits, weights, 33, 1337, stage=stage).draw(64) for stage in (0, 1, 2)}
    assert draws[0] == MixtureSampler(splits, weights, 33, 1337).draw(64)  # stage 0: the run without stages
    assert draws[1] == MixtureSampler(splits, weights, 33, 1337, stage=1).draw(64)  # from (seed, stage) alone
    assert len({tuple(d) for d in draws.values()}) == 3
    later = MixtureSampler(splits, weights, 33, 1337, stage=1)
    with pytest.raises(PajamaError, match="in data stage 0, this sampler is of stage 1"):
        later.load_state_dict(MixtureSampler(splits, weights, 33, 1337).state_dict())


def test_budgets_given_two_ways_and_cooldowns_that_cannot_work_are_refused(prepared, tmp_path):
    data, _ = prepared
    cosine = tmp_path / "cosine"
    base = dict(train_data_dir=data, model_name="tiny", block_size=32, batch_size=4, micro_batch_size=4, eval_iters=1, accelerator="cpu")
    pretrain(TrainConfig(out_dir=cosine, max_iters=1, warmup_iters=1, **base))

    def refused(message, **settings):
        with pytest.raises(PajamaError, match=message):
            pretrain(TrainConfig(**(base | {"out_dir": tmp_path / "new"} | settings)))

    refused("--max_iters 10 and --max_tokens 1000: give one or the other", max_iters=10, max_tokens=1000)
    refused("--warmup_iters 10 and --warmup_tokens 1000: give one or the other", warmup_iters=10, warmup_tokens=1000)
    refused("--decay_fraction is the decay of --lr_schedule wsd .*not of cosine", decay_fraction=0.2)
    refused(r"--lr_schedule wsd: warm-up \(4 steps\) and decay \(2 steps\) are longer than the run \(5 steps of 128 tokens\)",
            lr_schedule="wsd", max_tokens=5 * 128, warmup_tokens=4 * 128, decay_fraction=0.4)  # fmt: skip
    refused("--decay_from: give --decay_tokens", decay_from=cosine)
    refused("is in --out_dir .*a cool-down writes its own checkpoints into a new --out_dir", decay_from=cosine, decay_tokens=512, out_dir=cosine)
    refused("not a checkpoint of a wsd or constant run \\(its learning rate decays by cosine\\)", decay_from=cosine, decay_tokens=512)
    assert not (tmp_path / "new").exists()


def test_wsd_run_in_tokens_then_a_cooldown_from_its_middle_into_a_new_run(prepared, tmp_path):
    data, _ = prepared
    source, cool = tmp_path / "wsd", tmp_path / "cool"
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--eval_interval", "100", "--keep_last", "0", "--lr_schedule", "wsd"]
    # 1,800 tokens in steps of 256: 8 steps; warm-up 512 tokens: 2 steps; the last quarter (2 steps) decays.
    result = pajama(*common, "--max_tokens", "1800", "--decay_fraction", "0.25", "--save_interval", "4", "--out_dir", source)
    assert "8 steps (2,048 tokens)" in result.stdout
    assert "learning rate: warm-up 2 steps (512 tokens), stable at 0.003 to step 6 (1,536 tokens), 1-sqrt decay to 6e-05 at step 8 (2,048 tokens)" in result.stdout
    lr = lrs(source)
    assert [lr[s] for s in range(2, 7)] == [3e-3] * 5 and 3e-3 > lr[7] > lr[8] == 6e-5
    before = {p: p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()}
    # Cool down from step 4 over 768 tokens (3 steps), saving every 2, into a new directory.
    cooldown = [*common, "--decay_from", checkpoint.checkpoint_dir(source, 4), "--decay_tokens", "768", "--save_interval", "2", "--out_dir", cool]
    result = pajama(*cooldown)
    assert "cooling down from" in result.stdout and "stable at 0.003 to step 4 (1,024 tokens), 1-sqrt decay to 6e-05 at step 7" in result.stdout
    cooled = losses(cool)
    assert sorted(cooled) == [5, 6, 7]
    assert cooled[5] == losses(source)[5]  # the source's model, optimizer and data position: the same next loss
    assert cooled[6] != losses(source)[6]  # then its own (lower) learning rate
    assert lrs(cool)[5] < 3e-3 and lrs(cool)[7] == 6e-5
    assert [p.name for p in checkpoint.list_checkpoints(cool)] == ["step-00000006", "step-00000007"]
    assert checkpoint.read_meta(cool)["cooldown"]["step"] == 4
    assert {p: p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()} == before  # the source run untouched
    # The cool-down resumes from its own checkpoints (the source no longer needed), exactly.
    again = tmp_path / "again"
    shutil.copytree(cool, again)
    shutil.rmtree(source)
    pajama(*cooldown[:-1], again, "--resume", checkpoint.checkpoint_dir(again, 6))
    assert losses(again) == cooled


def test_two_stage_run_resumes_exactly_inside_and_across_the_boundary(prepared, tmp_path):
    data, tokenizer = prepared
    code = tmp_path / "code"
    pajama("prepare", "--source_path", SAMPLE, "--sample", "True", "--subsets", "[github]", "--tokenizer_path", tokenizer, "--destination_path", code, "--chunk_size", "65536")
    recipe = tmp_path / "stages.yaml"
    # Stage 1, from step 4 (1,024 tokens): code alone.
    recipe.write_text(yaml.safe_dump({"stages": [{"start_tokens": 4 * TOKENS_PER_STEP, "train_data_dir": str(code)}]}))
    common = ["pretrain", "--config", recipe, "--train_data_dir", data, *SMALL, "--lr_schedule", "constant", "--save_interval", "2",
              "--eval_interval", "100", "--keep_last", "0"]  # fmt: skip
    straight, stopped, back = tmp_path / "straight", tmp_path / "stopped", tmp_path / "back"
    result = pajama(*common, "--max_iters", "6", "--out_dir", straight)
    assert "data stage 1 from step 4 (1,024 tokens)" in result.stdout and "step 4: data stage 1" in result.stdout
    state = torch.load(checkpoint.checkpoint_dir(straight, 6) / "state", weights_only=True)
    assert state["sampler"] == {"next_sample": 2 * 8, "counts": {"github": 2 * 8}, "stage": 1}  # steps 5 and 6 drew from stage 1 alone
    assert checkpoint.read_meta(straight)["data"] == {"github": load_prepared(code).streams["github"].tokens}
    # Stopped inside stage 0 and resumed across the boundary; and resumed from the boundary's checkpoint.
    pajama(*common, "--max_iters", "2", "--out_dir", stopped)
    pajama(*common, "--max_iters", "6", "--out_dir", stopped)
    shutil.copytree(straight, back)
    pajama(*common, "--max_iters", "6", "--out_dir", back, "--resume", checkpoint.checkpoint_dir(back, 4))
    assert losses(stopped) == losses(straight) == losses(back) and len(losses(straight)) == 6

    def resumed(out, **settings):
        config = dict(train_data_dir=data, model_name="tiny", block_size=32, batch_size=8, micro_batch_size=2, eval_iters=2, accelerator="cpu",
                      learning_rate=3e-3, precision="32-true", lr_schedule="constant", out_dir=out, max_iters=8, save_interval=2)  # fmt: skip
        pretrain(TrainConfig(**(config | settings)))

    stage1 = {"start_tokens": 4 * TOKENS_PER_STEP, "train_data_dir": str(code)}
    with pytest.raises(PajamaError, match=r"cannot resume from .*step-00000006: the training data differs"):
        resumed(straight, stages=[{**stage1, "train_data_dir": str(data)}])  # the current stage's data, changed
    with pytest.raises(PajamaError, match="its step 6 is in data stage 1, but in stage 0 of this run's --stages"):
        resumed(straight, stages=None)
    with pytest.raises(PajamaError, match="stage 1's mixture was None, now {'github': 1.0}"):
        resumed(straight, stages=[{**stage1, "mixture": {"github": 1.0}}])
    # A stage the run has not reached yet may be added: that is a change on purpose.
    resumed(straight, stages=[stage1, {"start_tokens": 7 * TOKENS_PER_STEP, "train_data_dir": str(data)}])
    assert torch.load(checkpoint.checkpoint_dir(straight, 8) / "state", weights_only=True)["sampler"]["stage"] == 2
