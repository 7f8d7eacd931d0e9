"""A run that outlives its cluster, with two CPU processes over gloo: a rank killed, raising or
stopped ends the job within a bound and names the rank; --max_restarts resumes exactly; async
checkpoints; a full disk; --verify_data."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_train
from test_train import SMALL, losses, pajama, rows

from pajama import PajamaError, checkpoint
from pajama.training import EXIT_RANK_FAILED, TrainConfig, pretrain
from pajama.training.config import save_every

prepared = test_train.prepared  # the bundled sample, prepared: the fixture test_train.py uses

TWO = ["--devices", "2", "--strategy", "fsdp"]


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pajama.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, what: str, job: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while not condition():
        assert job.poll() is None, f"exited {job.returncode} before {what}: {job.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"no {what} after {limit} s"
        time.sleep(0.002)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def logged_steps(out: Path) -> int:
    return len(rows(out)) if (out / "metrics.csv").exists() else 0


def long_run(data, out, **kwargs) -> subprocess.Popen:
    """Two ranks training for far longer than a test, collectives bounded at 8 s."""
    return start("pretrain", "--train_data_dir", data, *SMALL, *TWO, "--max_iters", "100000", "--save_interval", "100000", "--eval_interval", "100000",
                 "--collective_timeout", "8", "--out_dir", out, **kwargs)  # fmt: skip


def test_a_rank_killed_mid_step_ends_the_job_naming_it(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    job = long_run(data, out)
    wait_for(lambda: logged_steps(out) > 3, "training steps", job)
    (rank1,) = children(job.pid)  # Fabric's launcher (rank 0) starts rank 1
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    _, err = job.communicate(timeout=60)
    assert job.returncode == EXIT_RANK_FAILED, err[-3000:]
    assert time.monotonic() - killed < 8  # the broken connection is seen at once; the timeout bounds the rest
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pajama: error: rank 1 ({os.uname().nodename}, pid {rank1}) was killed by SIGKILL"), last
    assert "exit 76" in last and str(out / "failures") in last


def test_an_exception_on_one_rank_ends_every_rank_naming_it_with_the_traceback_in_out_dir(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    # Rank 1 alone raises in its 5th step (a fault of that process, as a bad device gives).
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('LOCAL_RANK') == '1':\n"
        "    import pajama.training.step as step\n"
        "    real, calls = step.train_step, []\n"
        "    def train_step(*args, **kwargs):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 5:\n"
        "            raise ValueError('bad value in the batch of rank 1')\n"
        "        return real(*args, **kwargs)\n"
        "    step.train_step = train_step\n"
    )
    started = time.monotonic()
    job = long_run(data, out, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])))
    _, err = job.communicate(timeout=120)
    assert job.returncode == EXIT_RANK_FAILED, err[-3000:]
    assert time.monotonic() - started < 60
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pajama: error: rank 1 ({os.uname().nodename}, pid ") and "failed: ValueError: bad value in the batch of rank 1" in last, last
    record = json.loads((out / "failures" / "rank-1.json").read_text())
    assert record["kind"] == "error" and "Traceback" in record["details"] and "raise ValueError" in record["details"]
    assert json.loads((out / "failures" / "rank-0.json").read_text())["kind"] == "lost peer"
    assert "Traceback" not in err  # tracebacks go to the files


def test_a_stopped_rank_is_a_hang_the_watchdog_writes_stacks_and_ends_the_job(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    job = long_run(data, out)  # the watchdog's cap: half the collective timeout, 4 s
    wait_for(lambda: logged_steps(out) > 5, "training steps", job)
    (rank1,) = children(job.pid)
    os.kill(rank1, signal.SIGSTOP)
    stopped = time.monotonic()
    _, err = job.communicate(timeout=60)
    waited = time.monotonic() - stopped
    assert job.returncode == EXIT_RANK_FAILED, err[-3000:]
    assert 4 <= waited < 8, waited  # the watchdog, before the collective timeout
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pajama: error: rank 0 ({os.uname().nodename}, pid {job.pid}): step ") and "a hang" in last, last
    assert f"no stacks from rank 1 ({os.uname().nodename}, pid {rank1}): stopped, or stuck outside Python" in last
    stacks = (out / "failures" / "rank-0.stacks.txt").read_text()
    assert "a hang" in stacks and 'File "' in stacks and "_run" in stacks  # the main thread, stuck in the loop
    assert not Path(f"/proc/{rank1}").exists() or Path(f"/proc/{rank1}/stat").read_text().split()[2] == "Z"  # not left stopped


def test_max_restarts_finishes_a_run_whose_rank_was_killed_with_identical_losses(prepared, tmp_path):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, *TWO, "--max_iters", "12", "--save_interval", "4", "--eval_interval", "100", "--async_checkpoint", "true"]
    pajama(*common, "--out_dir", tmp_path / "straight")
    out = tmp_path / "restarted"
    job = start(*common, "--out_dir", out, "--max_restarts", "2", "--collective_timeout", "8")
    wait_for(lambda: checkpoint.list_checkpoints(out), "checkpoint", job)
    (rank0,) = children(job.pid)  # under --max_restarts the run is a child of the command
    os.kill(children(rank0)[0], signal.SIGKILL)  # rank 1
    output, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]
    assert "the run ended with exit 76: restart 1 of 2, from the newest complete checkpoint" in err
    assert "resumed from" in output
    assert losses(out) == losses(tmp_path / "straight")  # bit for bit, step for step
    assert len(losses(out)) == 12


def test_a_kill_during_an_async_save_leaves_the_previous_checkpoint_to_resume_from(prepared, tmp_path):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "9", "--save_interval", "3", "--eval_interval", "100", "--keep_last", "0"]
    pajama(*common, "--out_dir", tmp_path / "straight")
    out = tmp_path / "run"
    job = start(*common, "--async_checkpoint", "true", "--out_dir", out)
    partial = out / "checkpoints" / ".step-00000006.tmp"
    wait_for(partial.exists, "save of step 6", job)  # renamed only at a step boundary after its write: a step later at least
    job.kill()
    job.wait()
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000003"]
    pajama(*common, "--async_checkpoint", "true", "--out_dir", out)
    assert losses(out) == losses(tmp_path / "straight")
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000003", "step-00000006", "step-00000009"]
    assert not partial.exists()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_the_run_resumes(prepared, tmp_path):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--save_interval", "3", "--eval_interval", "100"]
    out = tmp_path / "run"
    pajama(*common, "--max_iters", "3", "--out_dir", out)
    size = (checkpoint.checkpoint_dir(out, 3) / "state").stat().st_size

    # Once it trains (MPI's start-up needs room for its shared memory), no file may grow past half a
    # checkpoint: writing one fails with EFBIG (SIGXFSZ ignored), as on a full disk.
    job = start(*common, "--max_iters", "6", "--out_dir", out, preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    wait_for(lambda: logged_steps(out) > 4, "training steps", job)
    resource.prlimit(job.pid, resource.RLIMIT_FSIZE, (size // 2, size // 2))
    _, err = job.communicate(timeout=120)
    assert job.returncode == 1 and "Traceback" not in err, err[-3000:]
    (said,) = [line.split("]")[-1] for line in err.splitlines() if "pajama: error:" in line]  # after a progress bar's line
    assert said == (
        f"pajama: error: could not write checkpoint {checkpoint.checkpoint_dir(out, 6).resolve()} (File too large); the newest complete checkpoint, "
        f"{checkpoint.checkpoint_dir(out, 3).resolve()}, is kept. Free space on that disk (or raise the quota), then rerun the same command to resume"
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000003"]  # no partial save left
    pajama(*common, "--max_iters", "6", "--out_dir", out)
    pajama(*common, "--max_iters", "6", "--out_dir", tmp_path / "straight")
    assert losses(out) == losses(tmp_path / "straight")


def test_save_interval_takes_steps_or_a_duration():
    assert save_every(500) == (500, None) and save_every("500") == (500, None)
    assert save_every("30m") == (None, 1800) and save_every("2h") == (None, 7200) and save_every("90s") == (None, 90) and save_every("1:30:00") == (None, 5400)
    with pytest.raises(PajamaError, match="--save_interval 'half an hour': expected seconds, a number with a unit"):
        save_every("half an hour")


def test_a_duration_save_interval_saves_by_the_clock(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    base = dict(train_data_dir=data, model_name="tiny", block_size=32, batch_size=4, micro_batch_size=4, eval_interval=100, eval_iters=1, accelerator="cpu", precision="32-true", keep_last=0)
    pretrain(TrainConfig(out_dir=out, max_iters=6, save_interval="1000h", **base))
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000006"]  # only the last
    pretrain(TrainConfig(out_dir=out, max_iters=9, save_interval="0.001s", **base))
    assert [p.name for p in checkpoint.list_checkpoints(out)] == [f"step-{s:08d}" for s in range(6, 10)]  # every step


def test_verify_data_refuses_a_damaged_chunk_before_training(prepared, tmp_path):
    data, _ = prepared
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    chunk = min(copy.rglob("*.bin"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    config = TrainConfig(train_data_dir=copy, model_name="tiny", out_dir=tmp_path / "run", block_size=32, batch_size=4, micro_batch_size=4, max_iters=1, eval_iters=1, accelerator="cpu", verify_data=True)
    with pytest.raises(PajamaError, match=chunk.name):
        pretrain(config)
    assert not (tmp_path / "run").exists()
