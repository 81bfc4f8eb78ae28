"""Non-dominated sorting over (error, work per sample, size), and the champion rule with one knob.

Every objective is minimised. A point dominates another when it is no worse
in every objective and better in at least one; the first front is the set of
points nothing dominates (Deb's fast non-dominated sort, which at a
population of a handful is a plain O(M²) comparison). The champion rule
picks from the front the point with the lowest ``error + cost_penalty``:
``cost_weight`` points of accuracy per halving of the work per sample
(promotion.cost_penalty); size only shapes the front.
"""

from __future__ import annotations

from collections.abc import Sequence

from plasticd.evolution.promotion import cost_penalty

Point = tuple[float, float, float]  # (error, work per sample, active parameters)


def dominates(a: Point, b: Point) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front: fronts[0] is the non-dominated set, fronts[1] what only it dominates, ..."""
    m = len(points)
    dominated_by = [sum(dominates(points[j], points[i]) for j in range(m) if j != i) for i in range(m)]
    beats = [[j for j in range(m) if j != i and dominates(points[i], points[j])] for i in range(m)]
    out: list[list[int]] = []
    current = [i for i in range(m) if dominated_by[i] == 0]
    while current:
        out.append(current)
        nxt = []
        for i in current:
            for j in beats[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return out


def champion_rule(points: Sequence[Point], reference_work: float, cost_weight: float) -> int:
    """The index, among the first front of ``points``, with the lowest error + cost penalty against ``reference_work``."""
    front = fronts(points)[0]
    return min(front, key=lambda i: (points[i][0] + cost_penalty(points[i][1], reference_work, cost_weight), i))
