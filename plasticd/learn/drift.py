"""Drift detection on the prequential error, with the evidence for each alarm.

Every labelled sample is predicted before it is learned, so the stream of
0/1 prequential errors is an honest signal of how well the network fits the
*current* concept. A change detector from river (``drift.detector``) watches
it; when the error rate rises significantly, the monitor raises an ``Alarm``
and the engine adapts (see ``Engine`` and docs/ARCHITECTURE.md).

The detector was chosen by measurement (docs/BENCHMARKS.md, "Drift
detectors", from ``plasticd bench drift``'s prequential error sequences).
ADWIN (Bifet & Gavaldà, 2007) keeps an adaptive window and cuts it where two
sub-windows' means differ beyond a Hoeffding bound. It cuts on a *fall* of
the error too (a network learning a new stream gets better fast), so an alarm
needs the error since the cut to be higher than before it; with that rule
ADWIN raised no alarm on the stationary and incrementally drifting streams
and fired within a few dozen samples of each abrupt change it could see.
KSWIN was as fast but raised a false alarm and runs a Kolmogorov-Smirnov
test per sample; Page-Hinkley fired hundreds of samples late or not at all.

Detector objects are river's and cannot go into a checkpoint (no pickles).
The monitor keeps what it needs to *rebuild* one instead: the count of
labelled samples at the last alarm. After a restart the engine replays the
prequential errors since then (from the metrics ring) into a fresh detector,
so the alarm is not raised again for a change it already adapted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from plasticd.config import DriftSettings

RING = 8192  # latest prequential errors kept as evidence
BEFORE = 800  # errors before the change point that an alarm's "before" rate is taken over (at most)
MIN_BEFORE = 100  # fewer kept errors before the change point: no evidence of a rise, no alarm


@dataclass(frozen=True)
class Alarm:
    """One detected rise of the error rate: where, by which detector, and the error rates that show it."""

    detector: str
    trained: int  # labelled samples learned when the alarm fired (the sample that triggered it included)
    error_recent: float  # error rate since the change point the detector found (ADWIN's new window)
    error_before: float | None  # ... and over up to BEFORE samples before it (None: fewer than MIN_BEFORE kept)
    since_last: int  # labelled samples since the previous alarm (or since the start)


class Adwin:
    """river's ``drift.ADWIN``, built on the same Rust ``AdaptiveWindowing`` it wraps (same defaults, same
    ``update`` rule: a fresh window after a detection), imported without ``river.drift``, whose package
    imports KSWIN and with it scipy.stats (~1-3 s of start-up)."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        from river._river_rust.drift import AdaptiveWindowing  # river's own ADWIN core

        self._helper = AdaptiveWindowing(delta=self.delta, clock=32, max_buckets=5, min_window_length=5, grace_period=10)

    @property
    def width(self) -> int:
        return int(self._helper.get_width())

    def update(self, x: float) -> None:
        if self.drift_detected:
            self._reset()
        self.drift_detected = bool(self._helper.update(x))


def make_detector(settings: DriftSettings) -> Any:
    """A fresh detector for the 0/1 error stream (river is imported only when detection is on)."""
    if settings.detector == "adwin":
        return Adwin(delta=settings.delta)
    from river import drift  # lazy: pulls in scipy (~1-3 s), only for the detectors that need it

    if settings.detector == "kswin":
        return drift.KSWIN(alpha=settings.delta, seed=0)
    if settings.detector == "page_hinkley":
        return drift.PageHinkley(delta=0.005, threshold=50.0, mode="up")
    raise ValueError(f"no detector for drift.detector={settings.detector!r}")


class DriftMonitor:
    """The detector over prequential errors, the recent errors as evidence, and alarm bookkeeping."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.enabled = settings.detector != "off"
        self.detector = make_detector(settings) if self.enabled else None
        self.alarms = 0
        self.last_alarm_at = 0  # labelled samples learned at the last alarm
        self.ring = np.zeros(RING, dtype=np.float64)  # the latest errors, circular: the next goes to ``pos``
        self.pos = 0
        self.filled = 0  # how many of them are real

    def observe(self, errors: np.ndarray, trained_before: int) -> Alarm | None:
        """Feed the 0/1 errors of one step's labelled samples, in stream order; the first alarm among them, if any.

        ``trained_before`` is the number of labelled samples learned before this
        step. A detected change is an alarm only when the error rate *rose*
        (ADWIN also cuts its window when the network gets better, e.g. while it
        is learning a new stream) and at least ``drift.min_samples`` samples
        after the previous alarm (the network is still adapting to that one).
        """
        if self.detector is None or errors.size == 0:
            return None
        self._remember(errors)
        n, alarm = errors.size, None
        for i, e in enumerate(errors.tolist()):  # river detectors are per sample (ADWIN: a few µs each)
            self.detector.update(e)
            if not self.detector.drift_detected or alarm is not None:
                continue
            at = trained_before + i + 1
            candidate = self._evidence(at, end=self.filled - (n - 1 - i), recent=int(getattr(self.detector, "width", 200)))
            rose = candidate.error_before is not None and candidate.error_recent > candidate.error_before
            if rose and at - self.last_alarm_at >= self.settings.min_samples:
                alarm = candidate
                self.alarms += 1
                self.last_alarm_at = at
                # A fresh detector from here on: its state is then a function of the errors since the
                # alarm, which the metrics ring keeps, so a restart can rebuild it exactly (``rebuild``).
                self.detector = make_detector(self.settings)
        return alarm

    def _remember(self, errors: np.ndarray) -> None:
        n = min(errors.size, RING)
        idx = (self.pos + np.arange(n)) % RING
        self.ring[idx] = errors[errors.size - n :]
        self.pos = (self.pos + n) % RING
        self.filled = min(self.filled + n, RING)

    def _evidence(self, at: int, end: int, recent: int) -> Alarm:
        """The alarm the errors kept show for a change ``recent`` samples before the ``end``-th kept one."""
        kept = self.ring[(self.pos - self.filled + np.arange(self.filled)) % RING][:end]  # oldest first, to the trigger
        recent = max(1, min(recent, kept.size))
        before = kept[max(0, kept.size - recent - BEFORE) : kept.size - recent]
        return Alarm(
            detector=self.settings.detector,
            trained=at,
            error_recent=round(float(kept[-recent:].mean()), 4),
            error_before=round(float(before.mean()), 4) if before.size >= MIN_BEFORE else None,
            since_last=at - self.last_alarm_at,
        )

    def rebuild(self, recent_errors: np.ndarray, since_alarm: int) -> None:
        """After a restart: the evidence ring from ``recent_errors`` (oldest first) and a fresh detector fed
        the last ``since_alarm`` of them — the detector's state before the restart whenever those are all
        still kept (the metrics window, 10,000 samples by default). What it detects here was handled then."""
        if self.detector is None:
            return
        self.ring[:] = 0.0
        self.pos = 0
        self.filled = 0
        if recent_errors.size:
            self._remember(recent_errors)
        self.detector = make_detector(self.settings)
        for e in recent_errors[recent_errors.size - min(since_alarm, recent_errors.size) :].tolist():
            self.detector.update(e)

    def state_dict(self) -> dict[str, int]:
        return {"alarms": self.alarms, "last_alarm_at": self.last_alarm_at}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.alarms = int(state.get("alarms", 0))
        self.last_alarm_at = int(state.get("last_alarm_at", 0))
