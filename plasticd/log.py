"""structlog set-up: JSON lines for services and pipes, readable lines on a TTY.

Logs are events, not prose: ``log.info("sample.processed", file=..., loss=...)``.
Everything goes to stderr (journald captures it under systemd), so stdout stays
free for command output such as benchmark tables and ``plasticd status``.

Three promises for operators who pipe the log into ``jq``:

* with JSON on, every line on stderr is a JSON event: Python warnings
  (``warnings.warn``, e.g. torch's) and the standard ``logging`` records of
  libraries (APScheduler's missed runs, watchdog) go through structlog too, as
  ``python.warning`` and ``library.log`` events (libraries log from WARNING up);
  ``emergency_line`` formats the few lines written without the logger (the
  second-signal exit, fatal errors);
* a closed stderr (``| head``, a dead ``jq``) never stops the process: the
  terminal sink is dropped at the first EPIPE and, when ``log.file`` is set, the
  file says so once (``log.stream_closed``) and keeps every event;
* ``log.file`` always gets JSON lines; the terminal keeps its own format
  (``auto``: readable on a TTY, JSON otherwise).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import structlog

LogFormat = Literal["auto", "json", "console"]

_format: str | None = None  # the terminal's resolved format once configured ("json" or "console")


class _Sink:
    """The structlog logger: writes each event's terminal line and file line; survives a closed stream."""

    def __init__(self, stream: IO[str], file: IO[str] | None) -> None:
        self.stream: IO[str] | None = stream
        self.file = file
        self._lock = threading.Lock()

    def msg(self, stream_line: str | None = None, file_line: str | None = None) -> None:
        with self._lock:
            if self.stream is not None and stream_line is not None:
                try:
                    live = _live[0] if _live else None
                    if live is not None:
                        live.clear()  # the live line (status, a progress bar) gives way to the event, then comes back
                    self.stream.write(stream_line + "\n")
                    self.stream.flush()
                    if live is not None:
                        live.draw()
                except (OSError, ValueError) as exc:  # EPIPE, EIO after a hang-up, or a closed file object
                    self._stream_lost(exc)
            if self.file is not None and file_line is not None:
                self.file.write(file_line + "\n")

    def _stream_lost(self, exc: BaseException) -> None:
        """Drop the terminal sink for good; tell the log file once (there is nowhere else to tell)."""
        self.stream = None
        if self.file is not None:
            event = {"event": "log.stream_closed", "level": "warning", "error": str(exc) or type(exc).__name__}
            event["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            event["note"] = "stderr is gone; events go on to log.file only"
            self.file.write(json.dumps(event) + "\n")

    def replace_file(self, file: IO[str]) -> None:
        """Write to ``file`` from now on (``reopen``); the old one is closed."""
        with self._lock:
            old, self.file = self.file, file
        if old is not None:
            old.close()

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


class LiveLine(Protocol):
    """The one line a terminal keeps at its bottom (the daemon's status, ingest's progress bar)."""

    def clear(self) -> None: ...

    def draw(self) -> None: ...


_live: list[LiveLine] = []  # the live line on the terminal, if any (set_live)


def set_live(line: LiveLine | None) -> None:
    """Keep ``line`` at the terminal's bottom: every event line clears it first and draws it again after."""
    _live[:] = [] if line is None else [line]


def live() -> LiveLine | None:
    """The live line kept at the terminal's bottom now, if any."""
    return _live[0] if _live else None


_terminal: list[IO[str]] = []  # the stream when it is a terminal getting console lines (configure)


def status_line() -> StatusLine | None:
    """A live status line for the terminal, when the log goes to one in the console format (else None)."""
    return StatusLine(_terminal[0]) if _terminal else None


class StatusLine:
    """The daemon's one-line live status on a terminal (console format only): redrawn in place, never scrolled."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.text = ""

    def show(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.clear()
            self.text = text
            self.draw()

    def clear(self) -> None:
        if self.text:
            self.stream.write("\r\x1b[K")

    def draw(self) -> None:
        if self.text:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + (self.text if len(self.text) <= width else self.text[: width - 1] + "…"))
            self.stream.flush()


# console format: these first, in this order; then the others as the event gave them (never sorted, never wrapped)
_FIRST_KEYS = ("file", "reason", "error", "path", "seq", "samples")
_MAX_VALUE = 120  # a longer value (a path list, a message) is cut on the terminal; log.file keeps it whole


class _HumanRenderer:
    """One readable line per event for a person at a terminal: ``12:03:04 warn  sample.quarantined  file=a.json
    reason=bad_json …``; no component, no sorted keys, long values cut, an ``exception`` name kept on the line."""

    LEVELS = {"debug": "debug", "info": "info ", "warning": "warn ", "error": "ERROR", "critical": "CRIT "}

    def __call__(self, _logger: Any, _name: str, event_dict: dict) -> str:
        d = dict(event_dict)
        stamp = str(d.pop("timestamp", ""))[11:19]
        level = self.LEVELS.get(str(d.pop("level", "")), "     ")
        event = str(d.pop("event", ""))
        d.pop("component", None)
        d.pop("exc_info", None)  # a traceback stays in log.file (JSON); the terminal gets the one line
        keys = [k for k in _FIRST_KEYS if k in d] + [k for k in d if k not in _FIRST_KEYS]
        fields = "  ".join(f"{k}={_short(d[k])}" for k in keys)
        return f"{stamp} {level} {event:<24} {fields}".rstrip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and (" " in value or not value):
        text = json.dumps(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


class _Render:
    """Last processor: one line per sink (the terminal's format; JSON for the file), handed to ``_Sink.msg``."""

    def __init__(self, console: bool, file: bool) -> None:
        self.json = structlog.processors.JSONRenderer()
        self.console = _HumanRenderer() if console else None
        self.file = file

    def __call__(self, logger: Any, name: str, event_dict: dict) -> dict:
        as_json = self.json(logger, name, dict(event_dict)) if (self.console is None or self.file) else None
        stream_line = self.console(logger, name, dict(event_dict)) if self.console is not None else as_json
        return {"stream_line": stream_line, "file_line": as_json if self.file else None}


class _ToStructlog(logging.Handler):
    """Standard ``logging`` records (libraries) as ``library.log`` events through structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            logger = structlog.get_logger().bind(component=record.name)
            if record.name == "py.warnings":
                logger.warning("python.warning", message=message.strip())
                return
            fields: dict[str, Any] = {"logger": record.name, "message": message}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            method = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error"}.get(record.levelname, "critical")
            getattr(logger, method)("library.log", **fields)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure(
    level: str = "info",
    fmt: LogFormat = "auto",
    file: Path | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Configure structlog (and route ``logging``/``warnings`` into it) once per process.

    ``fmt="auto"`` renders for people when ``stream`` is a TTY and as JSON
    lines otherwise. ``file``, when given, receives the same events as JSON
    lines (appended); the terminal keeps its own format.
    """
    global _format
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    _format = fmt
    _terminal[:] = [stream] if fmt == "console" and getattr(stream, "isatty", lambda: False)() else []
    _live.clear()
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json" or file is not None:
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(_Render(console=fmt == "console", file=file is not None))
    handle = None
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    sink = _Sink(stream, handle)
    _reopen_target[:] = [(sink, file)] if file is not None else []
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: sink,
        cache_logger_on_first_use=False,
    )
    _route_libraries(level)


def _route_libraries(level: str) -> None:
    """Python warnings and libraries' ``logging`` records become structlog events (WARNING and up)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    logging.captureWarnings(True)
    for name in OWN_HANDLERS:  # torch's loggers print their own lines ("W1202 ... api.py:753] ..."): through ours instead
        logger = logging.getLogger(name)
        for own in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]:
            logger.removeHandler(own)
        logger.propagate = True


OWN_HANDLERS = ("torch", "torch.distributed")  # libraries' loggers that write to stderr themselves


_reopen_target: list[tuple[_Sink, Path]] = []  # the sink writing log.file, and its path (for ``reopen``)


def reopen() -> Path | None:
    """Reopen ``log.file`` by its name (SIGHUP after logrotate moved it away); returns it, or None without one.

    The old file is closed; what was written to it stays there.
    """
    if not _reopen_target:
        return None
    sink, path = _reopen_target[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    sink.replace_file(open(path, "a", buffering=1, encoding="utf-8"))  # noqa: SIM115 - closed by the next reopen
    return path


def configured() -> bool:
    """Whether ``configure`` has run in this process."""
    return _format is not None


def is_json() -> bool:
    """Whether the terminal gets JSON lines (after ``configure``)."""
    return _format == "json"


def emergency_line(event: str, message: str, level: str = "error", json_lines: bool | None = None, **fields: Any) -> bytes:
    """One line for stderr written without the logger (a signal handler, a fatal error): JSON when the log is JSON.

    Safe in a signal handler: it takes no lock (the interrupted code may hold the logger's).
    """
    as_json = is_json() if json_lines is None else json_lines
    if as_json:
        record = {"event": event, "level": level, "message": f"plasticd: {message}", **fields}
        record["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return (json.dumps(record, default=str) + "\n").encode()
    return f"plasticd: {message}\n".encode()


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound with the component name (``component=name`` on every event)."""
    return structlog.get_logger().bind(component=name)
