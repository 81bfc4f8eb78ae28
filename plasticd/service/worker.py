"""The worker: the one thread that owns the model, and its service loop (shaped like huey's ``loop()``).

``plasticd run`` loops until a signal; ``plasticd ingest`` and the stream demo
are the same loop in burst mode, which ends when the feed is drained.
Checkpoint bookkeeping lives in ``checkpointing``, the signs of life in
``heartbeat``; the feed answers one protocol (``feeds.Feed``), whatever it is.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from plasticd import log
from plasticd.config import LOOP_WAIT_SECONDS, Settings
from plasticd.learn.engine import Engine
from plasticd.learn.reports import Report, log_report
from plasticd.log import emergency_line, get_logger
from plasticd.service import signals
from plasticd.service.checkpoint_policy import Checkpointing
from plasticd.service.checkpoint_store import CheckpointInfo, CheckpointStore
from plasticd.service.claims import Session, WorkArea
from plasticd.service.counters import Counters
from plasticd.service.feeds import Feed, Item
from plasticd.service.heartbeat import Heartbeat
from plasticd.service.messages import Checkpoint, Grow, Merge, Message, Rescan, Rewire, Wake
from plasticd.service.notify import Notifier
from plasticd.service.pipeline import Outcome, Pipeline
from plasticd.service.predictions import PredictionWriter
from plasticd.service.recovery import recover
from plasticd.service.scheduler import Activity
from plasticd.service.status import State

WAIT_S = LOOP_WAIT_SECONDS  # longest block in the loop: bounds how late a stop request is seen (0.2 s)


@dataclass
class Worker:
    """The only thread that touches the model: it owns the engine, the feed, the pipeline and their bookkeeping.

    The loop::

        run():  install signal handlers; recover; READY
                while not stopping: run_once()
                finally: final checkpoint, STOPPING, STOPPED
        run_once():  handle posted messages (rescan, rewire, grow, merge, checkpoint)
                     take up to train.max_batch samples' worth of items and process them,
                     or, with nothing to do, wait for a message (burst mode: stop when drained)
                     checkpoint tick (samples due, moves due, too many failures)
                     heartbeat (status file, WATCHDOG=1, progress)

    Other threads only ``post`` messages; ``on_batch`` callables see each
    processed micro-batch's ``Outcome`` (a progress bar, a test's probe).

    Exactly once: a claimed file is trained on once across crashes because
    its claim waits in the work area until a durable checkpoint lists it as
    covered, and only then is it moved on. At start, ``recover`` loads the
    newest valid checkpoint, moves on what it covers and requeues every other
    claim, which the checkpoint's model has not learned.
    """

    settings: Settings
    engine: Engine
    store: CheckpointStore
    feed: Feed
    pipeline: Pipeline
    predictions: PredictionWriter
    notifier: Notifier
    work: WorkArea | None = None  # None for the in-memory stream
    session: Session | None = None  # this run's claims
    mode: Literal["daemon", "burst"] = "daemon"
    activity: Activity = field(default_factory=Activity)
    counters: Counters = field(default_factory=Counters)
    on_batch: list[Callable[[Outcome], None]] = field(default_factory=list)  # called after each processed micro-batch
    on_report: list[Callable[[Report], None]] = field(default_factory=list)  # called for each maintenance report, once logged
    on_turn: list[Callable[[], None]] = field(default_factory=list)  # called at the end of each turn (the live snapshot)
    wait_seconds: float = WAIT_S  # longest idle wait for a message (replicas: 0 while a peer is busy)
    adopts: Callable[[Session], bool] = lambda session: True  # recovery takes this earlier session over (replicas: rank 0 only)
    messages: queue.SimpleQueue[Message] = field(default_factory=queue.SimpleQueue)  # what other threads post (post)
    held: str = ""  # why this process saves no checkpoint of its own (a replica: rank 0 saves at the group's barriers)

    def __post_init__(self) -> None:
        self.log = get_logger("worker")
        self.checkpoints = Checkpointing(
            self.settings,
            self.engine,
            self.store,
            self.feed,
            self.predictions,
            self.activity,
            self.counters,
            self.work,
            self.session,
            quarantine=self.pipeline.quarantine,
            held=self.held,
        )
        self.heartbeat = Heartbeat(self.settings, self.engine, self.feed, self.notifier, self.counters, self.checkpoints)
        self.stopping = False  # the loop ends before its next turn
        self.stop_signal: int | None = None  # the signal that asked for the stop, if one did
        self.reopen_requested = False  # SIGHUP: reopen log.file (logrotate) at the next safe point
        self.batch_seconds = 0.0  # time the last micro-batch spent in the pipeline (on_batch hooks read it)

    # --------------------------------------------------------------- lifecycle

    def post(self, message: Message) -> None:
        """Thread-safe: the only way other threads affect the worker."""
        self.messages.put(message)

    def request_stop(self, signum: int, _frame: object = None) -> None:
        """Signal handler: first signal asks the loop to stop after the current step; a second exits now.

        It only sets a flag (and, the second time, writes with ``os.write``): the
        interrupted code may hold the logger's lock, so logging here could deadlock.
        """
        if self.stop_signal is not None:
            os.write(2, emergency_line("daemon.exit_now", f"second {signal.Signals(signum).name}, exiting now", "warning"))
            os._exit(1)
        self.stop_signal = signum
        self.stopping = True
        self.notifier.send("STOPPING=1")  # at once: systemd knows the stop is under way (one datagram, no lock taken)

    def request_reopen(self, _signum: int, _frame: object = None) -> None:
        """SIGHUP: reopen ``log.file`` (after logrotate moved it) at the loop's next safe point."""
        self.reopen_requested = True

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop, SIGHUP reopens the log file; a signal that came during start-up,
        before the worker existed (``signals.early``), is acted on now."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reopen)
        early = signals.take_early()
        if early is not None:
            self.request_stop(early)

    def run(self) -> int:
        """The service loop; returns the exit code (0), or raises what stopped it.

        The final checkpoint runs whatever ends the loop; after a clean end its
        checks raise CheckpointError (exit code 1) if it left work unsaved or
        unmoved, after an error that error is the one reported.
        """
        self.install_signal_handlers()
        self.recover()
        clean = False
        try:
            self.feed.scan()
            self.heartbeat.ready(self.mode)
            self._end_turn()  # recovery was a turn too: the live snapshot of the resumed model is there from READY
            while not self.stopping:
                self.run_once()
            clean = True
        finally:
            self.shutdown(check=clean)
        return 0

    def run_once(self) -> None:
        """One turn of the loop: messages, one micro-batch or an idle wait, checkpoint tick, heartbeat."""
        self._reopen_log()
        self._handle_messages()
        items = self.feed.take(self.settings.train.max_batch)
        if items:
            self.process(items)
        elif self.mode == "burst" and self.feed.drained():
            self.stopping = True
            return
        else:
            self.heartbeat.set_state(State.IDLE)
            self._wait()
        self.checkpoints.tick()
        self.heartbeat.tick()
        self._end_turn()

    def recover(self) -> None:
        """Load the newest valid checkpoint; move on the files it covers; requeue the claims it does not
        (``recovery.recover``). Raises CheckpointError when checkpoints exist but none is valid."""
        recover(
            store=self.store, engine=self.engine, counters=self.counters, checkpoints=self.checkpoints, feed=self.feed,
            work=self.work, current=self.session, adopts=self.adopts, quarantine=self.pipeline.quarantine, log=self.log,
        )  # fmt: skip

    def shutdown(self, check: bool = True) -> None:
        """The final checkpoint; with ``check``, CheckpointError (exit code 1) when it left work unsaved or unmoved."""
        if self.stop_signal is not None:
            self.log.info("daemon.stop_requested", signal=signal.Signals(self.stop_signal).name)
        self.heartbeat.stopping()
        try:
            self.checkpoints.checkpoint("shutdown")
        finally:
            self.heartbeat.stopped()
        if check:
            self.checkpoints.check_final()

    # ------------------------------------------------------------------ the work

    def checkpoint(self, reason: str) -> CheckpointInfo | None:
        """Save now (see ``Checkpointing.checkpoint``): None when nothing was saved or the save failed."""
        return self.checkpoints.checkpoint(reason)

    def process(self, items: list[Item]) -> Outcome:
        """One micro-batch through the pipeline; its claims wait for a checkpoint; then the ``on_batch`` hooks."""
        self.heartbeat.set_state(State.BUSY)
        started = time.perf_counter()
        with self.checkpoints.guard("the pipeline"):
            outcome = self.pipeline.process(items, self._between_chunks)
        self.batch_seconds = time.perf_counter() - started
        self.log_reports()
        self.checkpoints.trained([item.claim for item in outcome.done if item.claim is not None])
        self.counters.files_processed += outcome.files_processed
        self.counters.files_failed += self.pipeline.quarantine.take_done()
        self.counters.samples += outcome.samples
        if outcome.samples:  # a batch of refused files changed nothing: no checkpoint for it
            self.activity.unsaved_samples += outcome.samples
            self.activity.unsaved_changes = True
        self.activity.last_sample = time.monotonic()
        for hook in self.on_batch:
            hook(outcome)
        return outcome

    def handle(self, message: Message) -> None:
        """Act on one message, as the loop does between micro-batches (only from the worker's thread)."""
        if isinstance(message, Wake):
            return
        if isinstance(message, Rescan):
            self.feed.scan()
        elif isinstance(message, Rewire):
            self.heartbeat.set_state(State.MAINTAINING)
            with self.checkpoints.guard("rewiring"):
                self.engine.rewire()
        elif isinstance(message, Checkpoint):
            self.checkpoints.maybe_checkpoint(message.reason)
        elif isinstance(message, Merge) and self.settings.merge.enabled:
            self.heartbeat.set_state(State.MAINTAINING)
            with self.checkpoints.guard("merging"):
                self.engine.merge(message.reason, min_samples=self.settings.merge.min_samples)
        elif isinstance(message, Grow) and self.settings.growth.enabled:
            self.heartbeat.set_state(State.MAINTAINING)
            with self.checkpoints.guard("growth"):
                self.engine.grow(message.reason)
        self.log_reports()

    def _end_turn(self) -> None:
        for hook in self.on_turn:
            hook()

    def _between_chunks(self) -> bool:
        """Between two steps of a large file: the log reopen, a heartbeat (status, WATCHDOG=1); True to stop."""
        self._reopen_log()
        self.heartbeat.tick()
        return self.stopping

    def _reopen_log(self) -> None:
        if self.reopen_requested:
            self.reopen_requested = False
            reopened = log.reopen()
            self.log.info("log.reopened", file=None if reopened is None else str(reopened), signal="SIGHUP")

    def _handle_messages(self) -> None:
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            self.handle(message)

    def _wait(self) -> None:
        try:
            message = self.messages.get(timeout=self.wait_seconds)
        except queue.Empty:
            return
        self.handle(message)

    def log_reports(self) -> list[Report]:
        """Log the maintenance the engine did (rewiring, growth, merges, drift reactions), hand each to the
        ``on_report`` hooks; a change wants a checkpoint. Returns the reports."""
        reports = self.engine.take_reports()
        for report in reports:
            log_report(self.log, report)
            for hook in self.on_report:
                hook(report)
            self.activity.unsaved_changes = self.activity.unsaved_changes or report.changed
            if report.changed:
                self.checkpoints.noted(type(report).__name__.removesuffix("Report").lower())
        return reports
