"""Exact top-k selection over millions of scores, fast on the CPU.

``torch.topk`` with a large k sorts: choosing 200k of 4M entries takes
~50-100 ms on two cores, and masking invalid entries with ``masked_fill``
costs another ~8 ms per pass. Rewiring needs exactly k, unsorted, so we
estimate the k-th value from a random sample of the valid entries, take
everything surely past it with one comparison (ANDed with the validity
mask), and run ``topk`` only inside the narrow band of uncertainty around
it. The result is exact; only the speed is statistical (a fallback to plain
``topk`` covers unlucky samples).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_SMALL = 1 << 16  # below this many scores plain topk is already fast
_SAMPLE = 1 << 14  # valid scores sampled to locate the threshold


def _exact(score: Tensor, k: int, largest: bool, valid: Tensor | None) -> Tensor:
    if valid is not None:
        score = torch.where(valid, score, -math.inf if largest else math.inf)
    return torch.topk(score, k, largest=largest, sorted=False).indices


def select_top(
    score: Tensor,
    k: int,
    largest: bool,
    valid: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices of the ``k`` largest (or smallest) entries of the 1-D ``score`` among ``valid`` ones.

    ``valid`` is an optional bool tensor of the same shape; ``k`` must not
    exceed its count. Indices come in no particular order.
    """
    assert score.dim() == 1, f"score must be 1-D, got shape {tuple(score.shape)}"
    n = score.numel()
    n_valid = n if valid is None else int(torch.count_nonzero(valid))
    assert 0 <= k <= n_valid, f"k={k} out of range for {n_valid} valid scores"
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=score.device)
    if n <= _SMALL or k == n_valid:
        return _exact(score, k, largest, valid)
    # A sample of valid scores: draw enough positions that ~_SAMPLE of them are valid.
    draws = min(n, math.ceil(_SAMPLE * 1.2 * n / n_valid))
    pos = torch.randint(n, (draws,), generator=generator, device=score.device)
    sample = score[pos] if valid is None else score[pos[valid[pos]]]
    m = sample.numel()
    if m < 64:
        return _exact(score, k, largest, valid)
    # Sort so that the best come first; the k-th best lies near rank q·m.
    sample = torch.sort(sample, descending=largest).values
    q = k / n_valid
    slack = 5.0 * math.sqrt(q * (1.0 - q) / m) + 2.0 / m
    tight = sample[max(0, math.floor(m * (q - slack)) - 1)]  # almost surely inside the top k
    loose = sample[min(m - 1, math.ceil(m * (q + slack)) - 1)]  # almost surely outside it
    better_or_equal = score >= loose if largest else score <= loose
    if valid is not None:
        better_or_equal &= valid
    cand = torch.nonzero(better_or_equal).squeeze(1)
    vals = score[cand]
    in_sure = vals > tight if largest else vals < tight
    sure, band = cand[in_sure], cand[~in_sure]
    need = k - sure.numel()
    if need < 0 or need > band.numel():
        return _exact(score, k, largest, valid)
    chosen = band[torch.topk(score[band], need, largest=largest, sorted=False).indices]
    return torch.cat((sure, chosen))
