"""The worker: the one thread that owns the model, and its service loop.

    install signal handlers; recover; READY
    while not asked to stop:
        handle posted messages (rescan, rewire, checkpoint)
        take up to max_batch samples' worth of work and process it
        checkpoint when due; heartbeat (status file, WATCHDOG=1)
    finally: final checkpoint, STOPPING

``plasticd ingest`` is the same loop in burst mode: it drains its folder and
returns. Claimed files wait in the work area until a durable checkpoint
covers them (exactly-once training across crashes); every checkpoint lists
the claims it covers, and only then are they moved on.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from dataclasses import dataclass, field
from typing import Literal

from plasticd.checkpoint import CheckpointInfo, CheckpointStore
from plasticd.claims import Claim, Session, WorkArea, fsync_dir, move_no_overwrite
from plasticd.config import Settings
from plasticd.engine import Engine, RewireReport
from plasticd.errors import CheckpointError
from plasticd.feeds import FileFeed, StreamFeed
from plasticd.log import get_logger
from plasticd.messages import Checkpoint, Message, Rescan, Rewire, Wake
from plasticd.notify import Notifier
from plasticd.pipeline import Pipeline
from plasticd.predictions import PredictionWriter
from plasticd.scheduler import Activity
from plasticd.sources import FolderSource
from plasticd.status import State, write_status

WAIT_S = 0.2  # longest block in the loop: bounds how late a stop request is seen
PROGRESS_EVERY_S = 5.0  # period of daemon.progress events while samples flow


def log_rewire(log, report: RewireReport, trained: int) -> None:
    """One ``plasticity.rewired`` event per cycle (or ``plasticity.skipped``)."""
    if report.skipped:
        log.info("plasticity.skipped", reason=report.skipped, trained=trained)
        return
    log.info(
        "plasticity.rewired",
        pruned=report.pruned,
        regrown=report.regrown,
        active=report.active_after,
        eligible=report.eligible,
        estimate_ms=round(report.estimate_ms, 2),
        rewire_ms=round(report.rewire_ms, 2),
        trained=trained,
    )


@dataclass
class Counters:
    files_processed: int = 0
    files_failed: int = 0
    samples: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"files_processed": self.files_processed, "files_failed": self.files_failed, "samples": self.samples}


@dataclass
class Worker:
    settings: Settings
    engine: Engine
    store: CheckpointStore
    feed: FileFeed | StreamFeed
    pipeline: Pipeline
    predictions: PredictionWriter
    notifier: Notifier
    work: WorkArea | None = None  # None for the in-memory stream
    session: Session | None = None  # this run's claims
    mode: Literal["daemon", "burst"] = "daemon"
    activity: Activity = field(default_factory=Activity)
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.log = get_logger("worker")
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.state = State.STARTING
        self.pending: list[Claim] = []  # trained on, in work/, not yet moved on
        self.last_checkpoint: CheckpointInfo | None = None
        self._stop_requested = False
        self._stop_signal: int | None = None
        self._next_heartbeat = 0.0
        self._next_progress = time.monotonic() + PROGRESS_EVERY_S
        self._rate_mark = (time.monotonic(), 0)

    # --------------------------------------------------------------- lifecycle

    def post(self, message: Message) -> None:
        """Thread-safe: the only way other threads affect the worker."""
        self.inbox.put(message)

    def request_stop(self, signum: int, _frame: object = None) -> None:
        """Signal handler: first signal asks the loop to stop after the current step; a second exits now.

        It only sets a flag (and, the second time, writes with ``os.write``): the
        interrupted code may hold the logger's lock, so logging here could deadlock.
        """
        if self._stop_signal is not None:
            os.write(2, f"plasticd: second {signal.Signals(signum).name}, exiting now\n".encode())
            os._exit(1)
        self._stop_signal = signum
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """The service loop; returns the exit code."""
        self.install_signal_handlers()
        self.recover()
        try:
            self._scan()
            self._set_state(State.IDLE)
            self.notifier.ready(self._status_line())
            self.log.info("daemon.ready", mode=self.mode, backlog=self.feed.backlog, **self._model_facts())
            while not self._stop_requested:
                self._handle_messages()
                items = self.feed.take(self.settings.train.max_batch)
                if items:
                    self._process(items)
                elif self.mode == "burst" and self._drained():
                    break
                else:
                    self._set_state(State.IDLE)
                    self._wait()
                if self.activity.unsaved_samples >= self.settings.checkpoint.every_samples:
                    self.checkpoint("samples")
                self._heartbeat()
        finally:
            self._shutdown()
        return 0

    def recover(self) -> None:
        """Load the newest valid checkpoint; move the files it covers on; requeue claims it does not cover.

        Raises CheckpointError when checkpoints exist but none is valid: the
        daemon refuses to start from scratch silently.
        """
        self.store.clean_stray()
        loaded = self.store.load_latest()
        covered: set[str] = set()
        if loaded is not None:
            self.engine.load_state(loaded.tensors, loaded.meta)
            covered = set(loaded.meta.get("covered", []))
            self.counters = Counters(**loaded.meta.get("counters", {}))
            self.last_checkpoint = loaded.info
            self._resume_stream(loaded.meta)
            self.log.info("checkpoint.loaded", path=str(loaded.info.json_path), seq=loaded.info.seq, samples=self.engine.metrics.seen)
        if self.work is None:
            return
        for session in self.work.sessions():
            if self.session is not None and session.id == self.session.id:
                continue
            for claim in self.work.claims_of(session):
                if claim.key in covered:
                    self.pending.append(claim)  # trained on already: only the move is left
                else:
                    self.feed.recovered.append(claim)  # type: ignore[union-attr]
                    self.log.info("recovery.requeued", file=claim.original_name, claim=claim.key)
        if self.pending:
            self.log.info("recovery.covered", files=len(self.pending))
            self._move_covered()

    def _resume_stream(self, meta: dict) -> None:
        if not isinstance(self.feed, StreamFeed):
            return
        stream = meta.get("stream") or {}
        if stream == self.feed.identity:
            self.feed.position = int(meta.get("stream_position") or 0)
        else:
            self.log.warning("stream.restarted", reason="the checkpoint was made on a different stream", checkpoint=stream)

    def _shutdown(self) -> None:
        if self._stop_signal is not None:
            self.log.info("daemon.stop_requested", signal=signal.Signals(self._stop_signal).name)
        self._set_state(State.STOPPING)
        self.notifier.stopping(self._status_line())
        try:
            self.checkpoint("shutdown")
        finally:
            self._set_state(State.STOPPED)
            self._write_status()
            self.log.info("daemon.stopped", **self.counters.as_dict())

    # ------------------------------------------------------------------ the loop

    def _handle_messages(self) -> None:
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(message)

    def _handle(self, message: Message) -> None:
        if isinstance(message, Wake):
            return
        if isinstance(message, Rescan):
            self._scan()
        elif isinstance(message, Rewire):
            self._set_state(State.MAINTAINING)
            report = self.engine.rewire()
            log_rewire(self.log, report, self.engine.metrics.trained)
            self.activity.unsaved_changes = self.activity.unsaved_changes or not report.skipped
        elif isinstance(message, Checkpoint):
            self.checkpoint(message.reason)

    def _wait(self) -> None:
        try:
            message = self.inbox.get(timeout=WAIT_S)
        except queue.Empty:
            return
        self._handle(message)

    def _scan(self) -> None:
        source = getattr(self.feed, "source", None)
        if isinstance(source, FolderSource):
            source.scan()

    def _drained(self) -> bool:
        if isinstance(self.feed, StreamFeed):
            return self.feed.exhausted
        self._scan()
        return self.feed.backlog == 0

    def _process(self, items: list) -> None:
        self._set_state(State.BUSY)
        outcome = self.pipeline.process(items)
        for report in outcome.rewires:
            log_rewire(self.log, report, self.engine.metrics.trained)
        self.pending += [item.claim for item in outcome.done if item.claim is not None]
        self.counters.files_processed += sum(item.claim is not None for item in outcome.done)
        self.counters.files_failed += len(outcome.failed)
        self.counters.samples += outcome.samples
        self.activity.unsaved_samples += outcome.samples
        self.activity.unsaved_changes = True
        self.activity.last_sample = time.monotonic()

    # ---------------------------------------------------------------- checkpoints

    def checkpoint(self, reason: str) -> CheckpointInfo | None:
        """Save the model with the claims it covers, then move those files on. Failure is logged, not fatal."""
        if not (self.activity.unsaved_changes or self.pending):
            return None
        tensors, meta = self.engine.state()
        meta.update(
            covered=[claim.key for claim in self.pending],
            counters=self.counters.as_dict(),
            stream_position=self.feed.position if isinstance(self.feed, StreamFeed) else None,
            stream=self.feed.identity if isinstance(self.feed, StreamFeed) else None,
            reason=reason,
        )
        self.predictions.sync()
        try:
            info = self.store.save(tensors, meta)
        except CheckpointError as exc:
            self.log.error("checkpoint.failed", reason=reason, error=str(exc), pending_files=len(self.pending))
            return None
        self.last_checkpoint = info
        self.activity.unsaved_samples = 0
        self.activity.unsaved_changes = False
        moved = self._move_covered()
        self.log.info(
            "checkpoint.saved", path=str(info.json_path), seq=info.seq, reason=reason, samples=self.engine.metrics.seen,
            files_moved=moved, bytes=info.tensors_bytes,
        )  # fmt: skip
        return info

    def _move_covered(self) -> int:
        """Move every covered claim to its session's destination; what cannot move stays pending."""
        still, folders = [], set()
        for claim in self.pending:
            dest = claim.session.destination
            try:
                dest.mkdir(parents=True, exist_ok=True)
                move_no_overwrite(claim.path, dest, claim.original_name)
                folders.add(dest)
            except OSError as exc:
                self.log.error("file.move_failed", file=claim.original_name, destination=str(dest), error=str(exc))
                still.append(claim)
        for folder in folders:
            fsync_dir(folder)
        moved = len(self.pending) - len(still)
        self.pending = still
        if self.work is not None:  # earlier runs' sessions go once their last claim has moved on
            for session in self.work.sessions():
                if self.session is None or session.id != self.session.id:
                    self.work.remove_if_empty(session)
        return moved

    # ----------------------------------------------------------------- reporting

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.log.debug("daemon.state", state=state.value)

    def _model_facts(self) -> dict:
        return {"neurons": self.engine.cfg.neurons, "active_connections": self.engine.active_connections, "device": str(self.engine.device)}

    def _status_line(self) -> str:
        m = self.engine.snapshot()
        acc = "-" if m.window_accuracy is None else f"{100 * m.window_accuracy:.1f}%"
        return f"{self.state.value}: {m.samples_seen} samples, accuracy {acc}, queue {self.feed.backlog}"

    def _write_status(self) -> None:
        m = self.engine.snapshot()
        ckpt = self.last_checkpoint
        write_status(
            self.settings.paths.state,
            {
                "state": self.state.value,
                **m.as_dict(),
                **self.counters.as_dict(),
                "queue_depth": self.feed.backlog,
                "pending_files": len(self.pending),
                **self._model_facts(),
                "last_checkpoint": None if ckpt is None else {"path": str(ckpt.json_path), "seq": ckpt.seq, "created": ckpt.created},
                "inbox": str(self.settings.paths.inbox),
            },
        )

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.settings.daemon.status_seconds
        self._write_status()
        self.notifier.watchdog()
        self.notifier.status(self._status_line())
        if now >= self._next_progress and self.state != State.IDLE:
            self._next_progress = now + PROGRESS_EVERY_S
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
