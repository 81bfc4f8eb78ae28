"""The prediction average's clock: how far the weight average follows the live weights, per labelled sample.

The average is an EMA of the live weights with a warm-up (early weights are
forgotten fast): after ``t`` samples its decay per sample is
``min(decay, (1 + t) / (10 + t))``. It is counted in *labelled samples*, not
optimizer steps, so a stream learned in micro-batches of 32 averages over the
same horizon (about ``1 / (1 - decay)`` samples: 500 by default) as the same
stream learned one sample at a time. The average moves once at least
``every`` samples have been learned since it last moved, with the decay
compounded over them: the same horizon, fewer updates.

``restart()`` starts the warm-up again: the engine calls it when it sets the
average back to the live weights (a drift reaction), so the average then
follows the new concept as fast as it followed the first.
"""

from __future__ import annotations


class AverageClock:
    """Counts labelled samples for the weight average and says when, and how far, it moves."""

    def __init__(self, decay: float, every: int) -> None:
        assert 0.0 <= decay < 1.0 and every >= 1, f"decay must lie in [0, 1) and every >= 1, got {decay}, {every}"
        self.decay = decay
        self.every = every
        self.pending = 0  # samples learned since the average last moved
        self.age = 0  # samples learned since the average (re)started: the warm-up's clock

    def advance(self, samples: int) -> float | None:
        """Count ``samples`` newly learned; the interpolation weight toward the live weights when the average is due."""
        self.pending += samples
        self.age += samples
        if self.pending < self.every:
            return None
        t = self.age
        decay = min(self.decay, (1.0 + t) / (10.0 + t)) ** self.pending
        self.pending = 0
        return 1.0 - decay

    def restart(self) -> None:
        """The average was set to the live weights: warm up again from there."""
        self.pending = 0
        self.age = 0

    def state_dict(self) -> dict[str, int]:
        return {"pending": self.pending, "age": self.age}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pending = int(state["pending"])
        self.age = int(state["age"])
