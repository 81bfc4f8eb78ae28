"""``plasticd`` command line: run, bench, config.

Exit codes: 0 success, 1 runtime error, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plasticd import __version__
from plasticd.config import Settings, load_settings, parse_overrides
from plasticd.errors import ConfigError, PlasticdError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

_SETTINGS_HELP = """\
Settings come from, lowest priority first: built-in defaults, the TOML file
given by --config (or $PLASTICD_CONFIG), PLASTICD_* environment variables
(PLASTICD_MODEL__NEURONS=800), then flags (--set model.neurons=800).
'plasticd config' prints every setting with its value and meaning.
"""


def _settings_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings")
    g.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (default: $PLASTICD_CONFIG if set)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one setting, e.g. --set train.lr=0.01 (repeatable)",
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="runtime.device (default auto: CUDA when present)")
    g.add_argument("--seed", type=int, help="runtime.seed (default 0)")
    g.add_argument("--threads", type=int, help="runtime.threads: torch intra-op threads (default 0 = torch's choice)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log.level (default info)")
    g.add_argument("--log-format", choices=["auto", "json", "console"], help="log.format (default auto)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for this invocation: file < env < --set < dedicated flags."""
    import os

    overrides = parse_overrides(args.set)
    flag_map = {
        ("runtime", "device"): args.device,
        ("runtime", "seed"): args.seed,
        ("runtime", "threads"): args.threads,
        ("log", "level"): args.log_level,
        ("log", "format"): args.log_format,
    }
    for (section, field), value in flag_map.items():
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    config = args.config or (Path(os.environ["PLASTICD_CONFIG"]) if os.environ.get("PLASTICD_CONFIG") else None)
    return load_settings(config, overrides)


def _setup(settings: Settings) -> None:
    import torch

    from plasticd import log

    log.configure(level=settings.log.level, fmt=settings.log.format, file=settings.log.file)
    if settings.runtime.threads:
        torch.set_num_threads(settings.runtime.threads)


# ---------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup(settings)
    from plasticd.demo import run_fashion_mnist

    return run_fashion_mnist(settings, epochs=args.epochs, limit=args.limit, batch_size=args.batch)


def cmd_bench(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup(settings)
    from plasticd.bench import BenchOptions, run_bench

    opts = BenchOptions(
        samples=args.samples,
        epochs=args.epochs,
        micro_batch=args.micro_batch,
        rewire_sizes=tuple(args.rewire_sizes),
        contenders=tuple(args.only) if args.only else None,
        json_out=args.json,
    )
    return run_bench(settings, opts)


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from plasticd.config import describe_settings

    print(describe_settings(settings))
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticd",
        description="A continual-learning daemon around a sparse, rewiring recurrent network.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"plasticd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="learn from a stream: the Fashion-MNIST training set",
        description="Stream samples through the network: each is predicted, then (if labelled) learned from. "
        "--source fashion-mnist streams the Fashion-MNIST training set (paths.dataset) in a seeded order, "
        "logs prequential accuracy as it goes and the test-set accuracy at the end.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", choices=["fashion-mnist"], default="fashion-mnist", help="where samples come from (default fashion-mnist)")
    p.add_argument("--epochs", type=_positive_int, default=1, help="passes over the stream (default 1)")
    p.add_argument("--limit", type=_positive_int, help="samples per pass (default: the whole training set)")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per step (default 1)")
    _settings_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "bench",
        help="prequential benchmark against a dense MLP, and rewiring cost",
        description="One prequential (test-then-train) pass over the Fashion-MNIST training stream per contender, "
        "each in its own process, then accuracy on the 10k test set: PlasticNet per sample and micro-batched, "
        "a dense MLP of the same width with the same optimizer (the baseline), and reference MLPs. "
        "Then one plasticity cycle timed at several network sizes. Prints a table and ratios to the baseline.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--samples", type=_positive_int, default=60000, help="training samples per pass (default 60000)")
    p.add_argument("--epochs", type=_positive_int, default=1, help="passes over the training stream (default 1)")
    p.add_argument("--micro-batch", type=_positive_int, default=32, help="micro-batch size of the batched contender (default 32)")
    p.add_argument(
        "--rewire-sizes",
        type=_positive_int,
        nargs="*",
        default=[400, 2000, 8000],
        metavar="N",
        help="network sizes at which one prune+regrow cycle is timed (default 400 2000 8000; none to skip)",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these contenders (names as in the table)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    _settings_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "config",
        help="print the effective settings with their meaning",
        description="Print every setting as TOML with its value after file, environment and flags, and what it means.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _settings_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[Any], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"plasticd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PlasticdError as exc:
        print(f"plasticd: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("plasticd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
