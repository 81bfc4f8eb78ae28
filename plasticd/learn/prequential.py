"""Running prequential (test-then-train) metrics, updated a batch at a time with numpy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class MetricsSnapshot:
    samples_seen: int  # every sample predicted
    samples_labelled: int  # those that carried a label
    samples_trained: int  # labelled samples the network learned from
    accuracy: float | None  # over every labelled sample, each predicted before training on it
    window_accuracy: float | None  # over the last `window` labelled samples
    loss: float | None  # mean prequential cross-entropy over the same window
    window: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


class PrequentialMetrics:
    """Accuracy overall and over a recent window of labelled samples, plus loss."""

    def __init__(self, window: int = 10000) -> None:
        assert window >= 1, f"window must be >= 1, got {window}"
        self.window = window
        self._correct_ring = np.zeros(window, dtype=np.bool_)
        self._loss_ring = np.zeros(window, dtype=np.float64)
        self._pos = 0
        self.seen = 0
        self.labelled = 0
        self.trained = 0
        self.correct = 0

    def update(self, correct: np.ndarray, loss: np.ndarray, unlabelled: int = 0, trained: int = 0) -> None:
        """Fold in one step: ``correct`` and ``loss`` for its labelled samples only."""
        b = len(correct)
        self.seen += b + unlabelled
        self.trained += trained
        if b == 0:
            return
        self.labelled += b
        self.correct += int(np.count_nonzero(correct))
        if b >= self.window:
            correct, loss, b = correct[-self.window :], loss[-self.window :], self.window
        idx = (self._pos + np.arange(b)) % self.window
        self._correct_ring[idx] = correct
        self._loss_ring[idx] = loss
        self._pos = (self._pos + b) % self.window

    def _recent(self, k: int) -> np.ndarray:
        """Ring positions of the latest min(k, kept) labelled samples, oldest first (at most ``window`` kept)."""
        n = max(0, min(k, self.labelled, self.window))
        return (self._pos - n + np.arange(n)) % self.window

    def recent_correct(self, k: int) -> np.ndarray:
        """(min(k, kept),) float 0/1 correctness of the latest labelled samples, oldest first (at most ``window`` kept)."""
        return self._correct_ring[self._recent(k)].astype(np.float64)

    def recent_loss(self, k: int) -> np.ndarray:
        """(min(k, kept),) prequential losses of the latest labelled samples, oldest first (as ``recent_correct``)."""
        return self._loss_ring[self._recent(k)]

    def snapshot(self) -> MetricsSnapshot:
        filled = min(self.labelled, self.window)
        return MetricsSnapshot(
            samples_seen=self.seen,
            samples_labelled=self.labelled,
            samples_trained=self.trained,
            accuracy=self.correct / self.labelled if self.labelled else None,
            window_accuracy=float(self._correct_ring[:filled].mean()) if filled else None,
            loss=float(self._loss_ring[:filled].mean()) if filled else None,
            window=self.window,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "correct_ring": self._correct_ring.copy(),
            "loss_ring": self._loss_ring.copy(),
            "counters": np.array([self._pos, self.seen, self.labelled, self.trained, self.correct], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        ring = np.asarray(state["correct_ring"], dtype=np.bool_)
        if len(ring) != self.window:
            raise ValueError(f"metrics window {len(ring)} in the checkpoint, {self.window} configured")
        self._correct_ring[:] = ring
        self._loss_ring[:] = state["loss_ring"]
        self._pos, self.seen, self.labelled, self.trained, self.correct = (int(v) for v in state["counters"])
