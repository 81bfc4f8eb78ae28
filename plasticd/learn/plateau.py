"""The learning plateau that growth waits for: accuracy of the last ``horizon`` labelled samples against the
``horizon`` before them, with a noise floor of two standard errors (``growth_policy.py`` decides on it)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Plateau:
    plateau: bool
    recent: float | None  # accuracy over the last horizon
    previous: float | None  # ... and over the horizon before it
    noise: float  # the gain that counts as progress: max(min_delta, 2 standard errors)


class PlateauDetector:
    """Chunks of (labelled, correct) between checks, from the cumulative prequential counters."""

    def __init__(self, horizon: int, min_delta: float) -> None:
        self.horizon = horizon
        self.min_delta = min_delta
        self.chunks: list[tuple[int, int]] = []  # (labelled, correct) per check, oldest first
        self.mark = (0, 0)  # counters at the last observation

    def observe(self, labelled: int, correct: int) -> None:
        """Fold in the samples labelled since the last call; keep the chunks the two windows need, no more.

        The oldest chunk goes only while the rest still fill both windows: with checks
        spaced by ``growth.interval`` >= 2 x ``horizon`` (or any spacing that does not
        divide it), one chunk alone can hold two horizons' worth, and dropping by
        sample count would leave a single chunk and no plateau ever.
        """
        dn, dc = labelled - self.mark[0], correct - self.mark[1]
        self.mark = (labelled, correct)
        if dn > 0:
            self.chunks.append((dn, dc))
        while len(self.chunks) > 2 and self._windows(self.chunks[1:]) is not None:
            self.chunks.pop(0)

    def reset(self) -> None:
        """Forget the history (after a growth the network is judged afresh)."""
        self.chunks.clear()

    def _windows(self, chunks: list[tuple[int, int]] | None = None) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(labelled, correct) of the last ≥ horizon samples and of the ≥ horizon before them (whole chunks)."""
        acc = [[0, 0], [0, 0]]
        which = 0
        for n, c in reversed(self.chunks if chunks is None else chunks):
            acc[which][0] += n
            acc[which][1] += c
            if acc[which][0] >= self.horizon:
                if which == 1:
                    break
                which = 1
        if acc[0][0] < self.horizon or acc[1][0] < self.horizon:
            return None
        return (acc[0][0], acc[0][1]), (acc[1][0], acc[1][1])

    def status(self) -> Plateau:
        windows = self._windows()
        if windows is None:
            return Plateau(False, None, None, self.min_delta)
        (n1, c1), (n2, c2) = windows
        p1, p2 = c1 / n1, c2 / n2
        p = (c1 + c2) / (n1 + n2)
        noise = max(self.min_delta, 2.0 * math.sqrt(max(p * (1.0 - p), 1e-12) * (1.0 / n1 + 1.0 / n2)))
        return Plateau(p1 - p2 < noise, p1, p2, noise)

    def state_dict(self) -> dict:
        return {"chunks": [list(c) for c in self.chunks], "mark": list(self.mark)}

    def load_state_dict(self, state: dict) -> None:
        self.chunks = [(int(n), int(c)) for n, c in state.get("chunks", [])]
        self.mark = tuple(int(v) for v in state.get("mark", (0, 0)))  # type: ignore[assignment]
