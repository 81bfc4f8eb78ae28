"""Continual-learning metrics from an accuracy matrix (Avalanche's definitions).

``R[i, j]`` is the test accuracy on task j after training on tasks 0..i
(T × T; entries with j > i are accuracy on tasks not trained on yet, and are
not used by any metric here).

    average accuracy   A   = mean_j R[T-1, j]
    forgetting         F   = mean_{j<T-1} ( max_{i<T-1} R[i, j] − R[T-1, j] )     (Chaudhry et al. 2018)
    backward transfer  BWT = mean_{j<T-1} ( R[T-1, j] − R[j, j] )                 (Lopez-Paz & Ranzato 2017)

The max in F runs over the rows from j (the task's own) to T-2, i.e. the best
accuracy the task ever had before the last one was learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContinualScores:
    average_accuracy: float  # mean accuracy over all tasks after the last one
    forgetting: float  # mean drop from each earlier task's best accuracy (>= 0 ... mostly)
    backward_transfer: float  # mean change of each earlier task's accuracy since it was learned (< 0: forgetting)


def _check(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    assert r.ndim == 2 and r.shape[0] == r.shape[1] and r.shape[0] >= 1, f"R must be T×T, got shape {r.shape}"
    return r


def average_accuracy(r: np.ndarray) -> float:
    r = _check(r)
    return float(r[-1].mean())


def forgetting(r: np.ndarray) -> float:
    """Mean over earlier tasks of (best accuracy before the last task) − (final accuracy); 0 for one task."""
    r = _check(r)
    t = r.shape[0]
    if t < 2:
        return 0.0
    learned = np.tri(t - 1, dtype=bool)  # (T-1, T-1): rows before the last, only tasks already learned
    best = np.where(learned, r[:-1, :-1], -np.inf).max(axis=0)  # (T-1,) best past accuracy of each earlier task
    return float((best - r[-1, :-1]).mean())


def backward_transfer(r: np.ndarray) -> float:
    """Mean over earlier tasks of (final accuracy) − (accuracy right after learning it); 0 for one task."""
    r = _check(r)
    t = r.shape[0]
    if t < 2:
        return 0.0
    return float((r[-1, :-1] - np.diag(r)[:-1]).mean())


def scores(r: np.ndarray) -> ContinualScores:
    return ContinualScores(average_accuracy(r), forgetting(r), backward_transfer(r))
