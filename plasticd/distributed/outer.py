"""The outer optimizer (``replicas.combine = "outer"``): Nesterov momentum on the group's averaged change.

DiLoCo (Douillard et al., arXiv 2311.08105) treats what the replicas learned
between two syncs as one gradient of the *outer* problem: with ``since`` the
weights agreed at the last sync and ``mean`` the replicas' weights averaged
now, the pseudo-gradient is ``g = since - mean``. An outer SGD step with
Nesterov momentum ``mu`` and rate ``lr`` then gives the next agreed weights::

    m    <- mu * m + g
    new  =  since - lr * (g + mu * m)

``lr = 1, mu = 0`` is the mean (local SGD); ``"sum"`` is ``lr = W, mu = 0``.
The momentum carries the direction of earlier syncs into this one, so a
large H (few syncs) keeps learning as far per sample as one process without
the overshoot of adding up every replica's long excursion. Every replica
holds the same ``m`` (the same inputs in the same order), so the replicas
leave the sync with identical weights. The momentum starts again at zero
when the network changes size (growth, a merge) and at every restart (it is
not in the checkpoint: a restart loses a few syncs of direction, nothing
else); where the change is exactly 0 (masked connections, whose gradient is
masked) the momentum is zeroed, so a connection rewiring pruned stays 0.

The sum goes through the Engine's own door (``Engine.combine`` of the
group's sum, with the weights' part set to W x the new weights), so the
Engine stays the only writer of its state.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor

from plasticd.distributed.averaging import Averaged
from plasticd.learn.engine import Engine


class OuterOptimizer:
    """Nesterov momentum on the pseudo-gradient, one step per sync (the same on every replica)."""

    def __init__(self, lr: float, momentum: float) -> None:
        self.lr, self.momentum = lr, momentum
        self.buffer: Tensor | None = None

    def step(self, since: Tensor, mean: Tensor) -> Tensor:
        """The next agreed weights from the last agreed ones and the replicas' mean (flat, same length)."""
        g = since - mean
        if self.buffer is None or self.buffer.shape != g.shape:
            self.buffer = torch.zeros_like(g)  # first sync, or the network changed size: no direction carried over
        buf = self.buffer
        buf.mul_(self.momentum).add_(g)
        buf.masked_fill_(g == 0, 0.0)  # masked connections (and exactly unchanged entries) carry no momentum
        return since - self.lr * (g + self.momentum * buf)

    def average(self, engine: Engine, world_size: int, norm_count_at_sync: int, device: torch.device, since: Tensor) -> Averaged:
        """The group's sync with the outer step on the weights; moments and scaler averaged (collective)."""
        started = time.perf_counter()
        flat = engine.payload(device)
        dist.all_reduce(flat)
        count = torch.tensor([float(engine.counts().inputs - norm_count_at_sync)], dtype=torch.float64)
        dist.all_reduce(count)
        n = since.numel()
        new = self.step(since, flat[:n] / world_size)
        flat[:n] = new * world_size  # combine takes the group's sum and divides by W (since=None: the mean)
        engine.combine(flat, world_size, None, inputs=norm_count_at_sync + int(count.item()))
        return Averaged(bytes=flat.numel() * flat.element_size(), ms=(time.perf_counter() - started) * 1e3)
