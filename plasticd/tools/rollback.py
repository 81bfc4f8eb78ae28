"""``plasticd checkpoints`` lists the saved models; ``plasticd rollback SEQ`` makes an older one current again.

The rollback policy
-------------------
* **Only with the model to itself.** Rollback takes the daemon's model lock
  (``<checkpoints>/LOCK``, non-blocking): while a daemon or an ingest owns the
  model it refuses (exit 1) and says which process to stop.
* **An append-only history.** The rollback is a *new* checkpoint, with the
  next sequence number, whose tensors and meta are checkpoint SEQ's (its meta
  adds ``rollback_of: SEQ`` and ``reason: "rollback"``). It is written by the
  store's own atomic protocol, so the rollback commits at one rename: a crash
  before it changes nothing, a crash after it leaves the rollback in force.
  Sequence numbers are never reused (the store's rule), and the daemon resumes
  from the copy as from any checkpoint.
* **Nothing is lost.** The checkpoints between SEQ and the copy are then moved
  (renamed, never deleted) into ``<checkpoints>/rolled-back-<UTC time>/`` with
  a ``ROLLBACK.json`` manifest. Run again after a crash, the command finishes
  the moves instead of making a second copy.
* **Exactly-once stays exact.** Before the copy is written, the work area is
  settled as the daemon's recovery would settle it under the newest
  checkpoint: claimed files that checkpoint covers are moved on to their
  destination (the rollback drops their training, so they must not be
  requeued and learned again silently). What is left in the work area is what
  no checkpoint ever saved; the daemon learns it at its next start, as after
  any crash. The copy keeps SEQ's ``covered`` list, so recovery neither
  requeues nor moves anything twice. Quarantines never touched the model:
  the count of failed files and the list of counted quarantines stay the
  newest checkpoint's.
* **No silent re-learning.** Files learned after SEQ (the claims the newer
  checkpoints cover and SEQ does not) stay where they were moved (processed/
  or an ingest's folder); they are listed in the output and in the manifest.
  To learn them again, copy them back into the inbox.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticd.commands import SubParsers
from plasticd.config import Settings
from plasticd.errors import CheckpointError, ModelLockedError, UsageError

ASIDE_PREFIX = "rolled-back-"
MANIFEST = "ROLLBACK.json"
_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d{10})\.(json|safetensors)$")


def register(subparsers: SubParsers) -> list[argparse.ArgumentParser]:
    listing = subparsers.add_parser(
        "checkpoints",
        help="list the saved checkpoints: seq, time, samples, accuracy at save, size",
        description="List the committed checkpoints of paths.checkpoints, oldest first: sequence number, creation "
        "time (UTC), why it was saved, samples seen and trained, prequential and window accuracy at the save (from "
        "the metrics inside it), neurons and size; and the folders earlier rollbacks moved checkpoints into. "
        "Read-only: safe while the daemon runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=run_list)

    rollback = subparsers.add_parser(
        "rollback",
        help="make checkpoint SEQ the model again (the daemon must be stopped); nothing is deleted",
        description="Roll the model back to checkpoint SEQ: a new checkpoint (the next sequence number) is written "
        "with SEQ's content, so the daemon resumes from SEQ at its next start; the checkpoints after SEQ are moved "
        "into <checkpoints>/rolled-back-<time>/ with a ROLLBACK.json manifest, never deleted. Refuses (exit 1) "
        "while a daemon or ingest owns the model. Files learned after SEQ are NOT learned again: they stay in "
        "their destination folder (processed/) and are listed; copy them into the inbox to learn them again. "
        "Covered files still waiting in the work area are moved on first, as the daemon's recovery would.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rollback.add_argument("seq", type=int, metavar="SEQ", help="the checkpoint to return to (see plasticd checkpoints)")
    rollback.add_argument("--json", action="store_true", help="print the result as JSON")
    rollback.set_defaults(run=run_rollback)
    return [listing, rollback]


# ---------------------------------------------------------------- plasticd checkpoints


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.tools import setup
    from plasticd.tools.saved import store_for_reading, survey

    setup(settings)
    store = store_for_reading(settings)
    rows = survey(store)
    aside = _aside_folders(store.folder)
    # exit 1 when checkpoints exist and none is valid: the daemon would refuse to start (plasticd run)
    code = 1 if rows and not any(r.state == "valid" for r in rows) else 0
    if args.json:
        print(
            json.dumps({"folder": str(store.folder), "checkpoints": [r.as_dict() for r in rows], "rolled_back": aside}, indent=2)
        )
        return code
    if not rows:
        print(f"no checkpoints in {store.folder}")
    else:
        print(f"{'seq':>6}  {'state':<11}  {'created (UTC)':<23}  {'reason':<16}  {'samples':>9}  {'trained':>9}  "
              f"{'accuracy':>8}  {'window':>7}  {'neurons':>7}  {'size':>9}  before it")  # fmt: skip
        for r in rows:
            reason = f"rollback of {r.rollback_of}" if r.rollback_of is not None else (r.reason or "-")
            print(
                f"{r.seq:>6}  {r.state:<11}  {r.created[:23]:<23}  {reason:<16}  {_num(r.samples_seen):>9}  "
                f"{_num(r.samples_trained):>9}  {_pct(r.accuracy):>8}  {_pct(r.window_accuracy):>7}  {_num(r.neurons):>7}  "
                f"{_size(r.bytes):>9}  {r.before or '-'}" + (f"\n{'':>8}why: {r.error}" if r.error else "")
            )
    for folder in aside:
        print(f"rolled back: {folder['folder']} holds checkpoints {', '.join(map(str, folder['seqs'])) or '-'}")
    if code:
        print(f"no valid checkpoint in {store.folder}: plasticd run refuses to start (see the reasons above)", file=sys.stderr)
    return code


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _aside_folders(folder: Path) -> list[dict[str, Any]]:
    out = []
    for entry in sorted(folder.glob(f"{ASIDE_PREFIX}*")):
        if entry.is_dir():
            seqs = sorted({int(m.group(1)) for name in os.listdir(entry) if (m := _CHECKPOINT_FILE.match(name))})
            out.append({"folder": str(entry), "seqs": seqs})
    return out


# ---------------------------------------------------------------- plasticd rollback


@dataclass(frozen=True)
class RollbackResult:
    target: int  # the checkpoint rolled back to
    checkpoint: int  # the copy of it that is now the newest
    moved_aside: list[int]  # sequence numbers now in ``aside``
    aside: str | None  # the folder they went to (None: there were none)
    learned_after: list[dict[str, str]]  # {"claim", "file"}: learned after ``target``, not learned again
    learned_after_complete: bool  # False when a newer checkpoint's record could not be read
    work_moved_on: int  # covered claims moved from the work area to their destination first
    work_left: int  # claims no checkpoint saved: the daemon learns them at its next start

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.service.daemon import model_lock
    from plasticd.tools import setup
    from plasticd.tools.saved import store_for_reading

    setup(settings)
    store = store_for_reading(settings)
    with ExitStack() as stack:
        try:
            stack.enter_context(model_lock(store.folder))
        except ModelLockedError:
            holder = (store.folder / "LOCK").read_text(errors="replace").strip() or "?"
            raise ModelLockedError(
                f"rollback refused: a plasticd process (pid {holder}) owns the model in {store.folder}; stop it first "
                f"(e.g. systemctl stop plasticd), then run 'plasticd rollback {args.seq}' again. Nothing was changed."
            ) from None
        result = rollback(settings, args.seq)
    if result is None:
        print(f"nothing to roll back: checkpoint {args.seq} is already the model the daemon resumes from")
        return 0
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_result(result)
    return 0


def rollback(settings: Settings, seq: int) -> RollbackResult | None:
    """Roll the model in ``paths.checkpoints`` back to checkpoint ``seq`` (call it under the model lock).

    None when there is nothing to do: ``seq`` is the model the daemon resumes from already.
    """
    from plasticd.service.checkpoint_store import CheckpointStore
    from plasticd.tools.saved import covered_claims

    infos = CheckpointStore(settings.paths.checkpoints).list()
    store = CheckpointStore(settings.paths.checkpoints, keep=len(infos) + 1)  # its save must rotate nothing away
    if seq not in {info.seq for info in infos}:
        from plasticd.tools.saved import survey

        rows = survey(store)
        listed = ", ".join(f"{r.seq}" + ("" if r.state == "valid" else f" ({r.state})") for r in rows) or "none"
        raise UsageError(f"no checkpoint {seq} in {store.folder} (checkpoints: {listed}); see plasticd checkpoints")
    target = store.load(seq)
    newest = store.load_latest()
    assert newest is not None  # target exists
    resuming = newest.meta.get("rollback_of") == seq and newest.info.seq > seq  # an earlier run stopped after its copy
    newer = [info for info in infos if info.seq > seq and not (resuming and info.seq == newest.info.seq)]
    if not newer and not _files_after(store.folder, seq, newest.info.seq if resuming else None):
        return None  # seq (or a copy of it with nothing after seq left to move) is the newest already

    moved_on, left = _settle_work_area(settings, set(newest.meta.get("covered", [])))
    before = set(target.meta.get("covered", []))
    learned: dict[str, str] = {}
    complete = True
    for info in newer:
        try:
            keys = covered_claims(info.json_path)
        except (OSError, ValueError, KeyError, TypeError):
            complete = False
            continue
        learned.update({key: _original_name(key) for key in keys if key not in before})

    if resuming:
        copy_seq = newest.info.seq
    else:
        meta = {**target.meta, "reason": "rollback", "rollback_of": seq, **_quarantine_books(newest.meta, target.meta)}
        copy_seq = store.save(target.tensors, meta).seq  # the rollback commits here
    _mark_journal(settings, seq, copy_seq, int(target.tensors["metrics.counters"][1]))
    aside, moved = _move_aside(store.folder, seq, copy_seq)
    result = RollbackResult(
        target=seq,
        checkpoint=copy_seq,
        moved_aside=moved,
        aside=str(aside) if aside else None,
        learned_after=[{"claim": key, "file": name} for key, name in sorted(learned.items())],
        learned_after_complete=complete,
        work_moved_on=moved_on,
        work_left=left,
    )
    if aside is not None:
        from plasticd.fsutil import write_json_atomic

        write_json_atomic(aside / MANIFEST, {**result.as_dict(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    from plasticd.log import get_logger

    get_logger("rollback").info(
        "rollback.done", target=seq, checkpoint=copy_seq, moved_aside=moved, aside=result.aside, learned_after=len(learned)
    )
    return result


def _mark_journal(settings: Settings, target: int, copy_seq: int, from_seq: int) -> None:
    """Append the rollback marker to the predictions journal (once, also when a rollback is finished after a crash):
    the records written before it with ``seq >= from_seq`` are the abandoned run's; every reader leaves them out
    (``report.journal``)."""
    from plasticd.report.journal import ROLLBACK_MARKER
    from plasticd.service.daemon import PREDICTIONS_FILE

    journal = settings.paths.state / PREDICTIONS_FILE
    if not journal.parent.is_dir():
        return  # no journal to mark: nothing was predicted here
    if journal.exists():
        with open(journal, "rb") as handle:
            handle.seek(max(0, journal.stat().st_size - 65536))
            for line in handle.read().split(b"\n"):
                if line.startswith(ROLLBACK_MARKER) and json.loads(line)["rollback"].get("checkpoint") == copy_seq:
                    return  # written by the run that stopped after it
    marker = {
        "rollback": {
            "from_seq": from_seq, "rollback_of": target, "checkpoint": copy_seq, "t": time.time(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": "records above with seq >= from_seq were learned after checkpoint rollback_of and abandoned",
        }
    }  # fmt: skip
    with open(journal, "ab") as handle:
        handle.write(json.dumps(marker).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def _settle_work_area(settings: Settings, covered: set[str]) -> tuple[int, int]:
    """Move on the claims ``covered`` lists, as recovery would; returns (moved on, left for the daemon)."""
    from plasticd.service.claims import WorkArea
    from plasticd.service.moves import CoveredFiles

    p = settings.paths
    if not p.work.is_dir():
        return 0, 0
    work = WorkArea(p.work, p.failed, owner=p.checkpoints)
    unmoved = CoveredFiles(work, None, settings.checkpoint.retry_seconds)
    left = 0
    for session in work.sessions():
        for claim in work.claims_of(session):
            if claim.key in covered:
                unmoved.add([claim])
            else:
                left += 1
    moved = unmoved.move()
    if unmoved:
        raise CheckpointError(
            f"rollback stopped before changing any checkpoint: {len(unmoved)} covered files in {p.work} could not be "
            "moved on to their destination (see file.move_failed in the log); fix that, then run the rollback again"
        )
    return moved, left


def _quarantine_books(newest: dict, target: dict) -> dict[str, Any]:
    """Refused files never touched the model: their count (``counters.files_failed``) and the quarantines the
    newest checkpoint counted (``quarantined``, where the service keeps that list) stay the newest's, so the
    daemon's start-up neither counts a refused file twice nor forgets one."""
    books: dict[str, Any] = {}
    counters = newest.get("counters")
    if isinstance(counters, dict) and "files_failed" in counters:
        books["counters"] = {**target.get("counters", {}), "files_failed": counters["files_failed"]}
    if "quarantined" in newest:
        books["quarantined"] = newest["quarantined"]
    return books


def _files_after(folder: Path, seq: int, before: int | None) -> list[tuple[int, Path]]:
    """Every checkpoint file (committed, corrupt or orphan) with ``seq`` < its seq (< ``before``), newest first."""
    found = []
    for name in os.listdir(folder):
        match = _CHECKPOINT_FILE.match(name)
        if match and seq < int(match.group(1)) and (before is None or int(match.group(1)) < before):
            found.append((int(match.group(1)), folder / name))
    return sorted(found, reverse=True)


def _move_aside(folder: Path, seq: int, copy_seq: int) -> tuple[Path | None, list[int]]:
    """Rename the checkpoint files between ``seq`` and ``copy_seq`` into a new dated folder (tensors before JSON)."""
    from plasticd.fsutil import fsync_dir

    files = _files_after(folder, seq, copy_seq)
    if not files:
        return None, []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        aside = folder / (f"{ASIDE_PREFIX}{stamp}" if n == 0 else f"{ASIDE_PREFIX}{stamp}-{n}")
        try:
            aside.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise CheckpointError(f"no free folder name {ASIDE_PREFIX}{stamp}-<n> in {folder}")
    # A JSON left without its tensors is an invalid checkpoint the daemon skips; tensors left without their
    # JSON would be deleted at its next start as an orphan. So each checkpoint's tensors go first.
    for _, path in sorted(files, key=lambda f: (-f[0], f[1].suffix == ".json")):
        os.rename(path, aside / path.name)
    fsync_dir(aside)
    fsync_dir(folder)
    return aside, sorted({s for s, _ in files})


def _original_name(key: str) -> str:
    """The file name a claim key (``<session>/<seq>~<name>``) stands for."""
    from plasticd.fsutil import SEP

    return key.rsplit("/", 1)[-1].split(SEP, 1)[-1]


def _print_result(r: RollbackResult) -> None:
    print(f"rolled back to checkpoint {r.target}: checkpoint {r.checkpoint} is a copy of it and the newest now; "
          "the daemon resumes from it at its next start")  # fmt: skip
    if r.aside:
        print(f"moved aside (kept): checkpoints {', '.join(map(str, r.moved_aside))} -> {r.aside}/ (manifest {MANIFEST})")
    if r.work_moved_on or r.work_left:
        print(
            f"work area: {r.work_moved_on} covered files moved on to their destination first; "
            f"{r.work_left} files no checkpoint saved are learned at the daemon's next start"
        )
    note = "" if r.learned_after_complete else " (at least; a newer checkpoint's record was unreadable)"
    print(f"{len(r.learned_after)} files learned after checkpoint {r.target}{note} are NOT learned again; "
          "they stay in their destination folder (copy them into the inbox to learn them again):")  # fmt: skip
    for item in r.learned_after:
        print(f"  {item['file']}  ({item['claim']})")
    sys.stdout.flush()
