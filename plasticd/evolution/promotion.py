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
``evolution.bound = "paired"`` replaces the two Hoeffding intervals by one
empirical-Bernstein interval on the paired differences (half of it is
reported as ``bound``, so upper < champion_lower reads the same way).
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
    disagree: int = 0  # samples on which exactly one of the two was wrong (the paired differences' variance)

    def add(self, wrong: int, champion_wrong: int, n: int, loss: float, disagree: int | None = None) -> None:
        self.n += n
        self.errors += wrong
        self.champion_errors += champion_wrong
        self.loss += loss
        self.disagree += abs(wrong - champion_wrong) if disagree is None else disagree  # None: the fewest possible

    @property
    def error(self) -> float:
        return self.errors / self.n if self.n else 1.0

    @property
    def champion_error(self) -> float:
        return self.champion_errors / self.n if self.n else 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "errors": self.errors, "champion_errors": self.champion_errors, "loss": self.loss,
                "disagree": self.disagree}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Score:
        return cls(int(d["n"]), int(d["errors"]), int(d["champion_errors"]), float(d["loss"]), int(d.get("disagree", 0)))


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


def paired_bernstein(score: Score, delta: float) -> float:
    """Half-width of the empirical-Bernstein interval (Maurer & Pontil) of the mean paired difference
    d = challenger's error - champion's error, d in {-1, 0, 1}: tight when the two mostly agree."""
    n = score.n
    if n < 2:
        return math.inf
    mean = (score.errors - score.champion_errors) / n
    var = max(score.disagree / n - mean * mean, 0.0) * n / (n - 1)
    log = math.log(2.0 / delta)
    return math.sqrt(2.0 * var * log / n) + 14.0 * log / (3.0 * (n - 1))  # range 2: 7·2·ln(2/δ) / (3(n-1))


def judge(score: Score, penalty: float, min_samples: int, delta: float, rule: str = "hoeffding") -> Verdict:
    """ChaCha's rule on ``score`` with the cost rule's ``penalty`` (see the module docstring); ``rule = "paired"``
    bounds the mean paired difference instead (empirical Bernstein), the same test on the same samples, tighter."""
    ready = score.n >= min_samples
    if rule == "paired":
        eps = paired_bernstein(score, delta)
        gap = score.error - score.champion_error + penalty
        return Verdict(score.n, score.error, score.champion_error, eps / 2.0, penalty, ready and gap + eps < 0.0,
                       ready and gap - eps > 0.0)  # fmt: skip
    eps = hoeffding(score.n, delta)
    promote = ready and score.error + eps + penalty < score.champion_error - eps
    worse = ready and score.error - eps + penalty > score.champion_error + eps
    return Verdict(score.n, score.error, score.champion_error, eps, penalty, promote, worse)
