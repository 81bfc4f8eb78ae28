"""``plasticd bench <benchmark>``: one module per benchmark, each registering its own sub-command.

A benchmark is a module of this package with ``register(subparsers)``: it adds
its sub-parser (its options, its ``--help``) and ``set_defaults(run=...)``, a
function ``run(settings, args) -> exit code``. Listing the module in
``BENCHMARKS`` is all it takes to add one; the group gives every sub-command
the settings options and hands it the settings they resolve to.

The modules are imported while the parser is built, for every ``plasticd``
command, so they keep heavy imports (torch, the engine) inside the functions
that run a benchmark: ``plasticd status`` must not pay for torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from plasticd.commands import SubParsers, add_commands
from plasticd.config import Settings

# modules of this package, in --help order
BENCHMARKS = ("learn", "step", "daemon", "predict", "growth", "continual", "drift", "detectors", "scale", "evolve")

_OLD_FLAGS = {"--daemon": "daemon", "--growth": "growth", "--continual": "continual"}


class _NowASubcommand(argparse.Action):
    """``plasticd bench --growth`` (before the command group): say what it is called now."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None
    ) -> None:
        parser.error(f"{option_string} is now a sub-command: plasticd bench {_OLD_FLAGS[str(option_string)]} [options]")


def add_bench_group(
    subparsers: SubParsers,
    *,
    settings_args: Callable[..., None],
    settings_from_args: Callable[[argparse.Namespace], Settings],
    setup: Callable[[Settings], None],
    epilog: str,
) -> argparse.ArgumentParser:
    """Add ``bench`` and one sub-command per module in ``BENCHMARKS``.

    Each benchmark module registers itself as every command does (``commands.add_commands``); running one
    resolves the settings, calls ``setup`` and then its ``run``. ``plasticd bench`` alone prints the group's help.
    """
    group = subparsers.add_parser(
        "bench",
        help="benchmarks: learning against a dense MLP, the daemon end to end, growth, continual learning",
        description="Measure plasticd. Each benchmark is a sub-command with its own options: "
        "'plasticd bench BENCHMARK --help' explains it.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in _OLD_FLAGS:
        group.add_argument(flag, nargs=0, action=_NowASubcommand, help=argparse.SUPPRESS)
    group.set_defaults(func=lambda args: _print_help(group))
    benchmarks = group.add_subparsers(dest="benchmark", metavar="BENCHMARK", title="benchmarks")
    add_commands(
        benchmarks, [f"{__name__}.{name}" for name in BENCHMARKS], settings_args=settings_args,
        settings_from_args=settings_from_args, setup=setup, epilog=epilog,
    )  # fmt: skip
    return group


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2  # a usage error: no benchmark named
