"""The network's arithmetic: hand-written backprop equals autograd; copies run independently."""

from __future__ import annotations

import pytest
import torch

from plasticd.model.plastic_net import NetConfig, backward, cross_entropy_grad, forward, init_params


def _autograd_reference(p: dict, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, cfg: NetConfig, ls: float):
    """The same network written with autograd, for the live copy (index 0)."""
    q = {k: v[0].clone().requires_grad_() for k, v in p.items()}
    act = torch.relu if cfg.activation == "relu" else torch.tanh
    u = x @ q["w_in"].T + q["b_in"]
    h = act(u)
    for _ in range(cfg.iterations - 1):
        h = act(u + h @ q["w"].T)
    logits = h @ q["w_out"].T + q["b_out"]
    per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=ls)
    (per_sample * weight).sum().backward()
    return logits.detach(), {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in q.items()}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("iterations", [1, 2, 5])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_manual_backward_matches_autograd(activation: str, iterations: int, label_smoothing: float) -> None:
    cfg = NetConfig(input_dim=7, output_dim=3, neurons=9, iterations=iterations, activation=activation)
    params, _ = init_params(cfg, torch.Generator().manual_seed(3), copies=2)
    params = {k: v.double() for k, v in params.items()}
    x = torch.randn(5, 7, dtype=torch.double)
    y = torch.tensor([0, 2, 1, 1, 0])
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.double)  # sample 2 is unlabelled
    trace = forward(params, x, cfg)
    dlogits = cross_entropy_grad(trace.logits[0], y, weight, label_smoothing)
    grads = {k: torch.empty_like(v[0]) for k, v in params.items()}
    backward({k: v[0] for k, v in params.items()}, trace, dlogits, grads, cfg)
    ref_logits, ref_grads = _autograd_reference(params, x, y, weight, cfg, label_smoothing)
    torch.testing.assert_close(trace.logits[0], ref_logits)
    for name in params:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=f"gradient of {name}")


def test_batch_of_one_uses_the_outer_product_path() -> None:
    cfg = NetConfig(input_dim=6, output_dim=3, neurons=5, iterations=3)
    params, _ = init_params(cfg, torch.Generator().manual_seed(1), copies=1)
    params = {k: v.double() for k, v in params.items()}
    x, y = torch.randn(1, 6, dtype=torch.double), torch.tensor([2])
    trace = forward(params, x, cfg)
    grads = {k: torch.empty_like(v[0]) for k, v in params.items()}
    backward({k: v[0] for k, v in params.items()}, trace, cross_entropy_grad(trace.logits[0], y, None), grads, cfg)
    _, ref = _autograd_reference(params, x, y, torch.ones(1, dtype=torch.double), cfg, 0.0)
    torch.testing.assert_close(grads["w_in"], ref["w_in"])


def test_copies_are_computed_independently() -> None:
    cfg = NetConfig(input_dim=4, output_dim=2, neurons=6, iterations=4)
    params, _ = init_params(cfg, torch.Generator().manual_seed(0), copies=2)
    params["w"][1].mul_(0.5)  # make the second copy different
    x = torch.randn(3, 4)
    both = forward(params, x, cfg).logits
    for c in range(2):
        alone = forward({k: v[c : c + 1] for k, v in params.items()}, x, cfg).logits[0]
        torch.testing.assert_close(both[c], alone)


def test_init_respects_the_mask_and_sparsity() -> None:
    cfg = NetConfig(neurons=200, sparsity=0.7)
    params, mask = init_params(cfg, torch.Generator().manual_seed(0), copies=2)
    assert mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.3) < 0.02
    for c in range(2):
        assert torch.all(params["w"][c][~mask] == 0)
    torch.testing.assert_close(params["w"][0], params["w"][1])


def test_cross_entropy_grad_sums_over_weighted_samples() -> None:
    logits = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    y = torch.tensor([1, 0, 4, 2])
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.double)
    (torch.nn.functional.cross_entropy(logits, y, reduction="none") * weight).sum().backward()
    torch.testing.assert_close(cross_entropy_grad(logits.detach(), y, weight), logits.grad)
    assert torch.all(cross_entropy_grad(logits.detach(), y, weight)[1] == 0)
