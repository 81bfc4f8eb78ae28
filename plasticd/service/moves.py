"""Files leaving the work area: claims a checkpoint covers (to their destination), refused ones (to quarantine).

A move can fail (disk full, I/O error, a destination folder deleted under
the daemon): the claims then stay here, every later checkpoint still lists
them as covered (so a crash never trains them twice), and the move is
retried after ``retry_seconds``. A destination folder that vanished is
recreated, loudly. One failed move stops the round (the destination is
likely broken for every file), so a broken disk costs one error event per
retry, not one per file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Literal

from plasticd.fsutil import SEP, fsync_dir, move_no_overwrite, write_json_atomic
from plasticd.log import get_logger
from plasticd.service.claims import (
    Claim,
    Session,
    WorkArea,
    clean_stray_temps,
    finish_quarantine,
    reason_record,
    sidecar_payload,
)
from plasticd.service.results import PendingResults


class CoveredFiles:
    """The covered claims not yet moved on, oldest first."""

    def __init__(
        self, work: WorkArea | None, session: Session | None, retry_seconds: float, results: PendingResults | None = None
    ) -> None:
        self.work = work
        self.session = session  # this run's: its folder stays while the process lives
        self.live_sessions: set[str] = set()  # other live processes' sessions (replicas): never tidied away
        self.retry_seconds = retry_seconds
        self.results = results  # daemon.result_files: each file moves with its <name>.pred.json (service.results)
        self._swept: set[Path] = set()  # destinations cleared of a killed run's result temp files
        self.claims: list[Claim] = []
        self.retry_at = 0.0  # monotonic time of the next try after a failed move
        self.log = get_logger("worker")

    def __len__(self) -> int:
        return len(self.claims)

    def add(self, claims: list[Claim]) -> None:
        self.claims += claims

    def due(self) -> bool:
        return bool(self.claims) and time.monotonic() >= self.retry_at

    def move(self) -> int:
        """Move every claim to its session's destination, in order, until one fails; returns how many moved."""
        done, moved, folders = 0, 0, set()
        if self.results is not None and self.claims:
            self.results.recover([claim.key for claim in self.claims])  # claims covered before a crash: from the journal
        for claim in self.claims:
            outcome = self._move_one(claim)
            if outcome == "failed":
                self.retry_at = time.monotonic() + self.retry_seconds
                break
            done += 1
            if outcome == "moved":
                moved += 1
                folders.add(claim.session.destination)
        self.claims = self.claims[done:]
        for folder in folders:
            try:
                fsync_dir(folder)
            except OSError as exc:  # the moves are done; only their durability across power loss is in doubt
                self.log.error("file.sync_failed", folder=str(folder), error=str(exc))
        self._tidy_sessions()
        return moved

    def _move_one(self, claim: Claim) -> Literal["moved", "vanished", "failed"]:
        dest = claim.session.destination
        try:
            if not dest.is_dir():
                self.log.warning("destination.missing", folder=str(dest), action="recreated")
                dest.mkdir(parents=True, exist_ok=True)
            if self.results is None:
                move_no_overwrite(claim.path, dest, claim.original_name)
            else:
                self._sweep(dest)
                self.results.move(claim, dest)
            return "moved"
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(claim.path):
                self.log.error("file.vanished", file=claim.original_name, claim=claim.key, path=str(claim.path))
                if self.results is not None:
                    self.results.forget(claim)
                return "vanished"  # someone removed it from the work area: nothing left to move
            self.log.error(
                "file.move_failed", file=claim.original_name, path=str(claim.path), destination=str(dest), error=str(exc),
                errno=exc.errno, files_waiting=len(self.claims), retry_in_s=self.retry_seconds,
            )  # fmt: skip
            return "failed"

    def _sweep(self, dest: Path) -> None:
        """Once per destination and process: remove the temp files a killed run left while writing a result."""
        if dest not in self._swept:
            self._swept.add(dest)
            for name in clean_stray_temps(dest):
                self.log.info("recovery.temp_removed", folder=str(dest), file=name)

    def _tidy_sessions(self) -> None:
        """Earlier runs' sessions go once their last claim has moved on."""
        if self.work is None:
            return
        try:
            for session in self.work.sessions():
                if (self.session is None or session.id != self.session.id) and session.id not in self.live_sessions:
                    self.work.remove_if_empty(session)
        except OSError as exc:
            self.log.warning("work.cleanup_failed", folder=str(self.work.root), error=str(exc))


MAX_BACKOFF = 60  # a failing quarantine is retried after at most 60 x retry_seconds


class Quarantine:
    """Refused claims on their way to the failed folder, with their reasons (``claims.quarantine``).

    A quarantine that fails (the failed folder full, read-only, gone) is not
    fatal and loses nothing: the file waits in the work area with its reason
    record and is retried after an exponential back-off, one error event per
    try; the next start finishes it too. A finished quarantine's record stays
    (``settled``) until a checkpoint has saved the count that includes it, so
    ``files_failed`` is exact across crashes: at start-up a record whose file
    has left the work area is counted unless the loaded checkpoint lists it.
    """

    def __init__(self, failed: Path, retry_seconds: float = 5.0) -> None:
        self.failed = failed
        self.retry_seconds = retry_seconds
        self.waiting: list[tuple[Claim, dict]] = []  # refused, still in the work area (the last try failed)
        self.settled: list[Claim] = []  # in the failed folder; their records go after the next checkpoint
        self.done = 0  # quarantines finished and not yet counted (``take_done``)
        self.failures = 0  # failed tries in a row
        self.retry_at = 0.0
        self.log = get_logger("worker")

    def __len__(self) -> int:
        return len(self.waiting)

    def put(self, claim: Claim, reason: str, message: str, error_type: str) -> Path | None:
        """Quarantine ``claim`` now; None when that failed (it is retried later, see ``retry``)."""
        payload = sidecar_payload(claim, reason, message, error_type)
        if self.waiting:  # the folder is failing: queue behind the others, in order
            with contextlib.suppress(OSError):  # without its record the file is checked again at the next start
                write_json_atomic(reason_record(claim), payload)
            self._wait(claim, payload)
            return None
        try:
            write_json_atomic(reason_record(claim), payload)
            return self._finish(claim, payload)
        except OSError as exc:
            self._wait(claim, payload)
            self._failed(claim, exc)
            return None

    def due(self) -> bool:
        return bool(self.waiting) and time.monotonic() >= self.retry_at

    def retry(self) -> list[tuple[Claim, dict, Path]]:
        """Try the waiting quarantines again, in order, until one fails; returns those done."""
        done = []
        while self.waiting:
            claim, payload = self.waiting[0]
            try:
                if not reason_record(claim).exists():
                    write_json_atomic(reason_record(claim), payload)
                final = self._finish(claim, payload)
            except FileNotFoundError as exc:
                if os.path.lexists(claim.path):
                    self._failed(claim, exc)
                    break
                self.log.error("file.vanished", file=claim.original_name, claim=claim.key, path=str(claim.path))
                self.waiting.pop(0)
                continue
            except OSError as exc:
                self._failed(claim, exc)
                break
            self.waiting.pop(0)
            done.append((claim, payload, final))
            self.log.warning(
                "sample.quarantined", file=claim.original_name, reason=payload["reason"], error=payload["message"],
                exception=payload["exception"], moved_to=str(final), retried=True,
            )  # fmt: skip
        if not self.waiting:
            self.failures = 0
        return done

    def recover(self, claims: list[Claim], records: dict[int, Path], counted: set[str]) -> set[int]:
        """At start-up, one session's reason records: finish the quarantines a crash interrupted, count the
        finished ones no checkpoint counted yet. Returns the sequence numbers of claims that are not to be trained."""
        by_seq = {claim.seq: claim for claim in claims}
        for seq, record in sorted(records.items()):
            claim = by_seq.get(seq)
            try:
                payload = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                payload = None
            if claim is None:  # finished before the crash
                if payload is not None and payload.get("claim") in counted:
                    record.unlink(missing_ok=True)
                    continue
                self.done += 1
                self.settled.append(_settled_claim(record, seq, payload))
                continue
            if payload is None:  # a torn record cannot be: it is written atomically; train-check the file again
                record.unlink(missing_ok=True)
                by_seq.pop(seq)
                continue
            self.waiting.append((claim, payload))
        if self.waiting and time.monotonic() >= self.retry_at:
            for claim, _payload, final in self.retry():
                self.log.info("recovery.quarantined", file=claim.original_name, claim=claim.key, moved_to=str(final))
        return {seq for seq in records if seq in by_seq}

    @property
    def settled_keys(self) -> list[str]:
        """What a checkpoint lists as counted (``recover``'s ``counted`` at the next start)."""
        return [claim.key for claim in self.settled]

    def settle(self, keys: list[str]) -> None:
        """A checkpoint listing ``keys`` is durable: their records can go."""
        gone = set(keys)
        keep = []
        for claim in self.settled:
            if claim.key in gone:
                try:
                    reason_record(claim).unlink(missing_ok=True)
                except OSError as exc:
                    self.log.warning("work.cleanup_failed", folder=str(claim.session.folder), error=str(exc))
                    keep.append(claim)
            else:
                keep.append(claim)
        self.settled = keep

    def take_done(self) -> int:
        """Quarantines finished since the last call (for ``Counters.files_failed``)."""
        done, self.done = self.done, 0
        return done

    def _finish(self, claim: Claim, payload: dict) -> Path:
        final = finish_quarantine(claim, self.failed, payload)
        self.done += 1
        self.settled.append(claim)
        return final

    def _wait(self, claim: Claim, payload: dict) -> None:
        self.waiting.append((claim, payload))

    def _failed(self, claim: Claim, exc: OSError) -> None:
        self.failures += 1
        delay = self.retry_seconds * min(2 ** (self.failures - 1), MAX_BACKOFF)
        self.retry_at = time.monotonic() + delay
        self.log.error(
            "file.quarantine_failed", file=claim.original_name, claim=claim.key, folder=str(self.failed), error=str(exc),
            errno=exc.errno, files_waiting=len(self.waiting), failures=self.failures, retry_in_s=delay,
        )  # fmt: skip


def _settled_claim(record: Path, seq: int, payload: dict | None) -> Claim:
    """A stand-in Claim for a finished quarantine's record (its file is gone: only key and record matter)."""
    folder = record.parent
    key_name = (payload or {}).get("claim", f"{folder.name}/{seq:08d}{SEP}?").split("/", 1)[-1]
    session = Session(id=folder.name, folder=folder, source=folder, destination=folder)
    return Claim(session=session, path=folder / key_name, seq=seq)
