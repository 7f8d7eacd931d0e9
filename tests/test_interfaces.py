"""What a new user meets first: metrics loggers and their names, one device resolution for every
command, the memory a job may use, list flags, the version, and the modes of exported files."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import stat
import typing
from pathlib import Path

import pytest
import torch

from pajama import PajamaError, __version__
from pajama.cli import COMMANDS, CommaList, _config_class, _list_item, build_parser, main
from pajama.hardware import available_memory, cgroup_headroom, device_type, slurm_memory
from pajama.metrics import MetricsLog, parse_loggers, wandb_init_args

GiB = 2**30
WANDB_VARIABLES = ("WANDB_PROJECT", "WANDB_NAME", "WANDB_ENTITY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME")
SLURM_VARIABLES = ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS_PER_NODE")


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``pajama ARGV`` in this process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exit.value.code or 0, out, err


# -- loggers ------------------------------------------------------------------------------


def test_several_loggers_are_chosen_with_commas_and_csv_is_always_among_them():
    assert parse_loggers("csv") == ["csv"]
    assert parse_loggers("tensorboard,wandb") == ["csv", "tensorboard", "wandb"]
    assert parse_loggers(["wandb", "csv", "wandb"]) == ["csv", "wandb"]
    with pytest.raises(PajamaError, match="--logger: unknown 'mlflow'; choose among csv, tensorboard, wandb"):
        parse_loggers("csv,mlflow")


def test_pretrain_takes_logger_list_wandb_project_and_run_name():
    argv = ["pretrain", "--logger", "csv,tensorboard,wandb", "--wandb_project", "llama-repro", "--run_name", "7b-lr3e-4"]
    args = build_parser(argv)[0].parse_args(argv).pretrain
    assert (args.logger, args.wandb_project, args.run_name) == (["csv", "tensorboard", "wandb"], "llama-repro", "7b-lr3e-4")


def test_wandb_names_come_from_the_flag_then_the_environment_then_the_run_directory(tmp_path):
    out = tmp_path / "runs" / "7b"
    defaults = wandb_init_args(out, None, None, environ={})
    assert defaults["project"] == "pajama" and defaults["name"] == "7b" and defaults["dir"] == str(out)
    assert defaults["entity"] is None and defaults["mode"] is None and defaults["resume"] == "allow"
    assert defaults["id"] == wandb_init_args(out, "other", "names", environ={})["id"] != wandb_init_args(tmp_path / "b" / "7b", None, None, environ={})["id"]
    environ = dict(zip(WANDB_VARIABLES, ["env-project", "env-name", "my-team", "offline", str(tmp_path / "wandb"), "run123", "must"]))
    from_environment = wandb_init_args(out, None, None, environ=environ)
    assert from_environment == {"project": "env-project", "name": "env-name", "entity": "my-team", "mode": "offline", "dir": str(tmp_path / "wandb"), "id": "run123", "resume": "must"}
    flags_win = wandb_init_args(out, "flag-project", "flag-name", environ=environ)
    assert (flags_win["project"], flags_win["name"], flags_win["entity"]) == ("flag-project", "flag-name", "my-team")


def test_wandb_reads_the_process_environment_by_default(tmp_path, monkeypatch):
    for name in WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    assert wandb_init_args(tmp_path, None, None)["project"] == "from-env"


def test_metrics_log_opens_every_logger_named(tmp_path):
    """tensorboard among several loggers is opened (before: only a lone --logger tensorboard was)."""
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(PajamaError, match="--logger tensorboard needs the tensorboard package"):
            MetricsLog(tmp_path, [], "csv,tensorboard", resume_step=0, enabled=True)
        return
    log = MetricsLog(tmp_path, [], "csv,tensorboard", resume_step=0, enabled=True)
    log.write(1, 100, {"loss": 3.0})
    log.close()
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [row["loss"] for row in csv.DictReader(f)] == ["3.0"]


# -- devices ------------------------------------------------------------------------------

# An accelerator this machine does not have.
ABSENT = "mps" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize(
    "argv",
    [["generate", "--checkpoint", "missing-run"], ["evaluate", "--checkpoint", "missing-run", "--data_dir", "missing-data"],
     ["quickstart", "--out_dir", "{tmp}/quickstart"], ["pretrain", "--train_data_dir", "missing-data", "--out_dir", "{tmp}/run"]],  # fmt: skip
    ids=lambda argv: argv[0],
)
def test_every_command_refuses_an_accelerator_that_is_not_there(capsys, tmp_path, argv):
    code, _, err = run_main(capsys, *[a.format(tmp=tmp_path) for a in argv], "--accelerator", ABSENT)
    assert code == 1
    assert f"pajama: error: --accelerator {ABSENT}: " in err and "use --accelerator cpu or auto" in err
    assert not (tmp_path / "quickstart").exists()  # refused before any work


def test_device_resolution():
    assert device_type("cpu") == "cpu"
    assert device_type("auto") == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(PajamaError, match="--accelerator must be auto, cpu, cuda or mps, got 'tpu'"):
        device_type("tpu")
    with pytest.raises(PajamaError, match=f"--accelerator {ABSENT}: "):
        device_type(ABSENT)


# -- memory -------------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_cgroup_v2_limit_of_the_own_group_and_the_groups_above_it(tmp_path, no_slurm):
    own = write_tree(tmp_path, {"self": "0::/job_7/step_0\n"}) / "self"
    root = write_tree(tmp_path / "cgroup", {
        "memory.max": "max\n", "memory.current": str(50 * GiB),
        "job_7/memory.max": str(6 * GiB), "job_7/memory.current": str(2 * GiB), "job_7/memory.stat": f"anon 1\ninactive_file {GiB}\n",
        "job_7/step_0/memory.max": "max\n", "job_7/step_0/memory.current": str(GiB),
    })  # fmt: skip
    assert cgroup_headroom(root, own) == [5 * GiB]  # 6 GiB, 2 used of which 1 is reclaimable cache
    assert available_memory(root, own) == min(5 * GiB, available_memory(tmp_path / "none", own))


def test_cgroup_v1_limit(tmp_path, no_slurm):
    own = write_tree(tmp_path, {"self": "12:cpu,cpuacct:/\n4:memory:/process/abc\n0::/\n"}) / "self"
    root = write_tree(tmp_path / "cgroup", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": str(40 * GiB),  # no limit
        "memory/process/abc/memory.limit_in_bytes": str(3 * GiB), "memory/process/abc/memory.usage_in_bytes": str(GiB),
        "memory/process/abc/memory.stat": f"inactive_file 1\ntotal_inactive_file {GiB // 2}\n",
    })  # fmt: skip
    assert cgroup_headroom(root, own) == [2 * GiB + GiB // 2]
    assert available_memory(root, own) == 2 * GiB + GiB // 2


def test_a_group_limit_is_found_at_the_root_when_the_own_group_is_not_mounted(tmp_path, no_slurm):
    own = write_tree(tmp_path, {"self": "0::/elsewhere/job\n"}) / "self"
    root = write_tree(tmp_path / "cgroup", {"memory.max": str(GiB), "memory.current": str(GiB // 4)})
    assert cgroup_headroom(root, own) == [3 * GiB // 4]


def test_slurm_job_memory(monkeypatch, no_slurm, tmp_path):
    assert slurm_memory() is None
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "512")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    assert slurm_memory() == 3 * 512 * 2**20
    monkeypatch.delenv("SLURM_CPUS_ON_NODE")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert slurm_memory() == 4 * 512 * 2**20
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "1024")  # --mem wins
    assert slurm_memory() == GiB
    assert available_memory(tmp_path, tmp_path / "none") == GiB
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "0")  # --mem=0: all of the node's memory, no limit of its own
    monkeypatch.delenv("SLURM_MEM_PER_CPU")
    assert slurm_memory() is None
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "4G")
    with pytest.raises(PajamaError, match="SLURM_MEM_PER_NODE='4G': expected a whole number"):
        slurm_memory()


# -- list flags ---------------------------------------------------------------------------


def command_paths():
    for name, spec in COMMANDS.items():
        yield from ([name, action] for action in spec) if isinstance(spec, dict) else [[name]]


@pytest.mark.parametrize("path", list(command_paths()), ids=" ".join)
def test_every_list_flag_takes_commas_and_yaml_lists_without_plus_forms(capsys, path):
    parser = build_parser(path)[0]
    sub = parser
    for name in path:
        sub = sub._subcommands_action.choices[name]
    with pytest.raises(SystemExit):
        parser.parse_args([*path, "--help"])
    assert not re.search(r"--\w+\+", capsys.readouterr().out)  # no --flag+ forms
    commands = build_parser(path)[1]
    target = commands[path[0]] if len(path) == 1 else commands[path[0]][path[1]]
    hints = typing.get_type_hints(_config_class(target) or target)
    list_flags = {name for name, hint in hints.items() if _list_item(hint) is not None}
    for action in sub._actions:
        assert (action.dest in list_flags) == isinstance(action.type, CommaList), action.dest


@pytest.mark.parametrize("value", ["common_crawl,c4", "common_crawl, c4", "[common_crawl, c4]"])
def test_download_subsets_as_commas_or_yaml_list(value):
    argv = ["download", "--destination_path", "d", "--subsets", value]
    assert build_parser(argv)[0].parse_args(argv).download.subsets == ["common_crawl", "c4"]


def test_list_flags_in_a_config_file(tmp_path):
    config = tmp_path / "prepare.yaml"
    config.write_text("subsets: [arxiv, c4]\nsnapshots: 2023-06,2023-14\nfilters: gopher\n")
    argv = ["prepare", "--source_path", "s", "--tokenizer_path", "t", "--destination_path", "d", "--config", str(config)]
    args = build_parser(argv)[0].parse_args(argv).prepare
    assert (args.subsets, args.snapshots, args.filters) == (["arxiv", "c4"], ["2023-06", "2023-14"], ["gopher"])
    argv = ["download", "--destination_path", "d", "--listings", "a.txt,b.txt"]
    assert build_parser(argv)[0].parse_args(argv).download.listings == [Path("a.txt"), Path("b.txt")]


def test_a_malformed_list_is_a_one_line_error(capsys):
    code, _, err = run_main(capsys, "download", "--destination_path", "d", "--subsets", "[common_crawl, c4")
    assert code == 2
    assert err.strip() == "pajama download: error: argument --subsets: invalid list of str, comma-separated or YAML value: '[common_crawl, c4'; see pajama download --help"


def test_filter_rules_help_names_every_rule_field(capsys):
    code, out, _ = run_main(capsys, "prepare", "--help")
    text = " ".join(out.split())
    assert code == 0 and "divide_by (a document-level signal" in text


def test_version(capsys):
    assert run_main(capsys, "--version")[:2] == (0, f"pajama {__version__}\n")


# -- file modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_files_follow_the_umask(tmp_path, tokenizer, umask):
    from test_hf import tiny_model, write_checkpoint

    from pajama.hf import export

    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000010", tiny_model(tokenizer.vocab_size), tokenizer.sha256)
    previous = os.umask(umask)
    try:
        export(ckpt, tmp_path / "hf", tokenizer_path=tokenizer.path)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes and "config.json" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    assert stat.S_IMODE((tmp_path / "hf").stat().st_mode) == 0o777 & ~umask
