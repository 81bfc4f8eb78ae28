"""Claim-by-rename and the work area where claimed files wait for a checkpoint.

A file is *claimed* by an atomic ``rename`` out of its source folder into
``<work>/<session>/`` before it is read (Maildir style): of two processes
racing for the same file exactly one rename succeeds. Claimed files stay in
the work area until a durable checkpoint covers the training they caused;
only then do they move on to their destination (processed/ or done/).
Invalid files go to the failed folder at once, with a ``.error.json``
sidecar, since they never touch the model.

A *session* is one process run over one source: ``session.json`` records the
source and destination folders so that, after a crash, the next run knows
where each leftover claim belongs. Claim file names are
``<seq:08d>~<original name>``, so the original name survives a crash
(truncated only if it would exceed the file-system's name limit).

Nothing is ever overwritten: a destination name that exists already gets
``~<n>`` before its extension.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from plasticd.errors import WorkAreaError
from plasticd.fsutil import SEP, fit_name, fsync_dir, move_no_overwrite, write_json_atomic

SESSION_FILE = "session.json"
SIDECAR_SUFFIX = ".error.json"  # next to each quarantined file: why it was refused


@dataclass(frozen=True)
class Session:
    id: str
    folder: Path  # <work>/<id>
    source: Path
    destination: Path

    @property
    def record(self) -> dict:
        return {"id": self.id, "source": str(self.source), "destination": str(self.destination), "pid": os.getpid()}


@dataclass(frozen=True)
class Claim:
    """A file this process owns: it sits in ``path`` until it is moved on."""

    session: Session
    path: Path  # inside session.folder
    seq: int

    @property
    def key(self) -> str:
        """Stable across restarts: names the claim in checkpoints and prediction ids."""
        return f"{self.session.id}/{self.path.name}"

    @property
    def original_name(self) -> str:
        return self.path.name.split(SEP, 1)[1]


class WorkArea:
    """``paths.work``: per-session folders of claimed files, tied to one model's checkpoints."""

    def __init__(self, work: Path, failed: Path, owner: Path) -> None:
        self.root = work
        self.failed = failed
        for folder in (work, failed):
            folder.mkdir(parents=True, exist_ok=True)
        self._check_owner(owner.resolve())

    def _check_owner(self, owner: Path) -> None:
        """Refuse a work area whose claims belong to another checkpoint folder (another model)."""
        marker = self.root / "OWNER"
        if marker.exists():
            recorded = marker.read_text(encoding="utf-8").strip()
            if recorded != str(owner):
                raise WorkAreaError(
                    f"work folder {self.root} holds claims of the model in {recorded}, not {owner}; "
                    "give each checkpoint folder its own paths.work"
                )
        else:
            marker.write_text(f"{owner}\n", encoding="utf-8")

    def open_session(self, source: Path, destination: Path) -> Session:
        stamp = f"s{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        for n in range(1000):  # one process may open several sessions within a second (ingest after ingest)
            sid = stamp if n == 0 else f"{stamp}-{n}"
            folder = self.root / sid
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise WorkAreaError(f"no free session name {stamp}-<n> in {self.root}")
        destination.mkdir(parents=True, exist_ok=True)
        session = Session(id=sid, folder=folder, source=source.resolve(), destination=destination.resolve())
        write_json_atomic(folder / SESSION_FILE, session.record)
        fsync_dir(self.root)
        return session

    def sessions(self) -> list[Session]:
        """Sessions found on disk (earlier runs included), oldest first."""
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            try:
                record = json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                # A crash between mkdir and the record leaves an empty folder (claims
                # start only once the record is durable): tidy it; leave anything else be.
                if not any(folder.iterdir()):
                    folder.rmdir()
                continue
            out.append(
                Session(id=record["id"], folder=folder, source=Path(record["source"]), destination=Path(record["destination"]))
            )
        return out

    @staticmethod
    def claims_of(session: Session) -> list[Claim]:
        """The claimed files still waiting in ``session``, in claim order."""
        claims = []
        for entry in sorted(os.listdir(session.folder)):
            seq, sep, _ = entry.partition(SEP)
            if sep and seq.isdigit():
                claims.append(Claim(session=session, path=session.folder / entry, seq=int(seq)))
        return claims

    @staticmethod
    def remove_if_empty(session: Session) -> bool:
        try:
            names = os.listdir(session.folder)
        except FileNotFoundError:
            return True  # an operator removed it already (Claimer.claim expects that too)
        if any(name != SESSION_FILE for name in names):
            return False
        (session.folder / SESSION_FILE).unlink(missing_ok=True)
        session.folder.rmdir()
        return True


class Claimer:
    """Claims files for one session with consecutive sequence numbers."""

    def __init__(self, session: Session, start_seq: int = 0) -> None:
        self.session = session
        self._seq = start_seq

    def claim(self, src: Path) -> Claim | None:
        """Take ``src`` by rename; None if another process (or a producer) got there first.

        A session folder deleted under us (an operator cleaning up) is recreated.
        """
        seq = self._seq
        target = self.session.folder / fit_name(src.name, f"{seq:08d}{SEP}")
        try:
            os.rename(src, target)
        except FileNotFoundError:
            if self.session.folder.is_dir():
                return None  # the source is gone: claimed elsewhere
            self.session.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.session.folder / SESSION_FILE, self.session.record)
            try:
                os.rename(src, target)
            except FileNotFoundError:
                return None
        self._seq += 1
        return Claim(session=self.session, path=target, seq=seq)


def quarantine(claim: Claim, failed: Path, reason: str, message: str, error_type: str) -> Path:
    """Move an invalid file to ``failed``, then write its ``<name>.error.json`` sidecar next to it.

    A crash between the two leaves the file without its sidecar; the reason
    is still in the log (``sample.quarantined``).
    """
    failed.mkdir(parents=True, exist_ok=True)
    final = move_no_overwrite(claim.path, failed, claim.original_name, reserve=len(SIDECAR_SUFFIX))
    sidecar = final.with_name(final.name + SIDECAR_SUFFIX)
    write_json_atomic(
        sidecar,
        {
            "file": claim.original_name,
            "claim": claim.key,
            "reason": reason,
            "message": message,
            "exception": error_type,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return final
