"""The daemon's own commands: ``run``, ``ingest``, ``status`` and ``config``, registered as every command is.

``register`` adds their parsers (``commands.add_commands`` gives them the
settings options); ``setup`` is what every command that learns does first
(logging, the device check, torch's threads), for the benchmarks too.
Exit codes: 0 success, 1 runtime error, 2 usage or configuration error,
3 (``status``) no daemon runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plasticd.commands import SubParsers, positive_int
from plasticd.config import Settings
from plasticd.errors import ConfigError, PlasticdError
from plasticd.threads import set_threads

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_NOT_RUNNING = 3  # plasticd status: no daemon runs (LSB's "program is not running")


def register(subparsers: SubParsers) -> list[argparse.ArgumentParser]:
    out: list[argparse.ArgumentParser] = []
    p = subparsers.add_parser(
        "run",
        help="the daemon: learn from files dropped into the inbox (or from the Fashion-MNIST stream)",
        description="Run the learning daemon. --source inbox (default) watches paths.inbox: each sample file is "
        "claimed, predicted, learned from if labelled, and moved to paths.processed once a checkpoint covers it; "
        "invalid files go to paths.failed with a .error.json sidecar. Stops cleanly on the first SIGTERM/SIGINT "
        "(finishes the step, checkpoints, exits 0); a second one exits at once. "
        "--source fashion-mnist streams the Fashion-MNIST training set through the same pipeline, then reports "
        "the test-set accuracy and exits.",
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
    p.set_defaults(run=cmd_run)
    out.append(p)

    p = subparsers.add_parser(
        "ingest",
        help="push a folder of sample files through the pipeline once, then exit",
        description="Claim every sample file in FOLDER, predict and learn from each exactly as the daemon does, "
        "move it to --to once a checkpoint covers it (invalid ones to paths.failed), and exit when the folder is "
        "drained. Shows a progress bar on a terminal and prints a summary of this run. Exits 1 when any file was "
        "quarantined (--allow-failures: 0). Refuses to run while a daemon owns the same model (paths.checkpoints).",
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
    p.set_defaults(run=cmd_ingest)
    out.append(p)

    p = subparsers.add_parser(
        "status",
        help="show what the daemon is doing (from its status file)",
        description="Read the status file the daemon keeps current in paths.state and show its state, samples "
        "seen and trained, running accuracy, queue depth, active connections and last checkpoint. "
        "Exit code 0 when the daemon runs, 3 when it does not, 1 when there is no readable status file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the raw status JSON")
    p.set_defaults(run=cmd_status, settings_runtime=False)  # no model: no --device/--seed/--threads
    out.append(p)

    p = subparsers.add_parser(
        "config",
        help="print the effective settings with their meaning",
        description="Print every setting as TOML with its value after file, environment and flags, and what it means.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=cmd_config)
    out.append(p)
    return out


def setup(settings: Settings) -> None:
    """Logging (to log.file too), the device check, torch's threads: what every command that learns needs first."""
    import torch

    from plasticd import log

    log.configure(level=settings.log.level, fmt=settings.log.format, file=settings.log.file)
    if settings.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "runtime.device is cuda but torch sees no CUDA device (no GPU, no driver, or a CPU-only torch); "
            "use --device auto (CUDA when present) or --device cpu"
        )
    set_threads(settings.runtime.threads)


# ---------------------------------------------------------------- commands


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    setup(settings)
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


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    setup(settings)
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
        quiet_broken_stdout()


def quiet_broken_stdout() -> None:
    """stdout's reader went away (``plasticd status | head``): stop writing there, without a traceback at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.service.status import is_running, read_status, render

    status = read_status(settings.paths.state)
    if status is None:
        raise PlasticdError(
            f"status: no status file in {settings.paths.state.absolute()} (has the daemon run here? "
            "relative paths are taken from paths.root, else the working directory)"
        )
    print(json.dumps(status, indent=2) if args.json else render(status))
    return EXIT_OK if is_running(status) else EXIT_NOT_RUNNING


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.config_text import describe_settings

    print(describe_settings(settings))
    return EXIT_OK
