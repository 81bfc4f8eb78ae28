"""Start-up recovery: resume the model from its newest valid checkpoint and settle the work area.

After a crash (or a clean stop) the work area holds claims of earlier runs:
files trained on whose checkpoint is durable (*covered*: only their move is
left), files claimed or trained on after the last checkpoint (*uncovered*:
learned again, so the model that runs has learned each exactly once), and
files refused before the crash (their quarantine is finished, never trained).
Stray temp files of dead processes are removed, half-done quarantines
finished, and failed files counted once across crashes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plasticd.learn.engine import Engine
from plasticd.service.checkpoint_policy import Checkpointing
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.service.claims import Session, WorkArea, clean_stray_temps
from plasticd.service.copy_claims import finish_copies
from plasticd.service.counters import Counters
from plasticd.service.feeds import Feed
from plasticd.service.moves import Quarantine


def recover(
    *,
    store: CheckpointStore,
    engine: Engine,
    counters: Counters,
    checkpoints: Checkpointing,
    feed: Feed,
    work: WorkArea | None,
    current: Session | None,
    adopts: Callable[[Session], bool],
    quarantine: Quarantine,
    log: Any,
) -> None:
    """Load the newest valid checkpoint into ``engine``; move on what it covers; requeue the rest into ``feed``.

    Raises CheckpointError when checkpoints exist but none is valid: the
    daemon refuses to start from scratch silently. ``current`` (this run's session)
    and sessions ``adopts`` declines (a live replica's) are left alone.
    """

    store.clean_stray()
    loaded = store.load_latest()
    covered: set[str] = set()
    if loaded is not None:
        for setting, (old, new) in engine.load_state(loaded.tensors, loaded.meta).items():
            log.info("settings.changed", setting=setting, old=old, new=new)  # in effect from now on
        covered = set(loaded.meta.get("covered", []))
        counters.restore(loaded.meta.get("counters", {}))
        checkpoints.last = loaded.info
        feed.resume(loaded.meta)
        log.info("checkpoint.loaded", path=str(loaded.info.json_path), seq=loaded.info.seq, samples=engine.metrics.seen)
    if work is None:
        return
    unmoved = checkpoints.unmoved
    counted = set(loaded.meta.get("quarantined", [])) if loaded is not None else set()
    for folder in {work.failed, quarantine.failed}:
        for name in clean_stray_temps(folder):
            log.info("recovery.temp_removed", folder=str(folder), file=name)
    requeued: list[str] = []
    for earlier in work.sessions():
        if (current is not None and earlier.id == current.id) or not adopts(earlier):
            continue
        for name in clean_stray_temps(earlier.folder):
            log.info("recovery.temp_removed", folder=str(earlier.folder), file=name)
        finish_copies(earlier.folder, log)  # claims copied from another file system, cut short
        claims = work.claims_of(earlier)
        refused = quarantine.recover(claims, work.reasons_of(earlier), counted)
        for claim in claims:
            if claim.seq in refused:
                continue  # refused before the crash: it goes to quarantine (now, or after a back-off), never trained
            if claim.key in covered:
                unmoved.add([claim])  # trained on already: only the move is left
            else:
                feed.requeue([claim])
                requeued.append(claim.original_name)
                log.debug("recovery.requeued_file", file=claim.original_name, claim=claim.key)
    if requeued:  # one line at info, however many (400 after one kill -9); each file at debug
        log.info(
            "recovery.requeued", files=len(requeued), first=requeued[:5],
            note="claimed by an earlier process and not covered by its last checkpoint: learned again, once",
        )  # fmt: skip
    counters.files_failed += quarantine.take_done()
    if unmoved:
        log.info("recovery.covered", files=len(unmoved))
        unmoved.move()
