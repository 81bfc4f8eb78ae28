"""Maintenance timing (APScheduler 3.x): jobs that only *post messages* to the worker.

The worker publishes two numbers the jobs may read: when the last sample
arrived and how many samples the last checkpoint does not include. Jobs
never touch tensors, files or the engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler

from plasticd.config import Settings
from plasticd.service.messages import Checkpoint, Grow, Merge, Message, Rescan, Rewire


@dataclass
class Activity:
    """Written by the worker, read by the jobs (plain floats and ints: atomic under the GIL)."""

    last_sample: float = field(default_factory=time.monotonic)
    unsaved_samples: int = 0
    unsaved_changes: bool = False  # e.g. a rewiring cycle since the last checkpoint


class MaintenanceScheduler:
    """Idle rewiring, time-based and idle checkpoints, inbox rescans."""

    def __init__(self, settings: Settings, activity: Activity, post: Callable[[Message], None], watch_inbox: bool) -> None:
        self.settings = settings
        self.activity = activity
        self.post = post
        self._idle_rewire_for = -1.0  # last_sample value of the idle period already rewired
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(daemon=True, job_defaults={"coalesce": True, "max_instances": 1})
        tick = min(1.0, settings.daemon.idle_seconds / 2, max(0.1, settings.checkpoint.idle_seconds / 2))
        self._scheduler.add_job(self.idle_check, "interval", seconds=tick, id="idle-check")
        self._scheduler.add_job(self.timed_checkpoint, "interval", seconds=settings.checkpoint.every_seconds, id="checkpoint")
        if watch_inbox:
            self._scheduler.add_job(lambda: self.post(Rescan()), "interval", seconds=settings.daemon.rescan_seconds, id="rescan")

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)

    def idle_check(self) -> None:
        """After daemon.idle_seconds without samples: one rewiring cycle (then, with growth.enabled, one
        growth check, and with merge.on_idle, one merge request) per idle period; an idle checkpoint."""
        a = self.activity
        idle = time.monotonic() - a.last_sample
        if (a.unsaved_samples or a.unsaved_changes) and idle >= self.settings.checkpoint.idle_seconds:
            self.post(Checkpoint("idle"))
        with self._lock:
            due = idle >= self.settings.daemon.idle_seconds and self._idle_rewire_for != a.last_sample
            if due:
                self._idle_rewire_for = a.last_sample
        if due and self.settings.plasticity.enabled:
            self.post(Rewire("idle"))
        if due and self.settings.growth.enabled:
            self.post(Grow("idle"))  # after the idle rewiring: the worker handles messages in order
        if due and self.settings.merge.enabled and self.settings.merge.on_idle:
            self.post(Merge("idle"))  # the worker decides whether enough was learned since the last boundary

    def timed_checkpoint(self) -> None:
        if self.activity.unsaved_samples or self.activity.unsaved_changes:
            self.post(Checkpoint("timer"))
