"""Stop signals that arrive while the process is still starting (imports, model set-up: ~0.4 s or more).

Python's default SIGTERM action kills the process at once, which reads as a
crash to systemd (killed by signal) and skips the final checkpoint. So a
worker command installs ``install_early`` first thing: until the worker
installs its own handlers, a SIGTERM/SIGINT is only recorded, and the worker
(``take_early``) acts on it as soon as it exists: it recovers, saves nothing
new and exits 0. Commands that run no worker keep the default actions.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

WORKER_COMMANDS = ("run", "ingest")
_received: list[int] = []


def worker_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (without the program name) runs a worker: its first word that is not an option."""
    words = [arg for arg in argv if not arg.startswith("-")]
    return bool(words) and words[0] in WORKER_COMMANDS


def _record(signum: int, _frame: object) -> None:
    _received.append(signum)


def install_early(enabled: bool = True) -> None:
    """Record SIGTERM/SIGINT instead of dying, until the worker takes over (``enabled`` False: do nothing)."""
    if not enabled:
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _record)


def take_early() -> int | None:
    """The first stop signal recorded before the worker's handlers were installed, if any (then forgotten)."""
    first = _received[0] if _received else None
    _received.clear()
    return first
