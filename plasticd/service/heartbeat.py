"""The worker's signs of life: its state, the status file, systemd's WATCHDOG/STATUS, progress events.

All of it is reporting: nothing here changes the model or the files. A beat
is due every ``daemon.status_seconds``; while samples flow, every
``PROGRESS_EVERY_S`` one also logs ``daemon.progress`` with the rate since
the last one.
"""

from __future__ import annotations

import time
from typing import Literal

from plasticd import log
from plasticd.config import Settings
from plasticd.learn.engine import Engine
from plasticd.learn.prequential import MetricsSnapshot
from plasticd.log import StatusLine, get_logger
from plasticd.service.checkpoint_policy import Checkpointing
from plasticd.service.counters import Counters
from plasticd.service.feeds import Feed
from plasticd.service.notify import Notifier
from plasticd.service.status import State, write_status

PROGRESS_EVERY_S = 5.0  # period of daemon.progress events while samples flow


class Heartbeat:
    """Reports the worker: it holds the worker's ``State`` and tells the status file, systemd and the log."""

    def __init__(
        self, settings: Settings, engine: Engine, feed: Feed, notifier: Notifier, counters: Counters, checkpoints: Checkpointing
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.feed = feed
        self.notifier = notifier
        self.counters = counters
        self.checkpoints = checkpoints
        self.log = get_logger("worker")
        self.state = State.STARTING
        self._status_failing = False
        self._live: StatusLine | Literal[False] | None = None  # terminal status line (False: none; None: not looked yet)
        self._next_beat = 0.0
        self._next_progress = time.monotonic() + PROGRESS_EVERY_S
        self._rate_mark = (time.monotonic(), 0)
        watchdog = notifier.watchdog_seconds()
        # at least twice per systemd watchdog period (WatchdogSec=), whatever daemon.status_seconds says
        self.period = settings.daemon.status_seconds if watchdog is None else min(settings.daemon.status_seconds, watchdog / 2)
        self.ready_facts: dict = {}  # what daemon.ready says this process works on (set by the assembly)
        self.at_ready: MetricsSnapshot | None = None  # the model as this run found it: rates and run summaries count from here
        self.last_tick = time.monotonic()  # when the loop last turned (``tick``); the metrics' /healthz reads it
        self.published: dict = {}  # the last status written, for readers on other threads (the metrics exporter)
        self.status_facts: dict = {}  # added to every status file (replicas: rank, world size, last sync)
        self.stopped_facts: dict = {}  # added to daemon.stopped (replicas: the group's totals and this replica's own)

    def set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.log.debug("daemon.state", state=state.value)

    def ready(self, mode: str) -> None:
        """The worker has recovered and starts its loop: READY=1 for systemd, ``daemon.ready`` for the log."""
        self.set_state(State.IDLE)
        self.at_ready = self.engine.snapshot()
        self.write_status()  # 'plasticd status' works as soon as systemd reports the service started
        self._rate_mark = (time.monotonic(), self.at_ready.samples_seen)  # not 0: a resumed model has seen samples
        self.notifier.ready(self.status_line())
        self.log.info(
            "daemon.ready", mode=mode, backlog=self.feed.backlog, new_model=self.checkpoints.last is None,
            samples_seen=self.at_ready.samples_seen, **self.ready_facts, **self.model_facts(),
        )  # fmt: skip

    def stopping(self) -> None:
        self.set_state(State.STOPPING)
        self.notifier.stopping(self.status_line())

    def stopped(self) -> None:
        self.set_state(State.STOPPED)
        self.write_status()
        if isinstance(self._live, StatusLine) and log.live() is self._live:
            self._live.clear()
            log.set_live(None)  # the terminal's last lines are events, the shell's prompt comes next
        self.log.info("daemon.stopped", **(self.counters.as_dict() | self.stopped_facts))

    def tick(self) -> None:
        """A beat, when ``period`` (``daemon.status_seconds``, or half the systemd watchdog period if shorter)
        has passed since the last one."""
        self.last_tick = time.monotonic()
        if time.monotonic() >= self._next_beat:
            self.beat()

    def beat(self) -> None:
        """The status file, WATCHDOG=1 and STATUS for systemd; ``daemon.progress`` when due and not idle."""
        now = time.monotonic()
        self._next_beat = now + self.period
        self.write_status()
        self.notifier.watchdog()
        self.notifier.status(self.status_line())
        self._show_live()
        if now >= self._next_progress and self.state != State.IDLE:
            self._next_progress = now + PROGRESS_EVERY_S
            self._progress(now)

    def _progress(self, now: float) -> None:
        m = self.engine.snapshot()
        t0, n0 = self._rate_mark
        self._rate_mark = (now, m.samples_seen)
        self.log.info(
            "daemon.progress",
            samples=m.samples_seen,
            accuracy=None if m.accuracy is None else round(m.accuracy, 4),
            window_accuracy=None if m.window_accuracy is None else round(m.window_accuracy, 4),
            loss=None if m.loss is None else round(m.loss, 4),
            samples_per_s=round((m.samples_seen - n0) / max(now - t0, 1e-9), 1),
            queue=self.feed.backlog,
            files_processed=self.counters.files_processed,
            files_failed=self.counters.files_failed,
        )

    def model_facts(self) -> dict:
        return {
            "neurons": self.engine.cfg.neurons,
            "active_connections": self.engine.active_connections,
            "device": str(self.engine.device),
        }

    def _show_live(self) -> None:
        """On a terminal (console log), the status as one line redrawn in place; a progress bar, when one owns the
        terminal's bottom line (ingest), is left alone."""
        if self._live is None:
            line = log.status_line()
            self._live = line if line is not None else False
            if line is not None and log.live() is None:
                log.set_live(line)
        if isinstance(self._live, StatusLine) and log.live() is self._live:
            m = self.engine.snapshot()
            acc = "-" if m.window_accuracy is None else f"{100 * m.window_accuracy:.1f}%"
            last = self.checkpoints.last
            self._live.show(
                f"● {self.state.value}  {m.samples_seen:,} samples  accuracy {acc}  queue {self.feed.backlog}  "
                f"files {self.counters.files_processed:,} ok / {self.counters.files_failed:,} failed  "
                f"checkpoint {'-' if last is None else last.seq}"
            )

    def status_line(self) -> str:
        m = self.engine.snapshot()
        acc = "-" if m.window_accuracy is None else f"{100 * m.window_accuracy:.1f}%"
        return f"{self.state.value}: {m.samples_seen} samples, accuracy {acc}, queue {self.feed.backlog}"

    def write_status(self) -> None:
        """The status file; a failure is logged once (until it works again), never fatal: it is a convenience."""
        try:
            self._write_status_file()
        except OSError as exc:
            if not self._status_failing:
                self.log.warning("status.write_failed", folder=str(self.settings.paths.state), error=str(exc))
            self._status_failing = True
            return
        self._status_failing = False

    def _write_status_file(self) -> None:
        m = self.engine.snapshot()
        ckpt = self.checkpoints.last
        self.published = status = {
            "state": self.state.value,
            **m.as_dict(),
            **self.counters.as_dict(),
            "queue_depth": self.feed.backlog,
            "pending_files": self.checkpoints.waiting,
            **self.model_facts(),
            "last_checkpoint": None if ckpt is None else {"path": str(ckpt.json_path), "seq": ckpt.seq, "created": ckpt.created},
            "inbox": str(self.settings.paths.inbox),
            **self.status_facts,
        }  # replaced whole, never changed in place: another thread may hold the previous one
        write_status(self.settings.paths.state, status)
