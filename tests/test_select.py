"""Exact top-k selection: same values as torch.topk, for every size, tie pattern and validity mask."""

from __future__ import annotations

import math

import pytest
import torch

from plasticd.model.select import select_top


def _reference(score: torch.Tensor, k: int, largest: bool, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is not None:
        score = torch.where(valid, score, -math.inf if largest else math.inf)
    return torch.sort(torch.topk(score, k, largest=largest).values).values


@pytest.mark.parametrize("n", [10, 70_000, 1_000_000])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("valid_share", [None, 0.5, 0.02])
def test_select_top_is_exact(n: int, largest: bool, ties: bool, valid_share: float | None) -> None:
    g = torch.Generator().manual_seed(n + int(largest) + 2 * int(ties))
    score = torch.randint(0, 4, (n,), generator=g).float() if ties else torch.randn(n, generator=g)
    valid = None if valid_share is None else torch.rand(n, generator=g) < valid_share
    n_valid = n if valid is None else int(valid.sum())
    for k in sorted({0, min(1, n_valid), n_valid // 20, n_valid // 2, n_valid}):
        idx = select_top(score, k, largest, valid=valid, generator=g)
        assert idx.numel() == k
        assert idx.unique().numel() == k, "an index was chosen twice"
        if valid is not None:
            assert bool(valid[idx].all()), "an invalid entry was chosen"
        torch.testing.assert_close(torch.sort(score[idx]).values, _reference(score, k, largest, valid))


def test_select_top_rejects_k_beyond_the_valid_entries() -> None:
    with pytest.raises(AssertionError, match="out of range"):
        select_top(torch.zeros(100), 5, True, valid=torch.zeros(100, dtype=torch.bool))
