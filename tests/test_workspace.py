"""The per-sample path's workspace computes exactly what fresh buffers compute."""

from __future__ import annotations

import pytest
import torch

from plasticd.model.plastic_net import NetConfig, Workspace, backward, cross_entropy_grad, forward, init_params


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("copies", "rows", "iterations"), [(1, 1, 5), (2, 1, 5), (2, 5, 3), (2, 1, 1)])
def test_forward_and_backward_through_a_workspace_are_bit_identical(
    activation: str, copies: int, rows: int, iterations: int
) -> None:
    cfg = NetConfig(input_dim=6, output_dim=4, neurons=9, iterations=iterations, activation=activation)
    theta, _ = init_params(cfg, torch.Generator().manual_seed(0), copies=copies)
    live = {k: v[0] for k, v in theta.items()}
    ws = Workspace()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # reused buffers: the second and third pass must not see the first's values
        x = torch.randn((rows, 6), generator=g)
        labels = torch.randint(0, 4, (rows,), generator=g)
        plain, fast = forward(theta, x, cfg), forward(theta, x, cfg, ws)
        assert torch.equal(plain.h, fast.h) and torch.equal(plain.logits, fast.logits)
        dlogits = cross_entropy_grad(plain.logits[0], labels, None)
        want = {k: torch.full_like(v, float("nan")) for k, v in live.items()}
        got = {k: torch.full_like(v, float("nan")) for k, v in live.items()}
        backward(live, plain, dlogits, want, cfg)
        backward(live, fast, dlogits, got, cfg, ws)
        for k in want:
            assert torch.equal(want[k], got[k]), k
        for v in theta.values():
            v.add_(0.01)  # the weights change in place between steps, as the optimizer changes them


def test_a_workspace_is_not_used_for_large_batches() -> None:
    cfg = NetConfig(input_dim=3, output_dim=2, neurons=4)
    theta, _ = init_params(cfg, torch.Generator().manual_seed(0))
    ws = Workspace(max_rows=4)
    small, large = forward(theta, torch.ones(4, 3), cfg, ws), forward(theta, torch.ones(5, 3), cfg, ws)
    assert small.h.data_ptr() == forward(theta, torch.zeros(4, 3), cfg, ws).h.data_ptr()  # reused
    assert large.h.data_ptr() != forward(theta, torch.ones(5, 3), cfg, ws).h.data_ptr()  # fresh each time
