"""The hand-called fused optimizers compute exactly what torch.optim's fused implementations compute."""

from __future__ import annotations

import pytest
import torch

from plasticd.model.optim import OptimConfig, build_optimizer, per_step


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in ((7, 5), (7,), (7, 7), (3, 7), (3,))]


def _reference(kind: str, params: list[torch.Tensor], cfg: OptimConfig) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_fused_optimizers_are_bit_identical_to_torch_optim(kind: str) -> None:
    cfg = OptimConfig(kind=kind, lr=3e-3, betas=(0.9, 0.99), momentum=0.9 if kind == "sgd" else 0.0, weight_decay=1e-3)
    ours, theirs = _params(0), _params(0)
    opt, ref = build_optimizer(ours, cfg), _reference(kind, theirs, cfg)
    assert not isinstance(opt, torch.optim.Optimizer)
    g = torch.Generator().manual_seed(1)
    for step, samples in enumerate([1, 1, 4, 1, 16, 2, 1, 1]):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        lr = cfg.lr * (1.0 + 0.1 * step)  # a changing rate (the drift boost), batch-scaled betas
        per_step(opt, cfg, lr, samples)
        per_step(ref, cfg, lr, samples)  # type: ignore[arg-type]
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
            for slot, value in ref.state[b].items():
                assert torch.equal(opt.state[a][slot], value), slot
