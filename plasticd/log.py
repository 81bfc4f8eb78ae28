"""structlog set-up: JSON lines for services and pipes, readable lines on a TTY.

Logs are events, not prose: ``log.info("sample.processed", file=..., loss=...)``.
Everything goes to stderr (journald captures it under systemd), so stdout stays
free for command output such as benchmark tables and ``plasticd status``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


class _Tee:
    """A file-like object that writes each log line to several streams."""

    def __init__(self, *streams: IO[str]) -> None:
        self._streams = streams

    def write(self, text: str) -> None:
        for stream in self._streams:
            stream.write(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


def configure(
    level: str = "info",
    fmt: LogFormat = "auto",
    file: Path | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Configure structlog once per process.

    ``fmt="auto"`` renders for people when ``stream`` is a TTY and as JSON
    lines otherwise. ``file``, when given, receives the same events as JSON
    lines (appended); the console then shows JSON lines too.
    """
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    if file is not None:
        fmt = "json"  # one renderer per process: with a log file both sinks get JSON lines
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    out: IO[str] = stream
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        out = _Tee(stream, handle)  # type: ignore[assignment]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound with the component name (``component=name`` on every event)."""
    return structlog.get_logger().bind(component=name)
