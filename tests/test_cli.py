"""The ``pajama`` command imports only the chosen command's module: the ones that do not
need torch start without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs ``pajama ARGS`` in a fresh interpreter and prints whether torch got imported.
RUN_AND_REPORT_TORCH = """
import sys
from pajama.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print("torch imported:", "torch" in sys.modules)
"""


def torch_imported(*argv: str) -> bool:
    result = subprocess.run([sys.executable, "-c", RUN_AND_REPORT_TORCH, *argv], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[-1] == "torch imported: True"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["model", "7B"], ["model", "--help"], ["prepare", "--help"], ["download", "--help"],
     ["data", "verify", "--help"], ["data", "inspect", "--help"], ["tokenizer", "train", "--help"], ["quickstart", "--help"],
     ["export", "--help"], ["import", "--help"], ["--version"]],  # fmt: skip
    ids=" ".join,
)
def test_commands_that_need_no_torch_start_without_it(argv):
    assert not torch_imported(*argv)


def test_a_command_that_needs_torch_imports_it():
    assert torch_imported("pretrain", "--help")  # the check above can see an import
    assert torch_imported("model", "tiny", "--devices", "2")  # the memory plan traces the step


def test_prepare_and_its_workers_run_without_torch(tmp_path, stdlib_texts, tokenizer_model, jsonl):
    # A stand-in ``torch`` first on the path of the driver and of its spawned workers: it
    # records who imported it, then fails like a missing torch would.
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    record = tmp_path / "torch-imported.txt"
    (fake / "__init__.py").write_text(
        f"import os, traceback\nwith open({str(record)!r}, 'a') as f:\n    f.write(f'pid {{os.getpid()}}\\n' + ''.join(traceback.format_stack()))\n"
        "raise ImportError('torch imported by a command that does not need it')\n"
    )
    source = tmp_path / "source"
    jsonl(source / "arxiv" / "part.jsonl", stdlib_texts[:300])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pajama.cli", "prepare", "--source_path", str(source), "--tokenizer_path", str(tokenizer_model), "--destination_path", str(tmp_path / "out"), "--num_workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert not record.exists(), record.read_text()


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["model", "--help"], ["data", "verify", "--help"]], ids=" ".join)
def test_help_is_the_same_as_with_every_command_imported(capsys, argv):
    from pajama.cli import build_parser, main

    outputs = []
    for run in (lambda: main(argv), lambda: build_parser()[0].parse_args(argv)):
        with pytest.raises(SystemExit) as exit:
            run()
        assert exit.value.code == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    if argv == ["--help"]:
        assert "Show a model preset's shape and exact parameter count" in outputs[0]
