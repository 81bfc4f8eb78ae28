"""Claim-by-rename and the work area where claimed files wait for a checkpoint.

A file is *claimed* by an atomic ``rename`` out of its source folder into
``<work>/<session>/`` before it is read (Maildir style): of two processes
racing for the same file exactly one rename succeeds. Claimed files stay in
the work area until a durable checkpoint covers the training they caused;
only then do they move on to their destination (processed/ or done/).
Invalid files go to the failed folder at once, with a ``.error.json``
sidecar, since they never touch the model: their reason is written to the
session folder first (``.quarantine-<seq>.json``), then the sidecar appears
in the failed folder, then the file; a crash anywhere in between is finished
at the next start, so no file ever sits in the failed folder without its
reason. The record stays until a checkpoint has counted the quarantine.

A *session* is one process run over one source: ``session.json`` records the
source and destination folders so that, after a crash, the next run knows
where each leftover claim belongs. Claim file names are
``<seq:08d>~<original name>``, so the original name survives a crash
(truncated only if it would exceed the file-system's name limit).

Nothing is ever overwritten: a destination name that exists already gets
``~<n>`` before its extension.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from plasticd.errors import WorkAreaError
from plasticd.fsutil import (
    SEP,
    TMP_MARK,
    candidate_names,
    create_json,
    fit_name,
    fsync_dir,
    link_new,
    same_file,
    stray_temp,
    write_json_atomic,
)
from plasticd.service.status import pid_alive

SESSION_FILE = "session.json"
SIDECAR_SUFFIX = ".error.json"  # next to each quarantined file: why it was refused
REASON_PREFIX = ".quarantine-"  # <work>/<session>/.quarantine-<seq>.json: a quarantine's reason until it is counted


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
        if not marker.exists():
            # written whole under a temp name, then linked: replicas starting together never read a half-written one
            tmp = marker.with_name(f".OWNER{TMP_MARK}{os.getpid()}")
            try:
                tmp.write_text(f"{owner}\n", encoding="utf-8")
                link_new(tmp, marker)
                return
            except FileExistsError:
                pass  # another process made it first: check it like any other
            finally:
                tmp.unlink(missing_ok=True)
        recorded = marker.read_text(encoding="utf-8").strip()
        if recorded != str(owner):
            raise WorkAreaError(
                f"work folder {self.root} holds claims of the model in {recorded}, not {owner}; "
                "give each checkpoint folder its own paths.work"
            )

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
                # Another process of the group may be removing the same folder: gone is tidy too.
                with contextlib.suppress(FileNotFoundError):
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
    def reasons_of(session: Session) -> dict[int, Path]:
        """The quarantine reason records in ``session`` by claim sequence number (see ``quarantine``)."""
        records = {}
        for entry in os.listdir(session.folder):
            seq = entry.removeprefix(REASON_PREFIX).removesuffix(".json")
            if entry.startswith(REASON_PREFIX) and entry.endswith(".json") and seq.isdigit():
                records[int(seq)] = session.folder / entry
        return records

    @staticmethod
    def remove_if_empty(session: Session) -> bool:
        try:
            names = os.listdir(session.folder)
        except FileNotFoundError:
            return True  # an operator removed it already (Claimer.claim expects that too)
        if any(name != SESSION_FILE for name in names):
            return False
        (session.folder / SESSION_FILE).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another replica's tidy-up saw the record gone and removed it first
            session.folder.rmdir()
        return True


class Claimer:
    """Claims files for one session with consecutive sequence numbers."""

    def __init__(self, session: Session, start_seq: int = 0) -> None:
        self.session = session
        self._seq = start_seq

    def allocate(self, name: str) -> tuple[int, Path]:
        """The next sequence number and the claim path a file called ``name`` gets with it (used up either way)."""
        seq = self._seq
        self._seq += 1
        return seq, self.session.folder / fit_name(name, f"{seq:08d}{SEP}")

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


def reason_record(claim: Claim) -> Path:
    """Where a claim's quarantine reason waits in its session folder (a dot file: never taken for a claim)."""
    return claim.session.folder / f"{REASON_PREFIX}{claim.seq:08d}.json"


def sidecar_payload(claim: Claim, reason: str, message: str, error_type: str) -> dict:
    return {
        "file": claim.original_name,
        "claim": claim.key,
        "reason": reason,
        "message": message,
        "exception": error_type,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def quarantine(claim: Claim, failed: Path, reason: str, message: str, error_type: str) -> Path:
    """Move an invalid file to ``failed`` with its ``<name>.error.json`` sidecar; returns the file's new path.

    The reason is made durable in the work area first (``reason_record``), so a
    crash at any later point is finished by ``finish_quarantine`` at the next
    start. OSError (a full or read-only failed folder) leaves the file in the
    work area with its reason: nothing is lost, the caller retries.
    """
    payload = sidecar_payload(claim, reason, message, error_type)
    write_json_atomic(reason_record(claim), payload)
    return finish_quarantine(claim, failed, payload)


def finish_quarantine(claim: Claim, failed: Path, payload: dict) -> Path:
    """The second half of ``quarantine`` (also run at start-up for a claim left with its reason record).

    The sidecar appears first, the file second (``link_new``: neither ever
    replaces anything), so ``failed`` never shows a file without its reason. A
    name is used only if both it and its sidecar name are free: a sidecar can
    never overwrite an earlier quarantined file (``victim.json.error.json``) nor
    the other way round. A sidecar of ours found at a candidate name is a crash's
    leftover and is reused. The record is removed by ``settle`` once a
    checkpoint has counted the quarantine (``Counters.files_failed`` stays true).
    """
    failed.mkdir(parents=True, exist_ok=True)
    claim_path = claim.path
    if not os.path.lexists(claim_path):
        raise FileNotFoundError(errno.ENOENT, "claimed file vanished", str(claim_path))
    for candidate in candidate_names(claim.original_name, reserve=len(SIDECAR_SUFFIX)):
        final = failed / candidate
        sidecar = failed / (candidate + SIDECAR_SUFFIX)
        if os.path.lexists(final) and not _ours(claim_path, final, sidecar, payload):
            continue
        if not _place_sidecar(sidecar, payload):
            continue
        try:
            link_new(claim_path, final)
        except FileExistsError:
            if not _ours(claim_path, final, sidecar, payload):  # taken meanwhile: our sidecar goes, the next name is tried
                sidecar.unlink()
                continue
        fsync_dir(failed)
        with contextlib.suppress(FileNotFoundError):  # a folder is renamed, not linked
            os.unlink(claim_path)
        return final
    raise WorkAreaError(f"no free name for {claim.original_name!r} in {failed}")


def _ours(claim_path: Path, final: Path, sidecar: Path, payload: dict) -> bool:
    """Whether ``final`` is this claim's file placed by an interrupted earlier try (a link, or a complete copy
    across file systems next to our sidecar)."""
    if same_file(claim_path, final):
        return True
    try:
        mine = json.loads(sidecar.read_text(encoding="utf-8")).get("claim") == payload["claim"]
        return bool(mine) and filecmp.cmp(claim_path, final, shallow=False)
    except (OSError, ValueError, AttributeError):
        return False


def _place_sidecar(sidecar: Path, payload: dict) -> bool:
    """Create ``sidecar`` with ``payload`` unless the name is taken; True if it now holds this claim's reason."""
    try:
        existing = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        existing = None
    except (OSError, ValueError):
        return False  # someone else's file
    if existing is not None:
        return isinstance(existing, dict) and existing.get("claim") == payload["claim"]
    try:
        create_json(sidecar, payload)
    except FileExistsError:
        return False
    return True


def clean_stray_temps(folder: Path) -> list[str]:
    """Remove temp files a killed process left in ``folder`` (a half-written sidecar); returns their names.

    Only those whose writer (the pid in the name) is gone: a live process may be writing its own.
    """
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        if not stray_temp(name):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
            removed.append(name)
    return removed
