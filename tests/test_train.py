"""Pre-training on CPU through the same code paths as on GPUs: single device, FSDP2 over gloo,
multi-node torchrun, exact resume after SIGKILL, preemption, the numerical guard."""

import csv
import math
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pajama import PajamaError, checkpoint
from pajama.cli import build_parser
from pajama.corpora import SUBSETS
from pajama.training import EXIT_INTERRUPTED, EXIT_PREEMPTED, TrainConfig, pretrain

SMALL = [
    "--model_name", "tiny", "--block_size", "32", "--batch_size", "8", "--micro_batch_size", "2",
    "--warmup_iters", "2", "--eval_iters", "2", "--accelerator", "cpu", "--learning_rate", "3e-3",
    "--precision", "32-true",  # runs compared with each other must not depend on a speed measurement
]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The bundled sample through the howto's commands: a tokenizer, then prepare --sample True."""
    root = tmp_path_factory.mktemp("prepared")
    sample = Path(__file__).parents[1] / "pajama" / "sample"
    pajama("tokenizer", "train", "--source_path", sample, "--sample", "True", "--destination_path", root / "tokenizer", "--vocab_size", "512")
    tokenizer = root / "tokenizer" / "tokenizer.model"
    pajama("prepare", "--source_path", sample, "--tokenizer_path", tokenizer, "--destination_path", root / "data", "--sample", "True", "--chunk_size", "65536")
    return root / "data", tokenizer


def pajama(*args, check=True, **kwargs):
    """Run the pajama CLI in a fresh process, as a user would."""
    result = subprocess.run([sys.executable, "-m", "pajama.cli", *map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"pajama {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def losses(run_dir):
    return {int(r["step"]): float(r["loss"]) for r in rows(run_dir) if r["loss"]}


def test_pretrain_loss_falls_and_generate_reads_the_checkpoint(prepared, tmp_path):
    data, tokenizer = prepared
    out = tmp_path / "run"
    config = TrainConfig(
        train_data_dir=data, model_name="tiny", out_dir=out, block_size=64, batch_size=8, micro_batch_size=4,
        max_iters=40, warmup_iters=4, learning_rate=3e-3, eval_interval=20, save_interval=20, eval_iters=4,
        log_interval=5, accelerator="cpu",
    )  # fmt: skip
    pretrain(config)
    metrics = rows(out)
    assert [int(r["step"]) for r in metrics] == [0, 5, 10, 15, 20, 25, 30, 35, 40]  # one row per logged step
    val = [float(r["val_loss"]) for r in metrics if r["val_loss"]]
    assert len(val) == 3 and val[-1] < val[0] - 0.5
    assert all(r["val_loss/github"] for r in metrics if r["val_loss"])  # per subset too
    assert float(metrics[-1]["tokens"]) == 40 * 8 * 64
    saved = checkpoint.list_checkpoints(out)
    assert [p.name for p in saved] == ["step-00000020", "step-00000040"]
    meta = checkpoint.read_meta(saved[-1])
    assert meta["step"] == 40 and meta["model"]["name"] == "tiny" and len(meta["tokenizer_sha256"]) == 64
    # Every prepared subset is trained on: prepare's prefixes and the trainer agree.
    assert sorted(meta["data"]) == sorted(SUBSETS)
    state = torch.load(saved[-1] / "state", weights_only=True)
    assert state["sampler"]["next_sample"] == 40 * 8
    assert all(state["sampler"]["counts"][s] > 0 for s in SUBSETS)
    # The tokenizer travels with the data into the run and every checkpoint: generate and export find it.
    for place in (out, *saved):
        assert (place / "tokenizer.model").read_bytes() == tokenizer.read_bytes()
    result = pajama("generate", "--checkpoint", out, "--prompt", "import os", "--max_new_tokens", "20", "--accelerator", "cpu")
    assert result.stdout.startswith("import os") and len(result.stdout) > len("import os\n")
    assert "tokens/s" in result.stderr
    shutil.copytree(saved[-1], tmp_path / "alone")  # a checkpoint copied away on its own
    pajama("export", "--checkpoint", tmp_path / "alone", "--destination_path", tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == tokenizer.read_bytes()


@pytest.fixture(scope="module")
def straight(prepared, tmp_path_factory):
    """A 40-step run never interrupted, a checkpoint every 5 steps, all kept: (its command, out_dir)."""
    data, _ = prepared
    args = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "40", "--save_interval", "5", "--eval_interval", "20", "--keep_last", "0"]
    out = tmp_path_factory.mktemp("straight") / "run"
    pajama(*args, "--out_dir", out)
    return args, out


def test_sigkill_then_resume_gives_identical_losses(straight, tmp_path):
    args, straight_out = straight
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pajama.cli", *map(str, args), "--out_dir", killed], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-00000010").exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "step-00000040").exists(), "the run finished before it could be killed"
    pajama(*args, "--out_dir", killed)
    assert losses(killed) == losses(straight_out)  # bit for bit, step for step
    assert len(losses(killed)) == 40


def test_going_back_to_an_earlier_checkpoint_sets_the_later_ones_aside(straight, tmp_path):
    args, straight_out = straight
    out = tmp_path / "run"
    shutil.copytree(straight_out, out)
    result = pajama(*args, "--out_dir", out, "--resume", checkpoint.checkpoint_dir(out, 20))
    assert "moved 4 later checkpoint(s)" in result.stdout
    assert sorted(p.name for p in (out / "checkpoints" / "abandoned").iterdir()) == [f"step-{s:08d}" for s in (25, 30, 35, 40)]
    assert [p.name for p in checkpoint.list_checkpoints(out)] == [p.name for p in checkpoint.list_checkpoints(straight_out)]
    assert losses(out) == losses(straight_out)  # steps 21-40 trained again, the same way


def test_a_run_from_an_initial_checkpoint_resumes_without_it(straight, prepared, tmp_path):
    data, _ = prepared
    _, straight_out = straight
    initial = tmp_path / "initial"
    shutil.copytree(checkpoint.checkpoint_dir(straight_out, 40), initial)
    base = dict(train_data_dir=data, initial_checkpoint=initial, out_dir=tmp_path / "run", block_size=32, batch_size=8, micro_batch_size=2, eval_iters=1, accelerator="cpu")
    pretrain(TrainConfig(max_iters=2, **base))
    shutil.rmtree(initial)  # moved or deleted: the run's own checkpoint holds everything needed
    pretrain(TrainConfig(max_iters=3, **base))
    assert checkpoint.read_meta(tmp_path / "run")["step"] == 3


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_to_resume_from(straight, tmp_path):
    args, straight_out = straight
    # What a kill while step 15 is being saved leaves behind: steps up to 10, the metrics so far,
    # and a half-written step 15 under its temporary name.
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for step in (5, 10):
        shutil.copytree(checkpoint.checkpoint_dir(straight_out, step), checkpoint.checkpoint_dir(out, step))
    with open(straight_out / "metrics.csv") as f:
        lines = f.readlines()
    (out / "metrics.csv").write_text("".join(lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) <= 17]))
    partial = out / "checkpoints" / ".step-00000015.tmp"
    partial.mkdir()
    state = (checkpoint.checkpoint_dir(straight_out, 15) / "state").read_bytes()
    (partial / "state").write_bytes(state[: len(state) // 2])
    assert checkpoint.resolve(out).name == "step-00000010"  # the partial save is never taken as a checkpoint
    result = pajama(*args, "--out_dir", out)
    assert "step-00000010" in result.stdout + result.stderr  # resumed from the last complete one
    assert losses(out) == losses(straight_out)
    assert [p.name for p in checkpoint.list_checkpoints(out)] == [p.name for p in checkpoint.list_checkpoints(straight_out)]
    assert not partial.exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, EXIT_PREEMPTED), (signal.SIGINT, EXIT_INTERRUPTED)])
def test_sigterm_and_ctrl_c_checkpoint_then_exit(prepared, tmp_path, sig, code):
    data, _ = prepared
    out = tmp_path / "run"
    args = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "400", "--save_interval", "1000", "--eval_interval", "1000", "--out_dir", out]
    proc = subprocess.Popen([sys.executable, "-m", "pajama.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not ((out / "metrics.csv").exists() and len(rows(out)) > 3) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output[-2000:]
    saved = checkpoint.list_checkpoints(out)
    assert len(saved) == 1 and 0 < checkpoint.read_meta(saved[0])["step"] < 400
    assert f"received {sig.name}" in output and "Traceback" not in output


def test_max_time_checkpoints_before_the_deadline(prepared, tmp_path):
    data, _ = prepared
    config = TrainConfig(
        train_data_dir=data, model_name="tiny", out_dir=tmp_path / "run", block_size=32, batch_size=4, micro_batch_size=4,
        max_iters=1_000_000, save_interval=1_000_000, eval_interval=1_000_000, eval_iters=1, max_time="0:02", accelerator="cpu",
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit:
        pretrain(config)
    assert exit.value.code == EXIT_PREEMPTED and time.monotonic() - started < 30
    saved = checkpoint.list_checkpoints(tmp_path / "run")
    assert len(saved) == 1 and checkpoint.read_meta(saved[0])["step"] > 0


def test_nonfinite_steps_are_skipped_then_stop_with_a_finite_checkpoint(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    config = TrainConfig(
        train_data_dir=data, model_name="tiny", out_dir=out, block_size=32, batch_size=4, micro_batch_size=4,
        max_iters=50, decay_lr=False, learning_rate=1e30, save_interval=1, eval_interval=1000, eval_iters=1,
        max_bad_steps=3, accelerator="cpu", precision="32-true",
    )  # fmt: skip
    with pytest.raises(PajamaError, match="3 consecutive non-finite steps"):
        pretrain(config)
    skipped = [int(r["step"]) for r in rows(out) if r["skipped"] == "1"]
    assert len(skipped) == 3 and skipped == list(range(skipped[0], skipped[0] + 3))
    _, weights, _ = checkpoint.load_model_weights(out)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_two_process_fsdp_matches_one_process_and_resumes_on_one(prepared, tmp_path):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--lr_decay_iters", "100", "--save_interval", "4", "--eval_interval", "4"]
    pajama(*common, "--max_iters", "6", "--out_dir", tmp_path / "one")
    result = pajama(*common, "--max_iters", "4", "--devices", "2", "--strategy", "fsdp", "--out_dir", tmp_path / "fsdp")
    assert "2 device(s) x 2 sequences x 2 accumulation" in result.stdout
    assert (tmp_path / "fsdp" / "checkpoints" / "step-00000004" / "state").is_dir()  # sharded checkpoint
    # The sharded checkpoint loads in one process, without the original world size...
    _, sharded, _ = checkpoint.load_model_weights(tmp_path / "fsdp")
    assert sharded["layers.0.attn.wq.weight"].shape == (64, 64)
    # ...and training resumes on one device, resharded: the global batch does not depend on the world size.
    with pytest.raises(PajamaError, match="is a sharded \\(FSDP\\) checkpoint: resume it with --strategy fsdp"):
        pretrain(TrainConfig(train_data_dir=data, out_dir=tmp_path / "fsdp", model_name="tiny", batch_size=8, micro_batch_size=2, strategy="single"))
    result = pajama(*common, "--max_iters", "6", "--devices", "1", "--out_dir", tmp_path / "fsdp")  # --strategy auto: fsdp, for the sharded checkpoint
    assert "resumed from" in result.stdout
    one, two = losses(tmp_path / "one"), losses(tmp_path / "fsdp")
    assert one.keys() == two.keys() == set(range(1, 7))
    for step in one:
        assert math.isclose(one[step], two[step], rel_tol=1e-4), (step, one[step], two[step])


def test_four_process_fsdp_matches_one_process_and_its_checkpoint_resumes_on_two(prepared, tmp_path):
    """The step's numerics at more ranks than two, with real processes (gloo): FSDP2 over 4, then
    its sharded checkpoint resharded onto 2, against one process, step for step."""
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--lr_decay_iters", "100", "--save_interval", "3", "--eval_interval", "3"]
    pajama(*common, "--max_iters", "5", "--out_dir", tmp_path / "one")
    result = pajama(*common, "--max_iters", "3", "--devices", "4", "--out_dir", tmp_path / "many")
    assert "4 device(s) x 2 sequences x 1 accumulation" in result.stdout
    result = pajama(*common, "--max_iters", "5", "--devices", "2", "--out_dir", tmp_path / "many")
    assert "resumed from" in result.stdout and "2 device(s) x 2 sequences x 2 accumulation" in result.stdout
    one, many = losses(tmp_path / "one"), losses(tmp_path / "many")
    assert one.keys() == many.keys() == set(range(1, 6))
    for step in one:
        assert math.isclose(one[step], many[step], rel_tol=1e-4), (step, one[step], many[step])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_matches_one_process(prepared, tmp_path):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "3", "--save_interval", "3", "--eval_interval", "3"]
    pajama(*common, "--out_dir", tmp_path / "one")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
             "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "pajama.cli",
             *map(str, common), "--num_nodes", "2", "--devices", "1", "--out_dir", tmp_path / "nodes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "nodes")
    assert one.keys() == two.keys()
    for step in one:
        assert math.isclose(one[step], two[step], rel_tol=1e-4), (step, one[step], two[step])


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_srun_and_mpi_launched_processes_match_one_process(prepared, tmp_path, launcher):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "3", "--save_interval", "3", "--eval_interval", "3"]
    pajama(*common, "--out_dir", tmp_path / "one")
    command = [sys.executable, "-m", "pajama.cli", *map(str, common), "--out_dir", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port()))
    if launcher == "srun":
        # What `srun` gives each task of `sbatch --nodes=2 --ntasks-per-node=1` (examples/pretrain.sbatch).
        slurm = dict(SLURM_JOB_NAME="pajama", SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NODELIST="127.0.0.1")
        procs = [
            subprocess.Popen([*command, "--num_nodes", "2", "--devices", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(env, **slurm, SLURM_PROCID=str(rank), SLURM_NODEID=str(rank), SLURM_LOCALID="0"))
            for rank in (0, 1)
        ]  # fmt: skip
    else:
        mpiexec = Path(sys.executable).with_name("mpiexec")  # from the mpich wheel of the test extra
        procs = [subprocess.Popen([str(mpiexec), "-n", "2", *command, "--devices", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-3000:] for o in outputs)
    assert "Starting with 2 processes" in "".join(outputs)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "run")
    assert one.keys() == two.keys() == {1, 2, 3}
    for step in one:
        assert math.isclose(one[step], two[step], rel_tol=1e-4), (step, one[step], two[step])


def test_compile_and_activation_checkpointing_train_the_same_model(prepared, tmp_path):
    data, _ = prepared
    base = dict(
        train_data_dir=data, model_name="tiny", block_size=32, batch_size=4, micro_batch_size=2, max_iters=2,
        save_interval=2, eval_interval=2, eval_iters=1, accelerator="cpu", precision="32-true",
    )  # fmt: skip
    pretrain(TrainConfig(out_dir=tmp_path / "eager", **base))
    pretrain(TrainConfig(out_dir=tmp_path / "compiled", compile=True, activation_checkpointing=True, **base))
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert eager.keys() == compiled.keys() == {1, 2}
    for step in eager:
        assert math.isclose(eager[step], compiled[step], rel_tol=1e-4)


def test_resume_refuses_a_different_model(prepared, tmp_path):
    data, _ = prepared
    out = tmp_path / "run"
    base = dict(train_data_dir=data, out_dir=out, block_size=32, batch_size=4, micro_batch_size=4, max_iters=2, save_interval=2, eval_iters=1, accelerator="cpu")
    pretrain(TrainConfig(model_name="tiny", **base))
    with pytest.raises(PajamaError, match="cannot resume .*model differs") as refused:
        pretrain(TrainConfig(model_name="small", **base))
    # The advice works as given: deleting the checkpoints it names lets a new run start there.
    assert "--resume none" not in str(refused.value) and str(out / "checkpoints") in str(refused.value)
    # A save killed half-way leaves a hidden temporary directory that is never taken for a checkpoint.
    (out / "checkpoints" / ".step-00000004.tmp").mkdir()
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000002"]
    pretrain(TrainConfig(model_name="tiny", **{**base, "max_iters": 4, "save_interval": 4}))
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000002", "step-00000004"]
    shutil.rmtree(out / "checkpoints")  # what the refusal advised
    pretrain(TrainConfig(model_name="small", **{**base, "resume": "none"}))
    assert checkpoint.read_meta(checkpoint.list_checkpoints(out)[-1])["model"]["name"] == "small"


def test_clear_errors_without_traceback(prepared, tmp_path):
    data, _ = prepared
    empty = tmp_path / "empty"
    empty.mkdir()
    result = pajama("pretrain", "--train_data_dir", empty, "--model_name", "tiny", "--out_dir", tmp_path / "o", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"pajama: error: {empty}: no prepared chunk files found (run pajama prepare first)"
    # A global batch that micro-batches would change by more than 5 %: refused before anything starts, with what would work.
    result = pajama("pretrain", "--train_data_dir", data, "--devices", "4", "--batch_size", "125", "--micro_batch_size", "8", "--accelerator", "cpu", check=False)
    assert result.returncode == 1 and result.stderr.strip() == (
        "pajama: error: --batch_size 125 does not split into micro-batches of 8 on 4 device(s): it would become 96 sequences, "
        "more than 5% off; try --batch_size 96 or 128"
    )


def test_the_howto_command_on_four_devices_rounds_the_batch_down_as_lit_llama_does(prepared, tmp_path):
    """`pajama pretrain --devices 4 --train_data_dir ...` with the howto's batch defaults (125 global, micro-batch 5):
    125 // 4 // 5 = 6 accumulation steps, 120 sequences per step, said in one line (the model made tiny to fit here)."""
    data, _ = prepared
    out = tmp_path / "run"
    result = pajama(
        "pretrain", "--devices", "4", "--train_data_dir", data, "--out_dir", out, "--accelerator", "cpu", "--model_name", "tiny",
        "--block_size", "16", "--max_iters", "1", "--eval_iters", "1", "--precision", "32-true",
    )  # fmt: skip
    assert "note: global batch 125 -> 120 sequences: 4 device(s) x 5 sequences x 6 accumulation (rounded down, as lit-llama does)" in result.stdout
    assert "4 device(s) x 5 sequences x 6 accumulation = 120 sequences" in result.stdout
    assert checkpoint.read_meta(checkpoint.list_checkpoints(out)[-1])["train"]["batch_size"] == 120


def test_settings_that_cannot_work_are_refused_before_anything_runs(prepared, straight, tmp_path):
    data, _ = prepared
    _, earlier = straight  # a finished one-device run with checkpoints

    def refused(message, **settings):
        config = dict(train_data_dir=data, model_name="tiny", batch_size=8, micro_batch_size=2, accelerator="cpu", out_dir=tmp_path / "new") | settings
        with pytest.raises(PajamaError, match=message):
            pretrain(TrainConfig(**config))

    refused(r"--precision must be bf16-mixed, bf16-true, 16-mixed, 32-true, got 'fp16'", precision="fp16")
    refused(r"--accelerator must be auto, cpu, cuda or mps, got 'tpu'", accelerator="tpu")
    refused(r"--micro_batch_size must be a positive integer or auto, got 'max'", micro_batch_size="max")
    if not torch.cuda.is_available():
        refused(r"--accelerator cuda: no CUDA device is visible to PyTorch .*; use --accelerator cpu", accelerator="cuda")
    # A fresh run into a directory with another run's checkpoints would mix the two.
    refused(r"--resume none, but .*checkpoints holds checkpoints of an earlier run", out_dir=earlier, resume="none")
    # A full (one-device) checkpoint cannot be resumed sharded: say what to do instead.
    # Settings that choose the sequences trained on cannot change under a run.
    refused(r"cannot resume from .*step-00000040: --seed was 1337, now 7", out_dir=earlier, seed=7, block_size=32)
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint.checkpoint_dir(earlier, 5), broken)
    (broken / "meta.json").write_text('{"model": ')
    refused(rf"{broken / 'meta.json'}: unreadable", resume=str(broken))
    refused(r"is a full checkpoint \(one device or DDP\), which FSDP cannot resume: resume it with --strategy ddp, or start a new run from its weights with --initial_checkpoint", out_dir=earlier, devices=2)
    assert not (tmp_path / "new").exists()


def _commands(parser, prefix=()):
    sub = parser._subcommands_action
    if sub is None:
        yield prefix
        return
    for name, child in sub.choices.items():
        yield from _commands(child, (*prefix, name))


def test_every_command_has_help(capsys):
    parser, _ = build_parser()
    commands = list(_commands(parser))
    assert ("prepare",) in commands and ("pretrain",) in commands and ("tokenizer", "train") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit:
            parser.parse_args([*command, "--help"])
        assert exit.value.code == 0
        text = capsys.readouterr().out
        assert "--config" in text, command
    pretrain_help = pajama("pretrain", "--help").stdout
    for flag in ("--train_data_dir", "--devices", "--learning_rate", "--batch_size", "--micro_batch_size", "--max_iters", "--weight_decay",
                 "--beta1", "--beta2", "--grad_clip", "--decay_lr", "--warmup_iters", "--lr_decay_iters", "--min_lr",
                 "--save_interval", "--eval_interval", "--eval_iters", "--log_interval", "--accelerator", "--precision"):  # fmt: skip
        assert flag in pretrain_help, flag
    assert "optimizer steps" in pretrain_help


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--max_itrs", "3"], "pajama pretrain: error: unrecognized arguments: --max_itrs 3 (did you mean --max_iters?); see pajama pretrain --help"),
        (["prepare", "--source_path", "x"], "pajama prepare: error: the following arguments are required: --tokenizer_path, --destination_path; see pajama prepare --help"),
        (["pretrain", "--max_iters", "many"], "pajama pretrain: error: --max_iters: expected int, got many; see pajama pretrain --help"),
        (["data"], "pajama data: error: give a command: verify, inspect; see pajama data --help"),
        (["data", "verify"], "pajama data verify: error: give DESTINATION_PATH (or --destination_path); see pajama data verify --help"),
    ],
)
def test_flag_mistakes_are_one_line_in_the_flags_own_names(capsys, argv, message):
    from pajama.cli import main

    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and capsys.readouterr().err.strip() == message


def change_training_loss(monkeypatch, on_call: int, change) -> None:
    """Make the loss of the ``on_call``-th training micro-batch of this process ``change(loss, hidden)``
    (``hidden``: the final hidden states the loss projects to the vocabulary)."""
    import pajama.model as model

    real_loss = model.linear_cross_entropy
    calls = []

    def linear_cross_entropy(hidden, weight, targets, **kwargs):
        loss = real_loss(hidden, weight, targets, **kwargs)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == on_call:
                loss = change(loss, hidden)
        return loss

    monkeypatch.setattr(model, "linear_cross_entropy", linear_cross_entropy)


def test_fp16_scales_the_loss_skips_an_overflow_and_resumes_exactly(prepared, tmp_path, monkeypatch):
    import pajama.training.launch as launch

    data, _ = prepared
    monkeypatch.setattr(launch, "LOSS_SCALE_GROWTH_INTERVAL", 2)  # the scale doubles every 2 good steps
    # Step 6's first micro-batch: the same loss, with gradients far past fp16's range.
    change_training_loss(monkeypatch, 11, lambda loss, logits: loss + 1e4 * (logits - logits.detach()).sum())
    base = dict(
        train_data_dir=data, model_name="tiny", block_size=32, batch_size=4, micro_batch_size=2, max_iters=8, save_interval=4,
        eval_interval=8, eval_iters=1, lr_decay_iters=20, max_bad_steps=1, accelerator="cpu", precision="16-mixed",
    )  # fmt: skip
    pretrain(TrainConfig(out_dir=tmp_path / "straight", **base))  # max_bad_steps=1: an overflow is not a bad step
    metrics = {int(r["step"]): r for r in rows(tmp_path / "straight") if r["loss"]}
    scale = {step: float(r["loss_scale"]) for step, r in metrics.items()}
    assert [step for step, r in metrics.items() if r["skipped"] == "1"] == [6]
    assert scale[1] == 65536 and scale[3] == 2 * scale[1] and scale[5] == 4 * scale[1]  # doubled every 2 steps without overflow
    assert scale[7] == scale[6] / 2  # halved by the overflow
    # Resume from step 4's checkpoint: the loss scale comes back with it, and every loss is the same.
    resumed = tmp_path / "resumed"
    shutil.copytree(checkpoint.checkpoint_dir(tmp_path / "straight", 4), checkpoint.checkpoint_dir(resumed, 4))
    pretrain(TrainConfig(out_dir=resumed, **base))
    again = {int(r["step"]): r for r in rows(resumed) if r["loss"]}
    assert sorted(again) == [5, 6, 7, 8]
    assert all(again[s]["loss"] == metrics[s]["loss"] and again[s]["loss_scale"] == metrics[s]["loss_scale"] for s in again)


def test_micro_batch_auto_fits_the_traced_step_keeps_the_global_batch_and_is_reused_on_resume(prepared, tmp_path, monkeypatch, capsys):
    import pajama.training.plan as plan
    from pajama.model_config import preset
    from pajama.training.trace import trace_step

    data, _ = prepared
    config = preset("tiny").replace(vocab_size=512, block_size=32)
    # With accumulation (8 sequences per step), the gradients are held between micro-batches: traced with 2.
    traced = [trace_step(config, 1, micro, 32, "32-true", "single", "none", accumulation=2, device="cpu").peak_bytes["total"] for micro in (3, 4)]
    monkeypatch.setattr(plan, "available_memory", lambda: sum(traced) / 2 / plan.CPU_MEMORY_SHARE)  # 3 sequences fit, 4 do not
    base = dict(train_data_dir=data, model_name="tiny", out_dir=tmp_path / "run", block_size=32, batch_size=8, micro_batch_size="auto", eval_iters=1, accelerator="cpu", precision="32-true")
    pretrain(TrainConfig(max_iters=2, **base))
    out = capsys.readouterr().out
    assert "micro-batch 2 (auto: 3 fit, traced step within" in out  # 3 fit; 2 divides the batch of 8
    assert "1 device(s) x 2 sequences x 4 accumulation = 8 sequences" in out
    meta = checkpoint.read_meta(tmp_path / "run")
    assert meta["train"]["micro_batch_size"] == 2 and meta["train"]["batch_size"] == 8
    monkeypatch.setattr(plan, "available_memory", lambda: 100 * traced[1])  # more room now: the run keeps its micro-batch
    pretrain(TrainConfig(max_iters=3, **base))
    assert "micro-batch 2 (auto), as the run began" in capsys.readouterr().out


def test_fp16_under_two_process_fsdp_matches_one_process(prepared, tmp_path):
    # FSDP2 shards the gradients: the loss scaler's overflow check must be all-reduced, and the
    # blocks are gathered in fp16. The losses match a one-process fp16 run.
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--max_iters", "4", "--save_interval", "4", "--eval_interval", "4", "--precision", "16-mixed"]
    pajama(*common, "--out_dir", tmp_path / "one")
    result = pajama(*common, "--devices", "2", "--strategy", "fsdp", "--out_dir", tmp_path / "fsdp")
    assert "precision 16-mixed" in result.stdout
    one, two = rows(tmp_path / "one"), rows(tmp_path / "fsdp")
    assert [r["loss_scale"] for r in one if r["loss"]] == [r["loss_scale"] for r in two if r["loss"]] == ["65536.0"] * 4
    for a, b in zip(one, two):
        if a["loss"]:
            assert math.isclose(float(a["loss"]), float(b["loss"]), rel_tol=1e-4), (a["step"], a["loss"], b["loss"])


def test_fp16_a_nonfinite_loss_is_a_bad_step_and_training_goes_on(prepared, tmp_path, monkeypatch):
    data, _ = prepared
    change_training_loss(monkeypatch, 3, lambda loss, logits: loss * float("nan"))  # step 2: as an fp16 forward overflow gives
    out = tmp_path / "run"
    pretrain(TrainConfig(
        train_data_dir=data, model_name="tiny", out_dir=out, block_size=32, batch_size=4, micro_batch_size=2, max_iters=4,
        eval_interval=4, eval_iters=1, max_bad_steps=2, accelerator="cpu", precision="16-mixed",
    ))  # fmt: skip
    metrics = {int(r["step"]): r for r in rows(out) if r["loss"]}
    assert [step for step, r in metrics.items() if r["skipped"] == "1"] == [2]
    assert float(metrics[3]["loss_scale"]) == float(metrics[2]["loss_scale"]) / 2  # the scaler saw it too
    assert checkpoint.read_meta(out)["step"] == 4


# The family's shapes at tiny widths: grouped-query attention (with document masking), and
# multi-query attention with tied embeddings and Llama 3's rotary scaling.
FAMILY_RUNS = {
    "tinyllama-1.1b": ["--model_overrides", "{n_layer: 2, n_embd: 64, n_head: 4, n_kv_head: 2, intermediate_size: 160}", "--document_mask", "true"],
    "llama3.2-1b": ["--model_overrides", "{n_layer: 2, n_embd: 64, n_head: 4, n_kv_head: 1, intermediate_size: 160, rope_original_context: 16}"],
}


@pytest.mark.parametrize("name", sorted(FAMILY_RUNS))
def test_family_shapes_train_under_two_process_fsdp_and_resume_exactly(prepared, tmp_path, name):
    data, _ = prepared
    common = ["pretrain", "--train_data_dir", data, *SMALL, "--model_name", name, *FAMILY_RUNS[name], "--lr_decay_iters", "100", "--save_interval", "3", "--eval_interval", "3"]
    pajama(*common, "--max_iters", "5", "--out_dir", tmp_path / "one")
    pajama(*common, "--max_iters", "3", "--devices", "2", "--strategy", "fsdp", "--out_dir", tmp_path / "fsdp")
    config, weights, _ = checkpoint.load_model_weights(tmp_path / "fsdp")  # sharded, read in one process
    assert weights["layers.0.attn.wk.weight"].shape == (config.n_kv_head * 16, 64)
    assert ("lm_head.weight" in weights) == (not config.tie_embeddings)  # a tied table stays one table through sharding
    pajama(*common, "--max_iters", "5", "--devices", "2", "--strategy", "fsdp", "--out_dir", tmp_path / "fsdp")
    one, two = losses(tmp_path / "one"), losses(tmp_path / "fsdp")
    assert one.keys() == two.keys() == set(range(1, 6))
    for step in one:
        assert math.isclose(one[step], two[step], rel_tol=1e-4), (step, one[step], two[step])
    assert one[5] < one[1]


def test_continue_an_imported_tinyllama_shaped_model_with_its_own_tokenizer(hf_tokenizer_json, tmp_path):
    """The way to continue TinyLlama: import its Hugging Face directory (here a transformers-made
    model of its shape, tiny, with a tokenizer.json), prepare with the tokenizer it ships, train
    from its weights. At learning rate 0 the weights come out exactly as they went in."""
    import transformers

    hf_config = transformers.LlamaConfig(
        vocab_size=600, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(hf_config).save_pretrained(tmp_path / "TinyLlama")
    shutil.copy(hf_tokenizer_json, tmp_path / "TinyLlama" / "tokenizer.json")
    pajama("import", "--source", tmp_path / "TinyLlama", "--destination_path", tmp_path / "imported")
    sample = Path(__file__).parents[1] / "pajama" / "sample"
    pajama("prepare", "--source_path", sample, "--sample", "True", "--tokenizer_path", tmp_path / "imported", "--destination_path", tmp_path / "data")
    out = tmp_path / "run"
    result = pajama(
        "pretrain", "--initial_checkpoint", tmp_path / "imported", "--train_data_dir", tmp_path / "data", "--out_dir", out,
        "--block_size", "32", "--batch_size", "4", "--micro_batch_size", "2", "--max_iters", "2", "--eval_iters", "1",
        "--learning_rate", "0", "--decay_lr", "false", "--accelerator", "cpu", "--precision", "32-true",
    )  # fmt: skip
    assert "vocab 600" in result.stdout  # the model's 600 rows kept: more than the tokenizer's 500 entries is fine
    imported_config, imported, _ = checkpoint.load_model_weights(tmp_path / "imported")
    config, trained, meta = checkpoint.load_model_weights(out)
    assert (config.n_kv_head, config.n_head, config.block_size) == (2, 4, 32)
    assert all(torch.equal(trained[k], v) for k, v in imported.items())
    assert all(math.isfinite(loss) for loss in losses(out).values())
    assert (out / "tokenizer.json").read_bytes() == hf_tokenizer_json.read_bytes()  # travelled: imported -> data -> run


def test_two_directory_mixture_trains_and_resumes_exactly(prepared, tmp_path):
    data, tokenizer = prepared
    sample = Path(__file__).parents[1] / "pajama" / "sample"
    code = tmp_path / "code"
    pajama("prepare", "--source_path", sample, "--sample", "True", "--subsets", "[github]", "--tokenizer_path", tokenizer, "--destination_path", code, "--chunk_size", "65536")
    mix = f"{{{data}: 0.7, {code}: 0.3}}"
    common = ["pretrain", "--train_data_dir", mix, *SMALL, "--save_interval", "3", "--eval_interval", "3", "--lr_decay_iters", "100"]
    result = pajama(*common, "--max_iters", "6", "--out_dir", tmp_path / "straight")
    assert "code/github 30.0%" in result.stdout and "data/common_crawl" in result.stdout
    pajama(*common, "--max_iters", "3", "--out_dir", tmp_path / "resumed")
    pajama(*common, "--max_iters", "6", "--out_dir", tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    last = rows(tmp_path / "straight")[-1]
    assert float(last["val_loss/code"]) == float(last["val_loss/code/github"])  # per directory and per stream
    assert last["val_loss/data"] and last["val_loss/data/arxiv"]
    state = torch.load(checkpoint.list_checkpoints(tmp_path / "straight")[-1] / "state", weights_only=True)
    assert state["sampler"]["counts"]["code/github"] > 0
