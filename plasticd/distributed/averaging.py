"""One model out of many: the replicas' weights and input statistics, averaged with one all_reduce.

Every copy of every parameter (``Engine.theta``: live and average, each
(S, ...)) and the input scaler's mean and second moment are packed into one
flat buffer, summed over the group and divided by its size; the result is
copied back *into* the engine's tensors. (torch's
``model_averaging.utils.average_parameters`` does the same sum but rebinds
``p.data``, which would cut the engine's live/average views and its
optimizer off the new storage, so it is not used here.) A ring all_reduce
gives every rank the same bits, so the replicas leave the barrier with
identical weights. Masked connections are 0 on every replica (their
gradient is masked), so their average stays 0 and the mask needs no vote.

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


def _tensors(engine: Engine) -> list[Tensor]:
    return [engine.theta[k] for k in sorted(engine.theta)]


def average(engine: Engine, world_size: int, norm_count_at_sync: int, device: torch.device) -> Averaged:
    """Average ``engine``'s weights (every copy) and input statistics over the group, in place."""
    started = time.perf_counter()
    tensors = _tensors(engine)
    norm = engine.norm
    parts = [t.reshape(-1) for t in tensors] + [norm.mean, norm.var + norm.mean * norm.mean]
    flat = torch.cat([p.to(device, torch.float32) for p in parts])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    d = norm.mean.numel()
    mean, second = flat[offset : offset + d], flat[offset + d : offset + 2 * d]
    norm.mean.copy_(mean)
    norm.var.copy_((second - mean * mean).clamp_min(0.0))
    count = torch.tensor([float(norm.count - norm_count_at_sync)], dtype=torch.float64)
    dist.all_reduce(count)
    norm.count = norm_count_at_sync + int(count.item())
    return Averaged(bytes=flat.numel() * flat.element_size(), ms=(time.perf_counter() - started) * 1e3)


def digest(engine: Engine) -> str:
    """A SHA-256 of the weights (every copy), mask and input statistics: equal on replicas that agree."""
    import hashlib

    h = hashlib.sha256()
    for t in [*_tensors(engine), engine.mask, engine.norm.mean, engine.norm.var]:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
