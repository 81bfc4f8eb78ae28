"""Prune/regrow planning and usage statistics."""

from __future__ import annotations

import torch

from plasticd.model.plasticity import AGE_MAX, PlasticityConfig, UsageStats, plan_rewire


def _setup(n: int = 30, density: float = 0.5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((n, n), generator=g) < density
    w = torch.randn((n, n), generator=g) * mask
    grad = torch.randn((n, n), generator=g)
    return w, mask, grad, UsageStats(n)


def test_prune_takes_the_weakest_eligible_and_regrow_the_strongest_absent() -> None:
    w, mask, grad, stats = _setup()
    stats.advance_age(100, mask)
    cfg = PlasticityConfig(prune_fraction=0.2, min_age=50, regrow="gradient")
    plan = plan_rewire(cfg, w, mask, grad, stats)
    flat_w, flat_m, flat_g = w.view(-1).abs(), mask.view(-1), grad.view(-1).abs()
    assert plan.prune.numel() == int(flat_m.sum() * 0.2)
    assert bool(flat_m[plan.prune].all()) and not bool(flat_m[plan.grow].any())
    kept = flat_m.clone()
    kept[plan.prune] = False
    assert flat_w[plan.prune].max() <= flat_w[kept].min()
    not_grown = ~flat_m
    not_grown[plan.grow] = False
    assert flat_g[plan.grow].min() >= flat_g[not_grown].max()
    assert plan.grow.numel() == plan.prune.numel()


def test_only_connections_past_min_age_are_pruned() -> None:
    w, mask, grad, stats = _setup()
    stats.advance_age(10, mask)
    old = torch.zeros_like(mask)
    old.view(-1)[torch.nonzero(mask.view(-1)).squeeze(1)[::3]] = True  # a third of them are old
    stats.age[old] = 600
    plan = plan_rewire(PlasticityConfig(prune_fraction=0.9, min_age=500), w, mask, grad, stats)
    assert plan.eligible == int(old.sum())
    assert bool(old.view(-1)[plan.prune].all())


def test_credit_scoring_prunes_the_lowest_credit() -> None:
    w, mask, grad, stats = _setup()
    stats.advance_age(1000, mask)
    stats.credit.copy_(torch.rand(mask.shape))
    plan = plan_rewire(PlasticityConfig(prune_score="credit", prune_fraction=0.1, min_age=0), w, mask, grad, stats)
    credit, flat_m = stats.credit.float().view(-1), mask.view(-1).clone()
    flat_m[plan.prune] = False
    assert credit[plan.prune].max() <= credit[flat_m].min()


def test_coactivation_regrowth_uses_the_hebbian_score() -> None:
    w, mask, grad, stats = _setup()
    stats.coact.copy_(torch.rand(mask.shape))
    plan = plan_rewire(PlasticityConfig(regrow="coactivation", min_age=0), w, mask, grad, stats)
    score, absent = stats.coact.float().view(-1), ~mask.view(-1)
    absent[plan.grow] = False
    assert score[plan.grow].min() >= score[absent].max()


def test_observe_gives_bounded_statistics_and_an_ema() -> None:
    n = 8
    stats = UsageStats(n)
    h = torch.rand(3, 5, n) * 1000.0  # large activations must not overflow float16
    w, grad = torch.randn(n, n), torch.randn(n, n)
    stats.observe(h, grad, w, decay=0.5)
    first = stats.coact.float().clone()
    assert torch.isfinite(stats.coact.float()).all() and stats.coact.float().max() <= 1.0 + 1e-3
    assert stats.credit.float().max() <= 1.0 + 1e-3
    stats.observe(torch.zeros_like(h), grad, w, decay=0.5)
    torch.testing.assert_close(stats.coact.float(), first * 0.5, atol=1e-3, rtol=1e-2)


def test_age_saturates_and_absent_connections_have_none() -> None:
    n = 4
    mask = torch.eye(n, dtype=torch.bool)
    stats = UsageStats(n)
    for _ in range(3):
        stats.advance_age(20000, mask)
    assert int(stats.age.max()) == AGE_MAX
    assert torch.all(stats.age[~mask] == 0)
