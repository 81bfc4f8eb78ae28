"""Checkpoint bookkeeping: which claims a checkpoint must cover, when to save, what a failure costs.

Claimed files wait in the work area until a durable checkpoint covers them
(exactly-once training across crashes): trained claims are *pending* until a
checkpoint lists them, then *unmoved* (``moves.CoveredFiles``) until they are
moved on; every checkpoint lists both, so a crash between the save and the
move never trains a file twice. A failed save (disk full, I/O error) is
logged, not fatal: the next try comes after an exponential back-off, and
only ``checkpoint.max_failures`` failures in a row stop the daemon.

A full disk is not such a failure: the store first makes room from the oldest
kept checkpoints (``CheckpointStore.save``); when even that is not enough the
daemon *degrades* (``checkpoint.no_space``): it goes on learning, the files
wait in the work area, the failures do not count towards ``max_failures``, and
every loop turn (at most every ``SPACE_CHECK_S``) it looks at the free space
and saves as soon as the checkpoint fits again (``checkpoint.space_returned``).

The invariant: a checkpoint's model has learned exactly the claims it lists
as covered. The worker records a micro-batch's claims as pending only after
the pipeline returns; any exception escaping the pipeline or an engine
maintenance call (``guard``) can leave the model ahead of the pending list
(e.g. the predictions journal or the log raised ENOSPC after
``Engine.step``), so from then on this process saves no checkpoint at all,
the shutdown one included (``checkpoint.refused``): the next start loads the
last consistent checkpoint and learns the uncovered claims again, once.

Checkpoints are rate-limited (``checkpoint.min_interval_seconds``, an
optional ``max_bytes_per_hour`` budget): idle and timed checkpoints wait for
the interval, so a slow trickle does not write a full model per file.
``every_samples`` (a backlog) and the shutdown checkpoint are never held
back. The guarantee is untouched: until a checkpoint covers them, claims
simply wait in the work area. A checkpoint is written only when something
changed (samples learned, a maintenance report that changed the model).

Each checkpoint also lists the finished quarantines whose reason records
are still in the work area (``quarantined``), so that ``files_failed`` is
counted exactly once across crashes (see ``moves.Quarantine``).

Replicas (``plasticd.distributed``) keep the invariant for the group: every
replica's own cadence is ``held``; at a barrier rank 0 saves the averaged
model with the claims every replica trained on (``Elsewhere``), and each
replica moves its own once that save is durable (``covered_by``).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from plasticd.config import Settings
from plasticd.errors import CheckpointError, CheckpointNoSpaceError
from plasticd.learn.engine import Engine
from plasticd.log import get_logger
from plasticd.service.checkpoint_store import CheckpointInfo, CheckpointStore
from plasticd.service.claims import Claim, Session, WorkArea
from plasticd.service.counters import Counters
from plasticd.service.feeds import Feed
from plasticd.service.moves import CoveredFiles, Quarantine
from plasticd.service.predictions import PredictionWriter
from plasticd.service.results import PendingResults
from plasticd.service.scheduler import Activity

MAX_BACKOFF = 60  # a failing checkpoint is retried after at most 60 x checkpoint.retry_seconds
SPACE_CHECK_S = 0.5  # while a checkpoint does not fit, the free space is looked at this often


@dataclass(frozen=True)
class Elsewhere:
    """What other replicas add to a barrier checkpoint: their trained and unmoved claims, their settled
    quarantines, and meta the group agreed on (e.g. the group's counters)."""

    covered: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


class Checkpointing:
    """The worker's checkpoints: what they cover, their back-off after a failure, the checks at shutdown."""

    def __init__(
        self, settings: Settings, engine: Engine, store: CheckpointStore, feed: Feed, predictions: PredictionWriter,
        activity: Activity, counters: Counters, work: WorkArea | None, session: Session | None,
        quarantine: Quarantine | None = None, held: str = "",
    ) -> None:  # fmt: skip
        self.settings = settings
        self.engine = engine
        self.store = store
        self.feed = feed
        self.predictions = predictions
        self.activity = activity
        self.counters = counters
        self.log = get_logger("worker")
        self.pending: list[Claim] = []  # trained on, in work/, no checkpoint covers them yet
        # daemon.result_files: the records of files not yet moved, kept as the journal is written, for their results
        self.results = PendingResults(predictions.path, predictions.keep) if settings.daemon.result_files else None
        predictions.results = self.results
        self.unmoved = CoveredFiles(work, session, settings.checkpoint.retry_seconds, self.results)  # covered, to move on
        self.last: CheckpointInfo | None = None
        self.failures = 0  # consecutive failed checkpoints
        self.maintenance: dict[str, int] = {}  # maintenance that changed the model since the last save, by kind
        self.stopping_failures = 0  # ... of them, those that count towards max_failures (a full disk's do not)
        self.no_space = 0  # bytes the last checkpoint needed and did not find (0: not short of space)
        self._space_checked = 0.0  # monotonic time the free space was last looked at
        self.last_failure = ""  # what the last failed checkpoint said
        self._retry_at = 0.0  # monotonic time before which a failed checkpoint is not retried
        self.quarantine = quarantine if quarantine is not None else Quarantine(settings.paths.failed)
        self.model_ahead = ""  # why the model may hold learning the pending claims do not record: nothing is saved
        self._saved_at: float | None = None  # monotonic time of the last save by this process
        self._saved_bytes = 0
        self._save_seconds = 0.0  # how long the last save took
        self.held = held  # why this process saves no checkpoint of its own (a replica: rank 0 saves at the group's barriers)
        # called after each save attempt with what it wrote (None: it failed) and its seconds (the metrics exporter)
        self.on_save: list[Callable[[CheckpointInfo | None, float], None]] = []

    def noted(self, kind: str) -> None:
        """A maintenance report of ``kind`` (rewire, growth, merge, drift) changed the model: the next save says so."""
        self.maintenance[kind] = self.maintenance.get(kind, 0) + 1

    @property
    def waiting(self) -> int:
        """Files trained on but not yet moved on (the status file's ``pending_files``)."""
        return len(self.pending) + len(self.unmoved)

    def trained(self, claims: list[Claim]) -> None:
        """Claims just trained on: the next checkpoint covers them."""
        self.pending += claims

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Around code that changes the model: if it raises, the model and the pending claims may disagree,
        and no checkpoint is saved for the rest of this process (the module's invariant)."""
        try:
            yield
        except BaseException as exc:
            if not self.model_ahead:
                self.model_ahead = f"{what} raised {type(exc).__name__}: {exc}"
                self.log.error(
                    "checkpoint.disabled", reason=self.model_ahead, pending_files=len(self.pending),
                    action="no checkpoint until restart: the files since the last checkpoint are learned again then",
                )  # fmt: skip
            raise

    def checkpoint(self, reason: str, elsewhere: Elsewhere | None = None) -> CheckpointInfo | None:
        """Save the model with the claims it covers, then move those files on.

        A failure (disk full, I/O error) is logged, not fatal: the files stay in
        the work area, the next try comes after a back-off (``maybe_checkpoint``),
        and only ``checkpoint.max_failures`` failures in a row stop the daemon.
        ``elsewhere`` (rank 0 at a barrier) adds other replicas' claims; while
        ``held``, only such a barrier checkpoint is saved.
        """
        if self.held and elsewhere is None:
            if self.unmoved:
                self.unmoved.move()
            return None
        others = elsewhere or Elsewhere()
        if self.model_ahead or not (self.activity.unsaved_changes or self.pending or others.covered):
            if self.model_ahead:
                self.log.error("checkpoint.refused", reason=reason, error=self.model_ahead, pending_files=len(self.pending))
            if self.unmoved:
                self.unmoved.move()
            return None
        begun = time.monotonic()
        tensors, meta = self.engine.state()
        self.counters.files_failed += self.quarantine.take_done()
        quarantined = self.quarantine.settled_keys
        meta.update(
            covered=[claim.key for claim in self.unmoved.claims + self.pending] + others.covered,  # until moved, still covered
            counters=self.counters.as_dict(),
            quarantined=quarantined + others.quarantined,
            stream_position=None,
            stream=None,
        )
        meta.update(self.feed.resume_state(), reason=reason)
        meta.update(others.meta)
        # what came before it: samples learned and the maintenance that changed the model since the last save
        meta["since_previous"] = {"samples": self.activity.unsaved_samples, "maintenance": dict(self.maintenance)}
        started = time.monotonic()
        try:
            info = self._save(tensors, meta)
        except CheckpointError as exc:
            self._failed(reason, exc)
            self._saved(None, started)
            return None
        self._saved(info, started)
        if self.no_space:
            self.log.info("checkpoint.space_returned", folder=str(self.store.folder), seq=info.seq)
        self.failures, self.stopping_failures, self.no_space = 0, 0, 0
        self.last = info
        self._saved_at, self._saved_bytes = time.monotonic(), info.tensors_bytes
        self._save_seconds = self._saved_at - begun  # the state, its bytes, the fsyncs: what max_time_share bounds
        moved = self.covered_by(info, quarantined)
        self.log.info(
            "checkpoint.saved", path=str(info.json_path), seq=info.seq, reason=reason, samples=self.engine.metrics.seen,
            files_moved=moved, bytes=info.tensors_bytes,
        )  # fmt: skip
        return info

    def covered_by(self, info: CheckpointInfo, quarantined: list[str]) -> int:
        """``info`` is durable and covers every pending claim (saved here, or by rank 0 at a replicas' barrier):
        the settled quarantines ``quarantined`` are counted, the claims move on. Returns how many moved."""
        self.last = info
        self.quarantine.settle(quarantined)
        self.activity.unsaved_samples = 0
        self.activity.unsaved_changes = False
        self.maintenance.clear()
        self.unmoved.add(self.pending)
        self.pending = []
        return self.unmoved.move()

    def maybe_checkpoint(self, reason: str) -> None:
        """A checkpoint, unless the last one failed and its back-off has not passed (no retry storm), or, for
        any reason but ``samples``, the last one was saved less than the rate limit's interval ago, or, for
        ``samples``, saving now would spend more than ``checkpoint.max_time_share`` of the time on saves."""
        now = time.monotonic()
        if self.failures and now < self._retry_at:
            return
        if reason != "samples" and self._saved_at is not None and now < self._saved_at + self.min_interval():
            return
        share = self.settings.checkpoint.max_time_share
        # Under a sustained backlog: the next save waits until the last one's cost is at most ``share``
        # of the time since it started, so saving stays within that share of wall time.
        if (
            reason == "samples"
            and share
            and self._saved_at is not None
            and now < self._saved_at + self._save_seconds * (1.0 - share) / share
        ):
            return
        self.checkpoint(reason)

    def min_interval(self) -> float:
        """Seconds between two rate-limited checkpoints: ``min_interval_seconds``, stretched by the byte budget."""
        c = self.settings.checkpoint
        budget = self._saved_bytes * 3600.0 / c.max_bytes_per_hour if c.max_bytes_per_hour else 0.0
        return max(c.min_interval_seconds, budget)

    def tick(self) -> None:
        """The loop's turn: a checkpoint when enough samples are unsaved, else the moves that are due.

        Raises CheckpointError (exit code 1) once ``checkpoint.max_failures`` checkpoints in a row have failed.
        """
        if self.no_space and self._space_returned():
            self.checkpoint("space_returned")
        elif self.activity.unsaved_samples >= self.settings.checkpoint.every_samples:
            self.maybe_checkpoint("samples")
        elif self.unmoved.due():
            self.unmoved.move()
        if self.quarantine.due():
            self.quarantine.retry()
            self.counters.files_failed += self.quarantine.take_done()
        limit = self.settings.checkpoint.max_failures
        if limit and self.stopping_failures >= limit:
            raise CheckpointError(
                f"{self.failures} checkpoints in a row failed, the last with: {self.last_failure}; "
                f"stopping. The {len(self.pending)} files trained on since the last checkpoint "
                f"stay in {self.settings.paths.work} "
                f"and are processed again at the next start; fix {self.store.folder} (space, permissions, disk) first"
            )

    def check_final(self) -> None:
        """After the final checkpoint: CheckpointError (exit code 1) when it left work unsaved or unmoved."""
        if self.activity.unsaved_changes or self.pending:  # exit non-zero: what was learned is not saved
            why = self.model_ahead or self.last_failure
            raise CheckpointError(
                f"the final checkpoint failed ({why}); {len(self.pending)} trained files stay in "
                f"{self.settings.paths.work} and are processed again at the next start"
            )
        if self.quarantine.waiting:
            raise CheckpointError(
                f"{len(self.quarantine.waiting)} refused files could not be moved to {self.quarantine.failed} "
                f"(see file.quarantine_failed); they stay in {self.settings.paths.work} with their reasons and are "
                "quarantined at the next start"
            )
        if self.unmoved:
            raise CheckpointError(
                f"{len(self.unmoved)} files covered by the last checkpoint could not be moved on (see file.move_failed); "
                f"they stay in {self.settings.paths.work} and are moved at the next start"
            )

    def _save(self, tensors: dict, meta: dict) -> CheckpointInfo:
        """The predictions of covered files durable first, then the checkpoint; CheckpointError names what failed."""
        try:
            self.predictions.sync()
        except OSError as exc:
            raise CheckpointError(f"cannot make the predictions journal {self.predictions.path} durable: {exc}") from exc
        return self.store.save(tensors, meta)

    def _saved(self, info: CheckpointInfo | None, started: float) -> None:
        """The ``on_save`` hooks, after an attempt (``info`` None: it failed) that began at monotonic ``started``."""
        for hook in self.on_save:
            hook(info, time.monotonic() - started)

    def _space_returned(self) -> bool:
        """While short of space: whether the checkpoint that did not fit fits now (looked at every SPACE_CHECK_S)."""
        now = time.monotonic()
        if now < self._space_checked + SPACE_CHECK_S:
            return False
        self._space_checked = now
        try:
            return shutil.disk_usage(self.store.folder).free >= self.no_space
        except OSError:
            return False

    def _failed(self, reason: str, exc: CheckpointError) -> None:
        self.last_failure = str(exc)
        self.failures += 1
        delay = self.settings.checkpoint.retry_seconds * min(2 ** (self.failures - 1), MAX_BACKOFF)
        self._retry_at = time.monotonic() + delay
        short = isinstance(exc, CheckpointNoSpaceError)
        self.log.error(
            "checkpoint.failed", reason=reason, error=str(exc), folder=str(self.store.folder), failures=self.failures,
            retry_in_s=delay, pending_files=len(self.pending), no_space=short,
        )  # fmt: skip
        if not isinstance(exc, CheckpointNoSpaceError):
            self.stopping_failures += 1
            return
        # degrade: learn on, files wait, save as soon as the checkpoint fits (tick looks at the free space)
        if not self.no_space:
            self.log.error(
                "checkpoint.no_space", reason=reason, folder=str(self.store.folder), needed_bytes=exc.needed,
                pending_files=len(self.pending),
                action="learning goes on; trained files wait in the work area; the checkpoint is saved as soon "
                "as it fits (free space in the checkpoint folder); a full disk does not count towards "
                "checkpoint.max_failures",
            )  # fmt: skip
        self.no_space = exc.needed
