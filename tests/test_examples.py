"""The commands the README and examples/ show: every one parses, and the SLURM scripts work as
their comments say."""

import itertools
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pajama.cli import build_parser

ROOT = Path(__file__).parents[1]


def shown_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every ``pajama ...`` command in the README's bash blocks and in examples/,
    shell variables replaced by the defaults the script gives them (``NAME=${NAME:-default}``),
    or by a number."""
    texts = {"README.md": "\n".join(re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S))}
    texts |= {f"examples/{p.name}": p.read_text() for p in sorted((ROOT / "examples").iterdir())}
    found = []
    for where, text in texts.items():
        text = re.sub(r"\\\n\s*", " ", text)  # continuation lines
        defaults = dict(re.findall(r"(\w+)=\$\{\1:-([^}]*)\}", text))
        text = re.sub(r"\$\{?(\w+)(?::-([^}]*))?\}?", lambda m: defaults.get(m.group(1)) or m.group(2) or "8", text)
        for line in text.splitlines():
            if "pajama" not in line:
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # not a shell line
                continue
            if "..." in tokens:  # an elided command
                continue
            for i, token in enumerate(tokens):
                if token == "pajama" or (token == "pajama.cli" and tokens[i - 1] == "-m"):
                    argv = list(itertools.takewhile(lambda t: t not in ("|", "&&", ";", ">", "2>&1"), tokens[i + 1 :]))
                    found.append((where, argv))
                    break
    return found


COMMANDS = shown_commands()


def test_the_readme_and_examples_show_commands():
    assert len(COMMANDS) > 20 and {where for where, _ in COMMANDS} >= {"README.md", "examples/pretrain.sbatch", "examples/torchrun.sh"}


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[f"{w}: {' '.join(a)[:60]}" for w, a in COMMANDS])
def test_every_shown_command_parses(where, argv):
    if "--config" in argv and not (ROOT / argv[argv.index("--config") + 1]).exists():  # a file the README has the user write
        del argv[argv.index("--config") : argv.index("--config") + 2]
    parser, _ = build_parser(argv)
    parser.parse_args(argv)


def test_a_slurm_script_run_with_bash_makes_its_log_folder_and_submits_itself(tmp_path):
    # SLURM opens --output before the script runs: logs/ must exist first. A stand-in sbatch records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "$@" > sbatch-args.txt\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("SLURM_JOB_ID", None)
    for script in ("prepare.sbatch", "pretrain.sbatch"):
        work = tmp_path / script
        work.mkdir()
        subprocess.run(["bash", str(ROOT / "examples" / script), "--array=0-3"], cwd=work, env=env, check=True)
        assert (work / "logs").is_dir()
        assert (work / "sbatch-args.txt").read_text().split() == ["--array=0-3", str(ROOT / "examples" / script)]
