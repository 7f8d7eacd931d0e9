"""The ``pajama`` command: one subcommand per step of the pipeline.

Every subcommand takes ``--help`` and ``--config FILE.yaml``; flags are the function's (or
the config dataclass's) parameters, with the names of lit-llama's RedPajama howto.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import typing
from collections.abc import Callable

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from pajama import PajamaError


def _commands() -> dict[str, Callable | dict[str, Callable]]:
    # Imported here so that ``import pajama.cli`` stays cheap for the worker processes.
    from pajama import data, download, evaluate, generate, hf, model_info, plot, quickstart, train
    from pajama.prepare import prepare
    from pajama.tokenizer import train_tokenizer

    return {
        "download": download.download,
        "tokenizer": {"train": train_tokenizer},
        "prepare": prepare,
        "data": {"verify": data.verify, "inspect": data.inspect},
        "pretrain": train.pretrain,
        "generate": generate.generate,
        "evaluate": evaluate.evaluate,
        "export": hf.export,
        "import": hf.import_,
        "plot": plot.plot,
        "model": model_info.model,
        "quickstart": quickstart.quickstart,
    }


# The argument a command may also take without its flag: ``pajama model 7B``, ``pajama data verify DIR``.
POSITIONAL = {"model": "name", "plot": "run_dir", "verify": "destination_path", "inspect": "destination_path"}
POSITIONAL_DEST = "positional"


def _summary(target: Callable) -> str:
    doc = (target.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _config_class(target: Callable) -> type | None:
    """The dataclass of a command that takes one config object (its fields become the flags)."""
    hints = typing.get_type_hints(target)
    hints.pop("return", None)
    if len(hints) == 1:
        (cls,) = hints.values()
        if dataclasses.is_dataclass(cls):
            return cls
    return None


def _subparser(target: Callable) -> ArgumentParser:
    parser = ArgumentParser(description=(target.__doc__ or "").strip().split("\n\n")[0] or None)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below.")
    config_class = _config_class(target)
    if config_class is not None:
        parser.add_class_arguments(config_class, as_positional=False)
    elif target.__name__ in POSITIONAL:
        flag = POSITIONAL[target.__name__]
        parser.add_function_arguments(target, skip={flag}, as_positional=False)
        help = _param_help(target, flag)
        parser.add_argument(POSITIONAL_DEST, nargs="?", default=None, metavar=flag.upper(), help=help)
        parser.add_argument(f"--{flag}", default=None, help=f"{help.rstrip('.')} (may also be given without the flag)")
    else:
        parser.add_function_arguments(target, as_positional=False)
    return parser


def _param_help(target: Callable, name: str) -> str:
    """The ``name:`` entry of the Args section of ``target``'s docstring."""
    doc = inspect.getdoc(target) or ""
    lines = doc.split(f"    {name}:", 1)[-1].splitlines() if f"    {name}:" in doc else [""]
    text = [lines[0].strip()] + [line.strip() for line in lines[1:] if line.startswith("        ")]
    for i, line in enumerate(lines[1:], 1):
        if not line.startswith("        "):
            text = text[:i]
            break
    return " ".join(t for t in text if t)


def build_parser() -> tuple[ArgumentParser, dict]:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # config dataclass fields document themselves
    commands = _commands()
    parser = ArgumentParser(prog="pajama", description="Pre-train LLaMA models on RedPajama.")
    sub = parser.add_subcommands(dest="command")
    for name, target in commands.items():
        if isinstance(target, dict):
            group = ArgumentParser(description=f"pajama {name} subcommands")
            sub.add_subcommand(name, group, help=f"{name}: {', '.join(target)}")
            inner = group.add_subcommands(dest="action")
            for action, fn in target.items():
                inner.add_subcommand(action, _subparser(fn), help=_summary(fn))
        else:
            sub.add_subcommand(name, _subparser(target), help=_summary(target))
    return parser, commands


def main(argv: list[str] | None = None) -> None:
    parser, commands = build_parser()
    ns = parser.parse_args(argv)
    target = commands[ns.command]
    args = ns[ns.command]
    if isinstance(target, dict):
        target = target[args.action]
        args = args[args.action]
    kwargs = {k: v for k, v in vars(args.clone()).items() if k not in ("config", "__path__", POSITIONAL_DEST)}
    if target.__name__ in POSITIONAL:
        flag = POSITIONAL[target.__name__]
        if args[POSITIONAL_DEST] is not None:
            kwargs[flag] = args[POSITIONAL_DEST]
        if kwargs[flag] is None and inspect.signature(target).parameters[flag].default is inspect.Parameter.empty:
            parser.error(f"pajama {ns.command}: give {flag.upper()} (or --{flag})")
    config_class = _config_class(target)
    try:
        if config_class is not None:
            target(config_class(**kwargs))
        else:
            target(**kwargs)
    except PajamaError as e:
        print(f"pajama: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\npajama: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into a reader that stopped early (`| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        sys.exit(141)


if __name__ == "__main__":
    main()
