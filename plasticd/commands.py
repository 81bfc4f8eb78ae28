"""How a command is registered, the one way for all of them, and what command modules share.

The daemon's commands (``plasticd/daemon_commands.py``), the operator tools,
the benchmarks and the report each live in a module with
``register(subparsers)``; ``add_commands`` adds them with the settings
options. A neutral home (no benchmark, tool or service code), so those
modules never depend on one another.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from plasticd.config import Settings


class SubParsers(Protocol):
    """The object ``ArgumentParser.add_subparsers`` returns: a command module adds its sub-commands to it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


Run = Callable[[Settings, argparse.Namespace], int]  # a command: the resolved settings and its arguments -> exit code


def add_commands(
    subparsers: SubParsers,
    modules: Sequence[str],
    *,
    settings_args: Callable[..., None],
    settings_from_args: Callable[[argparse.Namespace], Settings],
    epilog: str,
    setup: Callable[[Settings], None] | None = None,
) -> None:
    """The one way a command is registered: each module in ``modules`` has ``register(subparsers)``, which adds
    its sub-parsers (their options and ``--help``) and returns the parser or a list of them, each with
    ``set_defaults(run=RUN)`` (and ``settings_runtime=False`` for a command that runs no model: no
    --device/--seed/--threads). Every one gets the settings options and the command-line epilog; running it
    resolves the settings, calls ``setup`` (when given) and then ``RUN(settings, args)``.

    The modules are imported while the parser is built, for every ``plasticd`` command, so they keep heavy
    imports (torch, the engine) inside the functions that run.
    """

    def func(args: argparse.Namespace) -> int:
        settings = settings_from_args(args)
        if setup is not None:
            setup(settings)
        run: Run = args.run
        return run(settings, args)

    for name in modules:
        added = importlib.import_module(name).register(subparsers)  # the parser, or the parsers, it added
        for parser in added if isinstance(added, list) else [added]:
            if parser.epilog is None:
                parser.epilog = epilog
            settings_args(parser, runtime=parser.get_default("settings_runtime") is not False)
            parser.set_defaults(func=func)
