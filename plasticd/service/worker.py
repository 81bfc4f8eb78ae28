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

from plasticd.service.checkpoints import CheckpointInfo, CheckpointStore
from plasticd.service.claims import Claim, Session, WorkArea
from plasticd.config import Settings
from plasticd.learn.engine import Engine
from plasticd.errors import CheckpointError
from plasticd.service.feeds import FileFeed, StreamFeed
from plasticd.log import get_logger
from plasticd.learn.reports import log_report
from plasticd.service.messages import Checkpoint, Grow, Merge, Message, Rescan, Rewire, Wake
from plasticd.service.moves import CoveredFiles
from plasticd.service.notify import Notifier
from plasticd.service.pipeline import Pipeline
from plasticd.service.predictions import PredictionWriter
from plasticd.service.scheduler import Activity
from plasticd.service.sources import FolderSource
from plasticd.service.status import State, write_status

WAIT_S = 0.2  # longest block in the loop: bounds how late a stop request is seen
PROGRESS_EVERY_S = 5.0  # period of daemon.progress events while samples flow
MAX_BACKOFF = 60  # a failing checkpoint is retried after at most 60 x checkpoint.retry_seconds


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
        self.pending: list[Claim] = []  # trained on, in work/, no checkpoint covers them yet
        self.unmoved = CoveredFiles(self.work, self.session, self.settings.checkpoint.retry_seconds)  # to move on
        self.last_checkpoint: CheckpointInfo | None = None
        self.checkpoint_failures = 0  # consecutive failed checkpoints
        self._last_failure = ""  # what the last failed checkpoint said
        self._retry_at = 0.0  # monotonic time before which a failed checkpoint is not retried
        self._status_failing = False
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
                    self._maybe_checkpoint("samples")
                elif self.unmoved.due():
                    self.unmoved.move()
                self._check_checkpoint_failures()
                self._heartbeat()
        except BaseException:
            self._shutdown(check=False)  # the error that stopped the loop is the one to report
            raise
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
                    self.unmoved.add([claim])  # trained on already: only the move is left
                else:
                    self.feed.recovered.append(claim)  # type: ignore[union-attr]
                    self.log.info("recovery.requeued", file=claim.original_name, claim=claim.key)
        if self.unmoved:
            self.log.info("recovery.covered", files=len(self.unmoved))
            self.unmoved.move()

    def _resume_stream(self, meta: dict) -> None:
        if not isinstance(self.feed, StreamFeed):
            return
        stream = meta.get("stream") or {}
        if stream == self.feed.identity:
            self.feed.position = int(meta.get("stream_position") or 0)
        else:
            self.log.warning("stream.restarted", reason="the checkpoint was made on a different stream", checkpoint=stream)

    def _shutdown(self, check: bool = True) -> None:
        """The final checkpoint; with ``check``, CheckpointError (exit code 1) when it left work unsaved or unmoved."""
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
        if not check:
            return
        if self.activity.unsaved_changes or self.pending:  # exit non-zero: what was learned is not saved
            raise CheckpointError(
                f"the final checkpoint failed ({self._last_failure}); {len(self.pending)} trained files stay in "
                f"{self.settings.paths.work} and are processed again at the next start"
            )
        if self.unmoved:
            raise CheckpointError(
                f"{len(self.unmoved)} files covered by the last checkpoint could not be moved on (see file.move_failed); "
                f"they stay in {self.settings.paths.work} and are moved at the next start"
            )

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
            self.engine.rewire()
        elif isinstance(message, Checkpoint):
            self._maybe_checkpoint(message.reason)
        elif isinstance(message, Merge) and self.settings.merge.enabled:
            self._set_state(State.MAINTAINING)
            self.engine.merge(message.reason, min_samples=self.settings.merge.min_samples)
        elif isinstance(message, Grow) and self.settings.growth.enabled:
            self._set_state(State.MAINTAINING)
            self.engine.grow(message.reason)
        self._log_reports()

    def _log_reports(self) -> None:
        """Log the maintenance the engine did (rewiring, growth, merges); a change wants a checkpoint."""
        for report in self.engine.take_reports():
            log_report(self.log, report)
            self.activity.unsaved_changes = self.activity.unsaved_changes or report.changed

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
        self._log_reports()
        self.pending += [item.claim for item in outcome.done if item.claim is not None]
        self.counters.files_processed += sum(item.claim is not None for item in outcome.done)
        self.counters.files_failed += len(outcome.failed)
        self.counters.samples += outcome.samples
        self.activity.unsaved_samples += outcome.samples
        self.activity.unsaved_changes = True
        self.activity.last_sample = time.monotonic()

    # ---------------------------------------------------------------- checkpoints

    def checkpoint(self, reason: str) -> CheckpointInfo | None:
        """Save the model with the claims it covers, then move those files on.

        A failure (disk full, I/O error) is logged, not fatal: the files stay in
        the work area, the next try comes after a back-off (``_maybe_checkpoint``),
        and only ``checkpoint.max_failures`` failures in a row stop the daemon.
        """
        if not (self.activity.unsaved_changes or self.pending):
            if self.unmoved:
                self.unmoved.move()
            return None
        tensors, meta = self.engine.state()
        meta.update(
            covered=[claim.key for claim in self.unmoved.claims + self.pending],  # until moved, every claim stays covered
            counters=self.counters.as_dict(),
            stream_position=self.feed.position if isinstance(self.feed, StreamFeed) else None,
            stream=self.feed.identity if isinstance(self.feed, StreamFeed) else None,
            reason=reason,
        )
        try:
            info = self._save(tensors, meta)
        except CheckpointError as exc:
            self._checkpoint_failed(reason, exc)
            return None
        self.checkpoint_failures = 0
        self.last_checkpoint = info
        self.activity.unsaved_samples = 0
        self.activity.unsaved_changes = False
        self.unmoved.add(self.pending)
        self.pending = []
        moved = self.unmoved.move()
        self.log.info(
            "checkpoint.saved", path=str(info.json_path), seq=info.seq, reason=reason, samples=self.engine.metrics.seen,
            files_moved=moved, bytes=info.tensors_bytes,
        )  # fmt: skip
        return info

    def _save(self, tensors: dict, meta: dict) -> CheckpointInfo:
        """The predictions of covered files durable first, then the checkpoint; CheckpointError names what failed."""
        try:
            self.predictions.sync()
        except OSError as exc:
            raise CheckpointError(f"cannot make the predictions journal {self.predictions.path} durable: {exc}") from exc
        return self.store.save(tensors, meta)

    def _maybe_checkpoint(self, reason: str) -> None:
        """A checkpoint, unless the last one failed and its back-off has not passed (no retry storm)."""
        if self.checkpoint_failures and time.monotonic() < self._retry_at:
            return
        self.checkpoint(reason)

    def _checkpoint_failed(self, reason: str, exc: CheckpointError) -> None:
        self.checkpoint_failures += 1
        self._last_failure = str(exc)
        delay = self.settings.checkpoint.retry_seconds * min(2 ** (self.checkpoint_failures - 1), MAX_BACKOFF)
        self._retry_at = time.monotonic() + delay
        self.log.error(
            "checkpoint.failed", reason=reason, error=str(exc), folder=str(self.store.folder), failures=self.checkpoint_failures,
            retry_in_s=delay, pending_files=len(self.pending),
        )  # fmt: skip

    def _check_checkpoint_failures(self) -> None:
        """Stop (exit code 1) once ``checkpoint.max_failures`` checkpoints in a row have failed."""
        limit = self.settings.checkpoint.max_failures
        if limit and self.checkpoint_failures >= limit:
            raise CheckpointError(
                f"{self.checkpoint_failures} checkpoints in a row failed, the last with: {self._last_failure}; "
                f"stopping. The {len(self.pending)} files trained on since the last checkpoint stay in {self.settings.paths.work} "
                f"and are processed again at the next start; fix {self.store.folder} (space, permissions, disk) first"
            )

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
        try:
            self._write_status_file(m, ckpt)
        except OSError as exc:  # the status file is a convenience: never worth stopping the daemon for
            if not self._status_failing:
                self.log.warning("status.write_failed", folder=str(self.settings.paths.state), error=str(exc))
            self._status_failing = True
            return
        self._status_failing = False

    def _write_status_file(self, m, ckpt: CheckpointInfo | None) -> None:
        write_status(
            self.settings.paths.state,
            {
                "state": self.state.value,
                **m.as_dict(),
                **self.counters.as_dict(),
                "queue_depth": self.feed.backlog,
                "pending_files": len(self.pending) + len(self.unmoved),
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
