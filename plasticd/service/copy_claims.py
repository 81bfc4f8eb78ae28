"""Claims from another file system (``plasticd ingest`` of a USB stick, a tmpfs): take, copy, claim, remove.

A rename cannot cross file systems, so a file there is claimed in four steps,
each durable before the next, with the same guarantees as a claim by rename:

1. **taken** on its own file system by a rename to a hidden name in its folder
   (``.plasticd-taking-<session>-<seq>~<name>``): atomic there, so of two
   processes exactly one takes it, and no source lists a dot file;
2. a **record** ``.copy-<seq>.json`` in the session folder names that hidden
   path (written atomically and fsynced);
3. **copied** into the session folder under a temp name, fsynced, renamed to
   the claim's name, the folder fsynced: the claim is durable;
4. the hidden source is **removed** (its folder fsynced), then the record.

So the source is removed only once its copy is durable. A crash at any point
is finished at the next start (``finish_copies``, from recovery): a record
whose claim exists means the copy is durable, so the hidden source is removed
and the claim is learned like any other; a record without its claim means the
copy never committed, so the temp copy goes and the hidden source gets its
name back (never overwriting) and is ingested again. A source folder that
cannot be written (a read-only stick) is refused: its files could not be
taken or removed, so a second run would learn them twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import structlog

from plasticd.errors import PlasticdError
from plasticd.fsutil import SEP, TMP_MARK, fit_name, fsync_dir, move_no_overwrite, write_json_atomic
from plasticd.service.claims import Claim, Claimer, Session

RECORD_PREFIX = ".copy-"  # <work>/<session>/.copy-<seq>.json: a claim copied from another file system, in progress
TAKING_PREFIX = ".plasticd-taking-"  # the source's hidden name on its own file system while it is copied


class CopyClaimer(Claimer):
    """Claims files of a folder on another file system than the work area: take, copy, claim, then remove."""

    def __init__(self, session: Session, source_folder: Path, start_seq: int = 0) -> None:
        super().__init__(session, start_seq)
        if not os.access(source_folder, os.W_OK | os.X_OK):
            raise PlasticdError(
                f"ingest: {source_folder} is on another file system than paths.work and cannot be written: its files "
                "are copied into the work area and removed from it once the copy is durable (exactly once, also "
                "across crashes). Copy the files somewhere writable first, or make the folder writable"
            )

    def claim(self, src: Path) -> Claim | None:
        seq, target = self.allocate(src.name)
        taken = src.with_name(fit_name(src.name, f"{TAKING_PREFIX}{self.session.id}-{seq:08d}{SEP}"))
        try:
            os.rename(src, taken)  # step 1: exactly one process takes it
        except FileNotFoundError:
            return None
        record = self.session.folder / f"{RECORD_PREFIX}{seq:08d}.json"
        write_json_atomic(record, {"source": str(taken), "name": src.name, "claim": target.name})  # step 2
        temp = self.session.folder / f".{seq:08d}{TMP_MARK}{os.getpid()}"
        try:
            shutil.copyfile(taken, temp, follow_symlinks=False)  # step 3
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
            os.rename(temp, target)
            fsync_dir(self.session.folder)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
                _give_back(taken, src.name)
                record.unlink(missing_ok=True)
            raise
        _remove_source(taken)  # step 4
        record.unlink(missing_ok=True)
        return Claim(session=self.session, path=target, seq=seq)


def _remove_source(taken: Path) -> None:
    taken.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fsync_dir(taken.parent)


def _give_back(taken: Path, name: str) -> Path:
    """The hidden source under its own name again (``name~1`` when a new file took the name meanwhile)."""
    back = move_no_overwrite(taken, taken.parent, name)
    with contextlib.suppress(OSError):
        fsync_dir(taken.parent)
    return back


def finish_copies(folder: Path, log: structlog.typing.FilteringBoundLogger) -> int:
    """Finish the cross-file-system claims a killed process left in session ``folder``; returns how many."""
    import json

    finished = 0
    for entry in sorted(os.listdir(folder)):
        if not (entry.startswith(RECORD_PREFIX) and entry.endswith(".json")):
            continue
        record = folder / entry
        try:
            data = json.loads(record.read_text())
            taken, name, claim = Path(data["source"]), str(data["name"]), folder / str(data["claim"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("recovery.copy_record_unreadable", record=str(record))
            continue
        if claim.exists():  # the copy is durable: the source goes, the claim is learned like any other
            _remove_source(taken)
            log.info("recovery.copy_finished", file=name, source=str(taken.parent))
        elif taken.exists():  # the copy never committed: the source gets its name back and is ingested again
            back = _give_back(taken, name)
            log.info("recovery.copy_undone", file=name, source=str(back))
        record.unlink(missing_ok=True)
        finished += 1
    return finished
