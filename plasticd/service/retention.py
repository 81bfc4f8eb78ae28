"""Which checkpoints to keep: the last few, then one an hour, then one a day, within a byte budget, no duplicates.

``keep_plan`` is a pure function of the committed checkpoints (oldest first) and
the policy; ``CheckpointStore`` removes what it leaves out, after each commit.

* **Tiers.** The newest ``keep``, as they are; then, for each of the last
  ``hourly`` hours (counted back from the newest checkpoint's time), the newest
  older checkpoint of that hour; then the same for each of the last ``daily``
  days.
* **No duplicates in the tiers.** Of several older checkpoints at the same
  sample count (an idle period's checkpoint, then another after its idle
  rewiring; a rollback's copy and its original) only the newest can fill an
  hour or a day, and none that a recent one repeats: the tiers reach back in
  samples learned, not in saves. With the
  defaults (3, 24, 7) rollback reaches back a week with at most 34 checkpoints.
* **Byte budget.** With ``max_bytes``, the oldest kept checkpoints go until the
  rest fit; the newest is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Retention:
    keep: int = 3  # the newest checkpoints kept whatever their age
    hourly: int = 0  # then one per hour, for this many hours back
    daily: int = 0  # then one per day, for this many days back
    max_bytes: int = 0  # at most this many bytes of checkpoints in all (0: no budget)


@dataclass(frozen=True)
class Entry:
    seq: int
    created: str  # ISO 8601, UTC
    bytes: int
    samples: int | None  # samples seen at the save (None: not recorded: never a duplicate)


def keep_plan(entries: list[Entry], policy: Retention) -> set[int]:
    """The seqs to keep of ``entries`` (oldest first) under ``policy``; the newest is always among them."""
    if not entries:
        return set()
    recent = entries[-policy.keep :]
    kept = {e.seq for e in recent}
    newest_of_count: dict[int, int] = {}
    for e in entries:
        if e.samples is not None:
            newest_of_count[e.samples] = e.seq
    counted = {e.samples for e in recent}
    # the tiers: checkpoints older than the recent ones, one per sample count (the newest), none a recent one repeats
    unique = [
        e
        for e in entries[: -policy.keep]
        if e.samples is None or (newest_of_count[e.samples] == e.seq and e.samples not in counted)
    ]
    now = _time(entries[-1].created)
    for period, count in ((3600.0, policy.hourly), (86400.0, policy.daily)):
        seen: set[int] = set()
        for e in reversed(unique):  # newest first: the first of each bucket is its newest
            t = _time(e.created)
            if now is None or t is None:
                continue
            age = int((now - t) // period)
            if age >= count or age in seen:
                continue
            seen.add(age)
            kept.add(e.seq)
    if policy.max_bytes:
        chosen = [e for e in entries if e.seq in kept]
        total = sum(e.bytes for e in chosen)
        for e in chosen[:-1]:  # oldest first, never the newest
            if total <= policy.max_bytes:
                break
            kept.discard(e.seq)
            total -= e.bytes
    return kept


def _time(created: str) -> float | None:
    try:
        return datetime.fromisoformat(created).timestamp()
    except ValueError:
        return None
