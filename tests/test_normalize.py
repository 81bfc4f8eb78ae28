"""The input scaler's running statistics are the exact mean/variance of everything seen (within its horizon)."""

from __future__ import annotations

import pytest
import torch

from plasticd.model.normalize import InputNorm


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_running_statistics_are_exact_within_the_horizon(batch: int) -> None:
    g = torch.Generator().manual_seed(batch)
    xs = [torch.rand((batch, 20), generator=g) * torch.linspace(0.1, 5.0, 20) + 3.0 for _ in range(600 // batch)]
    norm = InputNorm(20, horizon=1000)
    for x in xs:
        norm.update(x)
    seen = torch.cat(xs)
    torch.testing.assert_close(norm.mean, seen.mean(dim=0), rtol=0, atol=1e-5)
    torch.testing.assert_close(norm.var, seen.var(dim=0, unbiased=False), rtol=1e-4, atol=1e-5)
    assert norm.count == len(seen)


def test_update_does_not_mutate_its_input_and_standardises() -> None:
    x = torch.randn((64, 5)) * 4 + 2
    before = x.clone()
    norm = InputNorm(5)
    norm.update(x)
    assert torch.equal(x, before)
    z = norm(x)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(5), rtol=0, atol=1e-5)
    assert bool((z.std(dim=0, unbiased=False) < 1.0).all())  # EPS in the denominator keeps it just under 1
