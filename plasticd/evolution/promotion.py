"""Promotion with evidence: a challenger replaces the champion only beyond a confidence bound (ChaCha's rule).

Each challenger is scored *paired* with the champion: on every labelled
sample the challenger learned from, both its own prequential error and the
champion's error on the same sample are added to its ``Score``. So the two
means compare the same samples, whatever the budget let the challenger see.

The rule (FLAML's ChaCha, ``flaml/onlineml``, on the 0/1 error): after at
least ``min_samples``, promote when the challenger's upper bound is below
the champion's lower bound, both Hoeffding bounds on [0, 1] at confidence
δ: mean ± sqrt(ln(2/δ) / (2n)). A challenger that is cheaper or dearer
than the champion has its error shifted by the one-knob cost rule
(``cost_penalty``): ``cost_weight`` points of accuracy per halving of the
work per sample. A challenger better only by noise never crosses the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Score:
    """Paired prequential counts of one challenger and the champion, since its birth or the last promotion."""

    n: int = 0  # labelled samples scored by both
    errors: int = 0  # the challenger's prequential errors on them
    champion_errors: int = 0  # the champion's errors on the same samples
    loss: float = 0.0  # the challenger's summed prequential cross-entropy

    def add(self, wrong: int, champion_wrong: int, n: int, loss: float) -> None:
        self.n += n
        self.errors += wrong
        self.champion_errors += champion_wrong
        self.loss += loss

    @property
    def error(self) -> float:
        return self.errors / self.n if self.n else 1.0

    @property
    def champion_error(self) -> float:
        return self.champion_errors / self.n if self.n else 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "errors": self.errors, "champion_errors": self.champion_errors, "loss": self.loss}

    @classmethod
    def from_dict(cls, d: dict) -> Score:
        return cls(int(d["n"]), int(d["errors"]), int(d["champion_errors"]), float(d["loss"]))


def hoeffding(n: int, delta: float) -> float:
    """Half-width of the two-sided Hoeffding interval of a mean of n values in [0, 1] at confidence 1-δ."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n)) if n else math.inf


def cost_penalty(work: float, champion_work: float, cost_weight: float) -> float:
    """Error (as a fraction) charged to a candidate for its work per sample relative to the champion's:
    ``cost_weight`` points of accuracy per doubling (negative: a credit per halving)."""
    return cost_weight / 100.0 * math.log2(max(work, 1e-12) / max(champion_work, 1e-12))


@dataclass(frozen=True)
class Verdict:
    """What the bound says about one challenger against the champion."""

    n: int
    error: float
    champion_error: float
    bound: float  # the half-width of both intervals
    penalty: float  # cost_penalty of the challenger
    promote: bool  # challenger upper + penalty < champion lower, after min_samples
    worse: bool  # challenger lower + penalty > champion upper, after min_samples: retire it

    @property
    def upper(self) -> float:
        return self.error + self.bound

    @property
    def champion_lower(self) -> float:
        return self.champion_error - self.bound

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "n": self.n,
            "error": round(self.error, 6),
            "champion_error": round(self.champion_error, 6),
            "bound": round(self.bound, 6),
            "upper": round(self.upper, 6),
            "champion_lower": round(self.champion_lower, 6),
            "cost_penalty": round(self.penalty, 6),
        }


def judge(score: Score, penalty: float, min_samples: int, delta: float) -> Verdict:
    """ChaCha's rule on ``score`` with the cost rule's ``penalty`` (see the module docstring)."""
    eps = hoeffding(score.n, delta)
    ready = score.n >= min_samples
    promote = ready and score.error + eps + penalty < score.champion_error - eps
    worse = ready and score.error - eps + penalty > score.champion_error + eps
    return Verdict(score.n, score.error, score.champion_error, eps, penalty, promote, worse)
