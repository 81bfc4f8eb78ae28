"""The drift reaction table: what the Engine does when the concept changes, one daemon or a group alike.

An alarm of the change detector (``drift.py``, one per error stream: the
prequential error) is answered by the rows below, in order, each switched by
its setting. ``Engine.react`` applies the table for both origins: a daemon's
own alarm (``origin="local"``, inside ``step``) and a group's agreement that
some replica alarmed since the last one (``origin="group"``, in
``Engine.fold`` on the group's averaged model). Each application is one
``DriftReport`` naming the origin and the rows that acted, so logs and
``/metrics`` count the group's reactions like a daemon's.

* ``average_reset`` (``drift.reset_average``): the prediction average becomes
  the live weights, its clock restarts, the copy choice is levelled;
* ``growth_rearmed`` (``drift.rearm_growth``): a growth policy that stopped
  growing may grow again (reported only when it had stopped);
* ``lr_boosted`` (``drift.lr_boost`` > 1): the learning rate is multiplied by
  ``lr_boost``, decaying back over ``drift.boost_samples``
  (``Engine.learning_rate`` reads the alarm's sample count: nothing to write);
* ``merge_due`` (``merge.enabled`` and ``merge.on_drift``): a task boundary,
  the Engine's next maintenance merges (``consolidate.merge_due``).

The merge row is what ``merge.on_drift`` used to get from a second detector
(Page-Hinkley with its own ``merge.drift_*`` settings) on the same error
stream; it now follows the one detector's alarms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.config import DriftSettings, MergeSettings
from plasticd.learn.average import AverageClock
from plasticd.learn.choice import CopyChoice
from plasticd.learn.consolidate import Consolidator
from plasticd.learn.growth_policy import GrowthPolicy


@dataclass(frozen=True)
class Parts:
    """The Engine's parts a reaction may change."""

    live: dict[str, Tensor]
    avg: dict[str, Tensor] | None
    clock: AverageClock
    choice: CopyChoice
    growth: GrowthPolicy
    consolidator: Consolidator


def _reset_average(parts: Parts) -> bool:
    if parts.avg is None:
        return False
    torch._foreach_copy_(list(parts.avg.values()), list(parts.live.values()))
    parts.clock.restart()
    parts.choice.level()
    return True


def _rearm_growth(parts: Parts) -> bool:
    return parts.growth.rearm()


def _boost(parts: Parts) -> bool:
    return True  # the boost is a function of the alarm's sample count (Engine.learning_rate): nothing to write


def _merge_due(parts: Parts) -> bool:
    parts.consolidator.drift_pending = True
    return True


@dataclass(frozen=True)
class Row:
    action: str
    wanted: Callable[[DriftSettings, MergeSettings], bool]
    apply: Callable[[Parts], bool]  # True: it did something


TABLE: tuple[Row, ...] = (
    Row("average_reset", lambda d, m: d.reset_average, _reset_average),
    Row("growth_rearmed", lambda d, m: d.rearm_growth, _rearm_growth),
    Row("lr_boosted", lambda d, m: d.lr_boost > 1.0, _boost),
    Row("merge_due", lambda d, m: m.enabled and m.on_drift, _merge_due),
)


def react(drift: DriftSettings, merge: MergeSettings, parts: Parts) -> tuple[str, ...]:
    """Apply every wanted row of the table to ``parts``; the actions that did something, in table order."""
    return tuple(row.action for row in TABLE if row.wanted(drift, merge) and row.apply(parts))
