"""``plasticd`` command line: run, ingest, status, bench, config, predict, checkpoints, rollback, export, report.

Exit codes: 0 success, 1 runtime error, 2 usage or configuration error;
``plasticd ingest`` exits 1 when any file was quarantined (unless
``--allow-failures``); ``plasticd status`` exits 3 when no daemon is running.
Every error a user can cause ends in one message (a JSON event when the log is
JSON), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plasticd import __version__
from plasticd.bench import add_bench_group
from plasticd.commands import positive_int
from plasticd.config import Settings, config_file_from_env, load_settings, parse_overrides
from plasticd.errors import ConfigError, PlasticdError, UsageError
from plasticd.report import register as add_report_command
from plasticd.tools import add_tools

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_NOT_RUNNING = 3  # plasticd status: no daemon runs (LSB's "program is not running")

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


def _setup(settings: Settings) -> None:
    import torch

    from plasticd import log

    log.configure(level=settings.log.level, fmt=settings.log.format, file=settings.log.file)
    if settings.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "runtime.device is cuda but torch sees no CUDA device (no GPU, no driver, or a CPU-only torch); "
            "use --device auto (CUDA when present) or --device cpu"
        )
    if settings.runtime.threads:
        torch.set_num_threads(settings.runtime.threads)


# ---------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup(settings)
    from plasticd.distributed import group
    from plasticd.service import daemon

    replica = group.from_env()  # torchrun's RANK/WORLD_SIZE; one replica is the plain daemon, bit for bit
    if args.replicas is not None and replica is None:
        if args.source == "fashion-mnist":
            raise ConfigError("--replicas runs the inbox daemon (--source inbox); the fashion-mnist stream runs in one process")
        from plasticd.distributed import launcher

        how = launcher.Launch(
            replicas=args.replicas, nnodes=args.nnodes, endpoint=args.rdzv_endpoint, run_id=args.rdzv_id,
            max_restarts=args.max_restarts, stop_seconds=int(settings.replicas.timeout_seconds) + launcher.STOP_GRACE_S,
        )  # fmt: skip
        return launcher.launch(how, args.argv)
    if replica is not None and replica.world_size > 1 and args.source != "fashion-mnist":
        from plasticd.distributed.replica import run_replica

        return run_replica(settings, replica)
    if args.source == "fashion-mnist":
        daemon.run_stream(settings, epochs=args.epochs, limit=args.limit)
    else:
        daemon.run_inbox(settings)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup(settings)
    from plasticd.service import daemon

    s = daemon.run_ingest(settings, args.folder, args.to, progress=not args.no_progress)
    acc = "-" if s.accuracy is None else f"{s.accuracy:.4f}"
    rate = s.files_processed / s.seconds if s.seconds > 0 else 0.0
    _print_answer(
        f"ingest {args.folder} -> {args.to}: this run processed {s.files_processed} files ({s.samples} samples, "
        f"{s.samples_labelled} labelled), failed {s.files_failed} (see {settings.paths.failed}), "
        f"prequential accuracy {acc} this run, {rate:.1f} files/s; the model has learned {s.samples_trained} samples in total"
    )
    if s.files_failed and not args.allow_failures:
        from plasticd.log import get_logger

        get_logger("ingest").error(
            "ingest.files_failed",
            files=s.files_failed,
            folder=str(settings.paths.failed),
            message="quarantined files (reasons in their .error.json sidecars): exit code 1 (--allow-failures: 0)",
        )
        return EXIT_ERROR
    return EXIT_OK


def _print_answer(text: str) -> None:
    """Print a command's answer; a reader that went away (``| head -1``) does not turn the work's outcome
    into a failure: the exit code still says how the work went."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _quiet_broken_stdout()


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from plasticd.service.status import is_running, read_status, render

    status = read_status(settings.paths.state)
    if status is None:
        raise PlasticdError(
            f"status: no status file in {settings.paths.state.absolute()} (has the daemon run here? "
            "relative paths are taken from paths.root, else the working directory)"
        )
    print(json.dumps(status, indent=2) if args.json else render(status))
    return EXIT_OK if is_running(status) else EXIT_NOT_RUNNING


def cmd_bench(args: argparse.Namespace) -> int:
    """``plasticd bench BENCHMARK``: resolve the settings, then run the benchmark its module registered."""
    settings = settings_from_args(args)
    _setup(settings)
    run: Callable[[Settings, argparse.Namespace], int] = args.run
    return run(settings, args)


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from plasticd.config import describe_settings

    print(describe_settings(settings))
    return EXIT_OK


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
        help="the daemon: learn from files dropped into the inbox (or from the Fashion-MNIST stream)",
        description="Run the learning daemon. --source inbox (default) watches paths.inbox: each sample file is "
        "claimed, predicted, learned from if labelled, and moved to paths.processed once a checkpoint covers it; "
        "invalid files go to paths.failed with a .error.json sidecar. Stops cleanly on the first SIGTERM/SIGINT "
        "(finishes the step, checkpoints, exits 0); a second one exits at once. "
        "--source fashion-mnist streams the Fashion-MNIST training set through the same pipeline, then reports "
        "the test-set accuracy and exits.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source", choices=["inbox", "fashion-mnist"], default="inbox", help="where samples come from (default inbox)"
    )
    p.add_argument("--epochs", type=positive_int, default=1, help="fashion-mnist: passes over the stream (default 1)")
    p.add_argument("--limit", type=positive_int, help="fashion-mnist: samples per pass (default: all 60000)")
    g = p.add_argument_group(
        "replicas",
        '--replicas N starts N replicas on this host that learn one model (README "Replicas"): torch\'s elastic '
        "agent in this process, exit 0 once every replica stopped cleanly after SIGTERM/SIGINT, 1 when one did not "
        "or the group failed more than --max-restarts times",
    )
    g.add_argument("--replicas", type=positive_int, metavar="N", help="replicas on this host (default: one process, no group)")
    g.add_argument("--nnodes", type=positive_int, default=1, help="hosts in the group, one launcher each (default 1)")
    g.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT", help="node 0's rendezvous address (needed past 1 host)")
    g.add_argument("--rdzv-id", default="", metavar="NAME", help="the group's name at the rendezvous (the same on every host)")
    g.add_argument("--max-restarts", type=int, default=3, help="restarts of the group after a replica died (default 3)")
    _settings_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "ingest",
        help="push a folder of sample files through the pipeline once, then exit",
        description="Claim every sample file in FOLDER, predict and learn from each exactly as the daemon does, "
        "move it to --to once a checkpoint covers it (invalid ones to paths.failed), and exit when the folder is "
        "drained. Shows a progress bar on a terminal and prints a summary of this run. Exits 1 when any file was "
        "quarantined (--allow-failures: 0). Refuses to run while a daemon owns the same model (paths.checkpoints).",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="FOLDER", help="folder of .json/.pt/.npz sample files")
    p.add_argument("--to", type=Path, default=Path("done"), metavar="DIR", help="where learned files go (default done/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 even when files were quarantined (default: exit 1 when any file failed)",
    )
    _settings_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "status",
        help="show what the daemon is doing (from its status file)",
        description="Read the status file the daemon keeps current in paths.state and show its state, samples "
        "seen and trained, running accuracy, queue depth, active connections and last checkpoint. "
        "Exit code 0 when the daemon runs, 3 when it does not, 1 when there is no readable status file.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the raw status JSON")
    _settings_args(p, runtime=False)
    p.set_defaults(func=cmd_status)

    add_bench_group(sub, settings_args=_settings_args, func=cmd_bench, epilog=_SETTINGS_HELP)
    add_report_command(sub, settings_args=_settings_args, settings_from_args=settings_from_args, epilog=_SETTINGS_HELP)
    add_tools(sub, settings_args=_settings_args, settings_from_args=settings_from_args, epilog=_SETTINGS_HELP)

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


def _quiet_broken_stdout() -> None:
    """stdout's reader went away (``plasticd status | head``): stop writing there, without a traceback at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


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
        _quiet_broken_stdout()
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
