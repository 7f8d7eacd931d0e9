"""The quick start sizes its training to the machine it runs on, then runs end to end."""

import csv

from pajama import checkpoint
from pajama.model_config import preset
from pajama.quickstart import MAX_ITERS, MIN_ITERS, plan_iters, quickstart, time_steps


def test_the_number_of_steps_follows_the_measured_step_time():
    assert plan_iters(0.1, 4.0) == MAX_ITERS  # a fast machine: the full run, well within the budget
    assert plan_iters(10.0, 4.0) == MIN_ITERS  # a very slow one: the least that still shows words
    mid = plan_iters(0.8, 4.0)
    assert MIN_ITERS < mid < MAX_ITERS
    # steps plus validations (about a third of a step each) fill the budget
    assert abs((mid + 7 * 8 / 3) * 0.8 - 4.0 * 60) < 1.0
    assert plan_iters(0.8, 8.0) > mid  # a larger budget, more steps


def test_a_step_is_timed_on_the_real_model():
    seconds = time_steps(preset("tiny").replace(vocab_size=512, block_size=256), "32-true", "cpu", steps=1)
    assert 0 < seconds < 30


def test_quickstart_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "qs"
    quickstart(out_dir=out, model_name="tiny", max_iters=30)
    printed = capsys.readouterr().out
    assert "== 4/4 generate" in printed and "quickstart done in" in printed
    with open(out / "run" / "metrics.csv", newline="") as f:
        val = [float(r["val_loss"]) for r in csv.DictReader(f) if r["val_loss"]]
    assert len(val) == 7 and val[-1] < val[0] - 0.5
    assert checkpoint.read_meta(out / "run")["step"] == 30
    quickstart(out_dir=out, model_name="tiny")  # a rerun keeps the run's length: nothing left to train, no timing
    printed = capsys.readouterr().out
    assert "already at step 30" in printed and "s per step" not in printed
