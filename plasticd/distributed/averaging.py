"""One model out of many: the replicas' weights, optimizer moments and input statistics, combined with one all_reduce.

Every copy of every parameter (``Engine.theta``: live and average, each
(S, ...)), the optimizer's per-element moments of the live weights (Adam's
``exp_avg`` and ``exp_avg_sq``, SGD's momentum buffer) and the input
scaler's mean and second moment are packed into one flat buffer and summed over the group. The moments and the scaler are then
divided by the group's size (their mean). The weights, with
``replicas.combine = "sum"`` (the default), become the weights agreed at
the last sync plus *every* replica's change since (sum - (W-1)·agreed): each
replica's optimizer steps reach the one model once, as if one process had
taken them all in turn (on slightly stale weights), so the group learns as
far per sample as one process. The mean (``"mean"``, local SGD's model
averaging) moves the model by the *average* change, about 1/W as far per
sample: ``plasticd bench scale`` measured it a few points of prequential
accuracy behind one replica early in a stream. The result is copied back
*into* the engine's tensors. (torch's
``model_averaging.utils.average_parameters`` does the same sum but rebinds
``p.data``, which would cut the engine's live/average views and its
optimizer off the new storage, so it is not used here.) A ring all_reduce
gives every rank the same bits, so the replicas leave the barrier with
identical weights. Masked connections are 0 on every replica (their
gradient is masked), so their average stays 0 and the mask needs no vote.
A replica that has not stepped yet has no optimizer state: it gets the
zeros torch would have made at its first step, so every replica packs the
same buffer. Step counts are agreed in ``clocks``. The Engine packs and
unpacks the buffer (``Engine.payload`` / ``Engine.combine``, the layout in
``learn/replication.py``); this module only moves it.

The scaler is pooled, not just averaged: mean = mean of means, variance =
mean of (var + mean²) - mean², so spread between the replicas' means counts
as variance; its sample count is the last agreed count plus everyone's new
samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from plasticd.learn.engine import Engine


@dataclass(frozen=True)
class Averaged:
    """What one averaging cost."""

    bytes: int  # this replica's payload (the all_reduce moves about 2x this per rank in a ring)
    ms: float


def flat_weights(engine: Engine, device: torch.device) -> Tensor:
    """The weights (every copy) as one flat buffer: what the next ``average`` measures each replica's change from."""
    return engine.flat_weights(device)


def average(
    engine: Engine, world_size: int, norm_count_at_sync: int, device: torch.device, since: Tensor | None = None
) -> Averaged:
    """Combine ``engine``'s weights (every copy), optimizer moments and input statistics over the group, in place.

    ``since`` (``flat_weights`` at the last sync, identical on every replica): the weights become it plus every
    replica's change (``replicas.combine = "sum"``); None: the replicas' mean.
    """
    started = time.perf_counter()
    flat = engine.payload(device)
    dist.all_reduce(flat)
    count = torch.tensor([float(engine.counts().inputs - norm_count_at_sync)], dtype=torch.float64)
    dist.all_reduce(count)
    engine.combine(flat, world_size, since, inputs=norm_count_at_sync + int(count.item()))
    return Averaged(bytes=flat.numel() * flat.element_size(), ms=(time.perf_counter() - started) * 1e3)


def digest(engine: Engine) -> str:
    """A SHA-256 of the weights (every copy), optimizer state, mask, input statistics and sample clocks:
    equal on replicas that agree."""
    return engine.digest()
