"""Operator tools: ``plasticd predict``, ``checkpoints``, ``rollback`` and ``export``.

Each module of this package registers its sub-commands with ``register(subparsers)``,
which returns the parsers it added; each parser sets ``run=``, a function
``run(settings, args) -> exit code``. ``add_tools`` gives every one the settings
options and a ``func`` that resolves the settings and calls ``args.run``, as
``plasticd bench`` does for the benchmarks.

The modules are imported while the parser is built, for every ``plasticd``
command, so they keep torch and the engine inside the functions that run.
``loader.py`` is the exception to the package's rules: it imports nothing from
plasticd, so it can be copied next to an exported model and used on its own.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from plasticd.commands import SubParsers
from plasticd.config import Settings
from plasticd.errors import ConfigError

TOOLS = ("predict", "rollback", "export")  # modules of this package, in the order --help lists their commands


def add_tools(
    subparsers: SubParsers,
    *,
    settings_args: Callable[[argparse.ArgumentParser], None],
    settings_from_args: Callable[[argparse.Namespace], Settings],
    epilog: str,
) -> None:
    """Add each tool module's sub-commands with the settings options; running one resolves them, then ``args.run``."""

    def func(args: argparse.Namespace) -> int:
        run: Callable[[Settings, argparse.Namespace], int] = args.run
        return run(settings_from_args(args), args)

    for name in TOOLS:
        module = importlib.import_module(f"{__name__}.{name}")
        for parser in module.register(subparsers):
            if parser.epilog is None:
                parser.epilog = epilog
            settings_args(parser)
            parser.set_defaults(func=func)


def setup(settings: Settings) -> None:
    """Logging on stderr (never into ``log.file``: a tool must not write the daemon's files) and torch's threads."""
    import torch

    from plasticd import log

    log.configure(level=settings.log.level, fmt=settings.log.format)
    if settings.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is cuda but torch sees no CUDA device; use --device auto or --device cpu")
    if settings.runtime.threads:
        torch.set_num_threads(settings.runtime.threads)
