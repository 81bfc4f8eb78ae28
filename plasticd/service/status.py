"""The status file the daemon keeps current, and ``plasticd status`` that reads it."""

from __future__ import annotations

import json
import os
import time
from enum import Enum
from pathlib import Path

from plasticd.errors import PlasticdError
from plasticd.fsutil import write_json_atomic

STATUS_FILE = "status.json"


class State(str, Enum):
    """Lifecycle of the worker, reported in the status file, logs and systemd's STATUS line."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    MAINTAINING = "maintaining"
    STOPPING = "stopping"
    STOPPED = "stopped"


def write_status(folder: Path, status: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Rewritten every daemon.status_seconds from the worker loop: atomic, but not fsynced (a status
    # file lost in a power cut is rewritten within a second of the restart).
    write_json_atomic(folder / STATUS_FILE, {**status, "updated_at": time.time(), "pid": os.getpid()}, durable=False)


def read_status(folder: Path) -> dict | None:
    """The status file, or None when there is none; PlasticdError when it cannot be read or is not a JSON object."""
    path = folder / STATUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlasticdError(f"cannot read the status file {path}: {exc}") from None
    try:
        status = json.loads(text)
    except ValueError:
        status = None
    if not isinstance(status, dict):
        what = "empty" if not text.strip() else "not a JSON object"
        raise PlasticdError(
            f"the status file {path} is {what} (the daemon rewrites it atomically, so another program wrote it, "
            "or the disk is damaged); a running daemon replaces it within daemon.status_seconds"
        )
    return status


def is_running(status: dict) -> bool:
    """Whether the daemon that wrote ``status`` is alive and not stopped (``plasticd status``'s exit code)."""
    try:
        pid = int(status.get("pid", -1))
    except (TypeError, ValueError):
        return False
    return pid > 0 and pid_alive(pid) and status.get("state") != State.STOPPED.value


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(status: dict, now: float | None = None) -> str:
    """Human-readable lines for ``plasticd status``."""
    now = time.time() if now is None else now
    alive = is_running(status)
    state = status.get("state", "?") if alive else f"not running (last state: {status.get('state', '?')})"

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    ckpt = status.get("last_checkpoint") or {}
    lines = [
        f"state:               {state}",
        f"pid:                 {status.get('pid')}   updated {now - status.get('updated_at', now):.1f}s ago",
        f"samples seen:        {status.get('samples_seen', 0)}",
        f"samples trained:     {status.get('samples_trained', 0)}",
        f"accuracy:            {pct(status.get('accuracy'))}   "
        f"last {status.get('window', '-')}: {pct(status.get('window_accuracy'))}",
        f"queue depth:         {status.get('queue_depth', 0)}",
        f"files:               processed {status.get('files_processed', 0)}, failed {status.get('files_failed', 0)}",
        f"network:             {status.get('neurons')} neurons, {status.get('active_connections')} active connections",
        f"last checkpoint:     {ckpt.get('path', 'none')}  {ckpt.get('created', '')}",
    ]
    return "\n".join(lines)
