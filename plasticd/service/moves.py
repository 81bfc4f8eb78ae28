"""Claims a durable checkpoint covers, waiting in the work area to move on to their destination.

A move can fail (disk full, I/O error, a destination folder deleted under
the daemon): the claims then stay here, every later checkpoint still lists
them as covered (so a crash never trains them twice), and the move is
retried after ``retry_seconds``. A destination folder that vanished is
recreated, loudly. One failed move stops the round (the destination is
likely broken for every file), so a broken disk costs one error event per
retry, not one per file.
"""

from __future__ import annotations

import os
import time
from typing import Literal

from plasticd.fsutil import fsync_dir, move_no_overwrite
from plasticd.log import get_logger
from plasticd.service.claims import Claim, Session, WorkArea


class CoveredFiles:
    """The covered claims not yet moved on, oldest first."""

    def __init__(self, work: WorkArea | None, session: Session | None, retry_seconds: float) -> None:
        self.work = work
        self.session = session  # this run's: its folder stays while the process lives
        self.retry_seconds = retry_seconds
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
            move_no_overwrite(claim.path, dest, claim.original_name)
            return "moved"
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(claim.path):
                self.log.error("file.vanished", file=claim.original_name, claim=claim.key, path=str(claim.path))
                return "vanished"  # someone removed it from the work area: nothing left to move
            self.log.error(
                "file.move_failed", file=claim.original_name, path=str(claim.path), destination=str(dest), error=str(exc),
                errno=exc.errno, files_waiting=len(self.claims), retry_in_s=self.retry_seconds,
            )  # fmt: skip
            return "failed"

    def _tidy_sessions(self) -> None:
        """Earlier runs' sessions go once their last claim has moved on."""
        if self.work is None:
            return
        try:
            for session in self.work.sessions():
                if self.session is None or session.id != self.session.id:
                    self.work.remove_if_empty(session)
        except OSError as exc:
            self.log.warning("work.cleanup_failed", folder=str(self.work.root), error=str(exc))
