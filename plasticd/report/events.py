"""The JSON-lines log (``log.file``), read for the few events a report draws.

A log can be as long as the journal (``sample.processed`` is logged per
sample at info level in inbox mode), so it is streamed in blocks like the
journal, and a line is parsed only when a cheap byte search finds the name of
an event the report wants. What is kept is small: one entry per maintenance
event, checkpoint or progress line.

Events do not carry the journal's ``seq``; each carries what it knows:
``samples`` (samples seen: progress, checkpoint.saved, stream.finished),
``trained`` (labelled samples learned: rewiring, drift) or only its timestamp
(growth, merge). ``position.py`` turns these into sample numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from plasticd.report.lines import blocks, parse_lines

MARKED = ("plasticity.rewired", "growth.applied", "merge.applied", "drift.detected", "drift.adapted", "checkpoint.saved")
WANTED = (*MARKED, "daemon.ready", "daemon.progress", "daemon.stopped", "stream.finished")
_WANTED_LINE = re.compile(rb'"event": ?"(' + b"|".join(re.escape(n.encode()) for n in WANTED) + rb')"')


@dataclass(frozen=True)
class LogEvent:
    name: str
    t: float  # POSIX seconds (from the ISO timestamp)
    samples: int | None = None  # samples seen when it was logged, if the event says
    trained: int | None = None  # labelled samples learned, if the event says
    neurons: int | None = None  # network size after the event, if the event says
    active: int | None = None  # active connections after the event, if the event says
    rate: float | None = None  # daemon.progress: samples/s since the previous progress line


@dataclass
class LogEvents:
    path: Path | None
    events: list[LogEvent] = field(default_factory=list)
    lines_skipped: int = 0  # wanted-looking lines that did not parse (torn, console format)

    def named(self, name: str) -> list[LogEvent]:
        return [e for e in self.events if e.name == name]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _event(raw: dict) -> LogEvent | None:
    name, stamp = raw.get("event"), raw.get("timestamp")
    if name not in WANTED or not isinstance(stamp, str):
        return None
    try:
        t = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
    samples = _int(raw.get("samples"))
    neurons = _int(raw.get("neurons_after", raw.get("neurons")))
    active = _int(raw.get("active_after", raw.get("active", raw.get("active_connections"))))
    rate = raw.get("samples_per_s")
    return LogEvent(
        name=name,
        t=t,
        samples=samples if name != "daemon.stopped" else _int(raw.get("samples")),
        trained=_int(raw.get("trained")) if name in ("plasticity.rewired", "drift.detected", "drift.adapted") else None,
        neurons=neurons if name in ("daemon.ready", "growth.applied", "merge.applied") else None,
        active=active if name in ("daemon.ready", "plasticity.rewired", "growth.applied", "stream.finished") else None,
        rate=float(rate) if isinstance(rate, int | float) and name == "daemon.progress" else None,
    )


def read_log(path: Path | None) -> LogEvents:
    """The wanted events of the log at ``path``, in file order; an absent path gives none."""
    out = LogEvents(path)
    if path is None or not path.is_file():
        return out
    for block in blocks(path):
        lines = [line for line in block.split(b"\n") if _WANTED_LINE.search(line)]
        values, bad = parse_lines(lines)
        out.lines_skipped += bad
        out.events += [e for v in values if isinstance(v, dict) and (e := _event(v)) is not None]
    return out
