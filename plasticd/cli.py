"""``plasticd`` command line: run, ingest, status, bench, config, predict, checkpoints, rollback, export, report.

Exit codes: 0 success, 1 runtime error, 2 usage or configuration error;
``plasticd ingest`` exits 1 when any file was quarantined (unless
``--allow-failures``); ``plasticd status`` exits 3 when no daemon is running.
Every error a user can cause ends in one message (a JSON event when the log is
JSON), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plasticd import __version__
from plasticd.bench import add_bench_group
from plasticd.commands import add_commands
from plasticd.config import Settings, config_file_from_env, load_settings
from plasticd.config_text import parse_overrides
from plasticd.daemon_commands import EXIT_ERROR, EXIT_USAGE, quiet_broken_stdout, setup
from plasticd.errors import ConfigError, PlasticdError, UsageError
from plasticd.tools import TOOLS

_SETTINGS_HELP = """\
Settings come from, lowest priority first: built-in defaults, the TOML file
given by --config (or $PLASTICD_CONFIG), PLASTICD_* environment variables
(PLASTICD_MODEL__NEURONS=800), then flags (--set model.neurons=800).
'plasticd config' prints every setting with its value and meaning.
"""


def _settings_args(parser: argparse.ArgumentParser, runtime: bool = True) -> None:
    """The settings options; ``runtime`` False leaves out --device/--seed/--threads (commands that run no model)."""
    g = parser.add_argument_group("settings")
    g.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (default: $PLASTICD_CONFIG if set)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one setting, e.g. --set train.lr=0.01 (repeatable)",
    )
    if runtime:
        g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="runtime.device (default auto: CUDA when present)")
        g.add_argument("--seed", type=int, help="runtime.seed (default 0)")
        g.add_argument("--threads", type=int, help="runtime.threads: torch intra-op threads (default 1; 0 = torch's choice)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log.level (default info)")
    g.add_argument("--log-format", choices=["auto", "json", "console"], help="log.format (default auto)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for this invocation: file < env < --set < dedicated flags."""
    overrides = parse_overrides(args.set)
    flag_map = {
        ("runtime", "device"): getattr(args, "device", None),
        ("runtime", "seed"): getattr(args, "seed", None),
        ("runtime", "threads"): getattr(args, "threads", None),
        ("log", "level"): args.log_level,
        ("log", "format"): args.log_format,
    }
    for (section, field), value in flag_map.items():
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    config = args.config or config_file_from_env()
    return load_settings(config, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticd",
        description="A continual-learning daemon around a sparse, rewiring recurrent network.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"plasticd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    args, resolve, epilog = _settings_args, settings_from_args, _SETTINGS_HELP
    add_commands(sub, ("plasticd.daemon_commands",), settings_args=args, settings_from_args=resolve, epilog=epilog)
    add_bench_group(sub, settings_args=args, settings_from_args=resolve, setup=setup, epilog=epilog)
    add_commands(sub, ("plasticd.report", *TOOLS), settings_args=args, settings_from_args=resolve, epilog=epilog)
    return parser


def _fail(args: argparse.Namespace, message: str, code: int, exc: BaseException | None = None) -> int:
    """A fatal error on stderr: a JSON event when the log is JSON (or --log-format json asked for it), else a line."""
    from plasticd import log

    as_json = _stderr_is_json(args)
    fields: dict[str, Any] = {"exit_code": code}
    if exc is not None:
        fields["error_type"] = type(exc).__name__
    if as_json and exc is not None and not isinstance(exc, PlasticdError | OSError):
        import traceback

        fields["traceback"] = traceback.format_exception(exc)
    line = log.emergency_line("plasticd.failed", message, json_lines=as_json, **fields)
    try:
        sys.stderr.write(line.decode())
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone: the exit code is all that is left
    return code


def _stderr_is_json(args: argparse.Namespace) -> bool:
    """The one rule for every command's messages on stderr: ``--log-format``, else the log as configured, else
    ``log.format`` from the environment, else ``auto``: JSON lines unless stderr is a terminal."""
    import os

    from plasticd import log

    chosen = getattr(args, "log_format", None)
    if chosen is None and log.configured():
        return log.is_json()
    chosen = chosen or os.environ.get("PLASTICD_LOG__FORMAT", "auto")
    if chosen in ("json", "console"):
        return chosen == "json"
    try:
        return not sys.stderr.isatty()
    except (OSError, ValueError):
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: the launcher hands its replicas the same
    func: Callable[[Any], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        return _fail(args, str(exc), EXIT_USAGE, exc)
    except UsageError as exc:
        return _fail(args, f"error: {exc}", EXIT_USAGE, exc)
    except PlasticdError as exc:
        return _fail(args, f"error: {exc}", EXIT_ERROR, exc)
    except BrokenPipeError:
        quiet_broken_stdout()
        return EXIT_ERROR
    except OSError as exc:  # a folder or file the operator pointed at: missing, read-only, full, ...
        return _fail(args, f"error: {exc}", EXIT_ERROR, exc)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except Exception as exc:
        if _stderr_is_json(args):  # a bug, but the log stays JSON
            return _fail(args, f"internal error: {exc!r}", EXIT_ERROR, exc)
        raise


if __name__ == "__main__":
    sys.exit(main())
