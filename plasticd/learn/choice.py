"""Which weight copy predicts: the average, unless the live weights have lately been more accurate.

The engine keeps two copies of the network along one axis: the live weights
that training moves, and their running average. On a stationary stream the
average predicts better (it removes the per-sample noise of SGD); right after
the concept changes the live weights do (the average still remembers the old
concept for about its horizon). Every labelled sample is predicted by *both*
copies anyway (one batched forward pass computes them), so the engine scores
both and predicts with the one whose accuracy over roughly the last
``horizon`` labelled samples is higher — the same idea as ARF's background
trees taking over after a drift, at no extra cost.

Scores are exponential moving averages of 0/1 correctness, per sample, so a
batch of B samples moves them exactly as B single samples would. Ties go to
the average.
"""

from __future__ import annotations

import numpy as np


class CopyChoice:
    """Per-copy recent accuracy, and the copy that predicts (the last copy, the average, unless beaten)."""

    def __init__(self, copies: int, horizon: int) -> None:
        assert copies >= 1 and horizon >= 0, f"copies >= 1 and horizon >= 0, got {copies}, {horizon}"
        self.copies = copies
        self.horizon = horizon
        self.score = np.zeros(copies)  # (S,) EMA of correctness per copy

    @property
    def enabled(self) -> bool:
        return self.horizon > 0 and self.copies > 1

    def chosen(self) -> int:
        """Index of the copy that predicts now."""
        if not self.enabled:
            return self.copies - 1
        best = int(np.argmax(self.score[::-1]))  # argmax over the reversed scores: ties go to the last copy
        return self.copies - 1 - best

    def observe(self, correct: np.ndarray) -> None:
        """Fold in (S, n) 0/1 correctness of every copy on n labelled samples, in stream order."""
        if not self.enabled or correct.shape[1] == 0:
            return
        n = correct.shape[1]
        d = 1.0 - 1.0 / self.horizon
        weights = d ** np.arange(n - 1, -1, -1)  # the newest sample weighs most
        self.score = self.score * d**n + (1.0 - d) * (correct * weights).sum(axis=1)

    def level(self) -> None:
        """Forget which copy was ahead (the average was just set to the live weights: they are equal now)."""
        self.score[:] = self.score.max()

    def resize(self, copies: int) -> None:
        """The engine's copy count changed (averaging switched on or off at load): start even."""
        self.copies = copies
        self.score = np.zeros(copies)

    def state_dict(self) -> np.ndarray:
        return self.score.copy()

    def load_state_dict(self, score: np.ndarray) -> None:
        if score.shape == self.score.shape:
            self.score = np.asarray(score, dtype=np.float64).copy()
