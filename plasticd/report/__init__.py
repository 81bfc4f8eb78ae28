"""``plasticd report``: how the model learned, drawn from the journal, the log and the checkpoints.

``register`` adds the sub-command to the command line's parser, the one way
every command is registered (``plasticd/commands.py``). The work is in ``page.render``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from plasticd.commands import SubParsers
from plasticd.config import Settings
from plasticd.errors import PlasticdError, UsageError

HELP = "render an HTML page with plots of accuracy, loss, events, network size, throughput and latency"
DESCRIPTION = (
    "Read the predictions journal (paths.state/predictions.jsonl and its rotated files), the JSON-lines log "
    "(log.file, when set) and the checkpoints (paths.checkpoints), and write DIR/index.html with one PNG per "
    "figure: prequential and window accuracy over samples, loss, drift/rewiring/growth/merge events marked on "
    "the sample axis, neurons and active connections, throughput over time and latency percentiles. The journal "
    "is streamed into fixed bins, so a journal of millions of records takes seconds and little memory. Missing "
    "sources are named on the page. Read-only: safe while the daemon runs."
)


def register(subparsers: SubParsers) -> list[argparse.ArgumentParser]:
    """Add ``report`` to ``subparsers`` (``commands.add_commands`` adds the settings options)."""
    p = subparsers.add_parser("report", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=Path("report"), metavar="DIR", help="folder for index.html and the PNGs (default report/)"
    )
    p.add_argument("--journal", type=Path, metavar="FILE", help="predictions journal (default paths.state/predictions.jsonl)")
    p.add_argument("--log", type=Path, metavar="FILE", help="JSON-lines log (default log.file)")
    p.add_argument("--checkpoints", type=Path, metavar="DIR", help="checkpoint folder (default paths.checkpoints)")
    p.add_argument(
        "--window", type=_positive, metavar="N", help="samples in the window curves, > 0 (default: a twentieth of the run)"
    )
    p.set_defaults(run=run)
    return [p]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (a window holds at least one sample)")
    return value


def _check_sources(args: argparse.Namespace, journal: Path) -> None:
    """Caller mistakes (exit 2): a source named on the command line that is not there, ``--out`` onto a file;
    no journal at all (exit 1): there is nothing to draw."""
    from plasticd.report.journal import journal_files

    for flag, path, folder in (
        ("--journal", args.journal, False),
        ("--log", args.log, False),
        ("--checkpoints", args.checkpoints, True),
    ):
        if path is not None and not (path.is_dir() if folder else path.is_file()):
            what = "does not exist" if not path.exists() else ("is not a folder" if folder else "is not a file")
            raise UsageError(f"report: {flag} {path} {what}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"report: --out {args.out} is a file, not a folder; name a folder for index.html and the PNGs")
    if not journal_files(journal):
        raise PlasticdError(
            f"report: no predictions journal {journal.absolute()} (has the daemon run with these settings? "
            "--journal FILE names another)"
        )


def run(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.report.page import render

    started = time.monotonic()
    journal = args.journal or settings.paths.state / "predictions.jsonl"
    _check_sources(args, journal)
    rendered = render(
        journal=journal,
        log_file=args.log or settings.log.file,
        checkpoints=args.checkpoints or settings.paths.checkpoints,
        out=args.out,
        window=args.window,
    )
    for note in rendered.missing:
        print(f"plasticd report: {note}", file=sys.stderr)
    print(
        f"report: {rendered.page} ({len(rendered.figures)} figures, {rendered.curves.samples:,} records, "
        f"{time.monotonic() - started:.1f}s)"
    )
    return 0
