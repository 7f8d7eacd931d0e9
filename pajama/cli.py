"""The ``pajama`` command: one subcommand per step of the pipeline.

Every subcommand takes ``--help`` and ``--config FILE.yaml``; flags are the function's (or
the config dataclass's) parameters, with the names of lit-llama's RedPajama howto.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import docstring_parser  # jsonargparse[signatures] reads docstrings with it too
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, set_parsing_settings

from pajama import PajamaError, __version__


# Each command's function as "module:function", imported only when that command is parsed:
# importing every module would import torch (seconds) for commands that never use it.
COMMANDS: dict[str, str | dict[str, str]] = {
    "download": "pajama.download:download",
    "tokenizer": {"train": "pajama.tokenizer.train:train_tokenizer"},
    "prepare": "pajama.prepare:prepare",
    "data": {"verify": "pajama.data:verify", "inspect": "pajama.data:inspect"},
    "pretrain": "pajama.training.loop:pretrain",
    "generate": "pajama.generate:generate",
    "evaluate": "pajama.evaluation:evaluate",
    "export": "pajama.hf:export",
    "import": "pajama.hf:import_",
    "plot": "pajama.plot:plot",
    "model": "pajama.model_info:model",
    "quickstart": "pajama.quickstart:quickstart",
}


# The argument a command may also take without its flag: ``pajama model 7B``, ``pajama data verify DIR``.
POSITIONAL = {"model": "name", "plot": "run_dir", "verify": "destination_path", "inspect": "destination_path"}
POSITIONAL_DEST = "positional"


def _load(spec: str) -> Callable:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _parser(**kwargs) -> ArgumentParser:
    return ArgumentParser(exit_on_error=False, allow_abbrev=False, **kwargs)


def _summary(spec: str) -> str:
    """The first line of a command function's docstring, read from its module's source
    without importing the module, nor its package (``pajama.training`` imports torch)."""
    module, name = spec.split(":")
    path = Path(__file__).parent.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    doc = ast.get_docstring(function) or ""
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


@dataclasses.dataclass(frozen=True)
class CommaList:
    """The type of every list flag, whatever its parameter's annotation: comma-separated
    (``--subsets common_crawl,c4``) or a YAML list (``--subsets '[common_crawl, c4]'``; in a
    --config file, either)."""

    item: type

    def __call__(self, value: str | list) -> list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.lstrip().startswith("[") else value.split(",")
            except yaml.YAMLError:
                raise ValueError(f"{value!r} is neither comma-separated nor a YAML list") from None
        if not isinstance(value, list):
            raise ValueError(f"expected a comma-separated or YAML list, got {value!r}")
        return [self.item(str(v).strip()) for v in value if str(v).strip()]

    def __repr__(self) -> str:  # the flag's type in --help
        return f"list of {self.item.__name__}, comma-separated or YAML"


def _list_item(hint) -> type | None:
    """X where ``hint`` is list[X] of a plain X (str, Path ...), or a union holding one; None for
    any other type (a list of mappings, --stages, stays YAML)."""
    for h in (hint, *typing.get_args(hint)):
        if typing.get_origin(h) is list and typing.get_origin(typing.get_args(h)[0]) is None:
            return typing.get_args(h)[0]
    return None


def _comma_lists(parser: ArgumentParser, hints: dict) -> None:
    """Give every list-typed flag of ``parser`` the one convention of :class:`CommaList`, in
    place of jsonargparse's (a YAML list only, plus an appending ``--flag+``); a list of
    mappings keeps its YAML, without the ``--flag+`` form either."""
    for action in list(parser._actions):
        for option in [o for o in action.option_strings if o.endswith("+")]:
            action.option_strings.remove(option)
            parser._option_string_actions.pop(option)
        item = _list_item(hints.get(action.dest))
        if item is None:
            continue
        parser._option_string_actions.pop(f"--{action.dest}")
        group = action.container
        flag = group.add_argument(f"--{action.dest}", type=CommaList(item), default=action.default, help=action.help)
        for actions in (parser._actions, group._group_actions):  # in the old one's place: --help keeps the signature's order
            actions.remove(flag)
            actions[actions.index(action)] = flag


def _subparser(target: Callable) -> ArgumentParser:
    parser = _parser(description=(target.__doc__ or "").strip().split("\n\n")[0] or None)
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
    _comma_lists(parser, typing.get_type_hints(config_class or target))
    return parser


def _param_help(target: Callable, name: str) -> str:
    """The description of parameter ``name`` in ``target``'s docstring."""
    params = docstring_parser.parse(target.__doc__ or "").params
    return next((" ".join(p.description.split()) for p in params if p.arg_name == name and p.description), "")


def _named(argv: list[str]) -> tuple[str, ...]:
    """The command, or group of commands, that ``argv`` names: ``("data", "verify")``, ``("data",)``, ``()``."""
    path, level = (), COMMANDS
    for token in argv:
        if not isinstance(level, dict) or token not in level:
            break
        path, level = (*path, token), level[token]
    return path


def build_parser(argv: list[str] | None = None) -> tuple[ArgumentParser, dict]:
    """The ``pajama`` parser, and the functions of the commands it has the flags of.

    Every command is listed, but only the one that ``argv`` names gets its flags, so that only
    its module is imported; without ``argv``, every command gets them.
    """
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # config dataclass fields document themselves
    named = None if argv is None else _named(argv)
    parser = _parser(prog="pajama", description="Pre-train LLaMA models on RedPajama.")
    parser.add_argument("--version", action="version", version=f"pajama {__version__}")
    sub = parser.add_subcommands(dest="command")
    commands: dict[str, Callable | dict[str, Callable]] = {}

    def command_parser(path: tuple[str, ...], spec: str, into: dict) -> ArgumentParser:
        if named is not None and path != named:
            return _parser()  # only listed (help, choices), never parsed: its module stays unimported
        into[path[-1]] = _load(spec)
        return _subparser(into[path[-1]])

    def summary(path: tuple[str, ...], spec: str) -> str | None:
        # Shown only in the listing of the group argv names (``pajama --help``, ``pajama data
        # --help``), and reading it parses the module's source: skipped everywhere else.
        return _summary(spec) if named is None or path[:-1] == named else None

    for name, spec in COMMANDS.items():
        if isinstance(spec, dict):
            group = _parser(description=f"pajama {name} subcommands")
            sub.add_subcommand(name, group, help=f"{name}: {', '.join(spec)}")
            inner = group.add_subcommands(dest="action")
            commands[name] = {}
            for action, action_spec in spec.items():
                path = (name, action)
                inner.add_subcommand(action, command_parser(path, action_spec, commands[name]), help=summary(path, action_spec))
        else:
            sub.add_subcommand(name, command_parser((name,), spec, commands), help=summary((name,), spec))
    return parser, commands


def _explain(message: str, parser: ArgumentParser, argv: list[str]) -> str:
    """A parse error as one line in the flags' own names, with a suggestion for a mistyped flag."""
    path, sub = [], parser
    for token in argv:  # the subcommand the flags belong to
        action = sub._subcommands_action
        if action is None or token not in action.choices:
            break
        path.append(token)
        sub = action.choices[token]
    message = re.sub(r'Parser key "([\w.]+)":', lambda m: f"--{m[1].rsplit('.', 1)[-1]}:", message)
    message = re.sub(r"Expected a <class '(\w+)'>\. Got value: (.*)", r"expected \1, got \2", message)
    # An optional flag (int | None ...): the type it takes, not jsonargparse's account of the union.
    message = re.sub(r"Does not validate against any of the Union subtypes\s+Subtypes: \[<class '(\w+)'>, <class 'NoneType'>\].*Given value: (.*)", r"expected \1, got \2", message, flags=re.S)
    if "but it was not provided" in message and sub._subcommands_action is not None:
        message = f"give a command: {', '.join(sub._subcommands_action.choices)}"
    if "arguments are required:" in message:
        head, names = message.split(":", 1)
        message = f"{head}: " + ", ".join(f"--{n.strip().rsplit('.', 1)[-1]}" for n in names.split(","))
    if message.startswith("unrecognized arguments:"):
        known = [o for o in sub._option_string_actions if o.startswith("--")]
        for flag in re.findall(r"--\w+", message):
            close = difflib.get_close_matches(flag, known, n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
    command = " ".join(["pajama", *path])
    return f"{command}: error: {' '.join(message.split()).rstrip('.')}; see {command} --help"


def main(argv: list[str] | None = None) -> None:
    """Run the ``pajama`` command line ``argv`` (default: the process's arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = build_parser(argv)
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as e:
        print(_explain(str(e), parser, argv), file=sys.stderr)
        sys.exit(2)
    target = commands[ns.command]
    args = ns[ns.command]
    command = f"pajama {ns.command}"
    if isinstance(target, dict):
        command += f" {args.action}"
        target = target[args.action]
        args = args[args.action]
    kwargs = {k: v for k, v in vars(args.clone()).items() if k not in ("config", "__path__", POSITIONAL_DEST)}
    if target.__name__ in POSITIONAL:
        flag = POSITIONAL[target.__name__]
        if args[POSITIONAL_DEST] is not None:
            kwargs[flag] = args[POSITIONAL_DEST]
        if kwargs[flag] is None and inspect.signature(target).parameters[flag].default is inspect.Parameter.empty:
            print(f"{command}: error: give {flag.upper()} (or --{flag}); see {command} --help", file=sys.stderr)
            sys.exit(2)
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
