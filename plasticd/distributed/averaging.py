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
zeros torch would have made at its first step (``moments``), so every
replica packs the same buffer. Step counts are agreed in ``clocks``.

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
from plasticd.model.optim import PlainSGD

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class Averaged:
    """What one averaging cost."""

    bytes: int  # this replica's payload (the all_reduce moves about 2x this per rank in a ring)
    ms: float


def _tensors(engine: Engine) -> list[Tensor]:
    return [engine.theta[k] for k in sorted(engine.theta)]


def moments(engine: Engine) -> list[Tensor]:
    """The optimizer's per-element moments of every live parameter, made (zeros) where it has not stepped yet.

    The zeros are what torch's Adam and SGD make at their first step (for SGD with momentum and no dampening
    a zero buffer gives the same first step as none), so making them early changes nothing.
    """
    opt = engine.optimizer
    if isinstance(opt, PlainSGD):
        return []
    adam = engine.optim_config.kind in ("adam", "adamw")
    out = []
    for name in sorted(engine.live):
        p = engine.live[name]
        state = opt.state[p]
        if adam:
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                for slot in ADAM_MOMENTS:
                    state[slot] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out += [state[slot] for slot in ADAM_MOMENTS]
        else:
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append(state["momentum_buffer"])
    return out


def flat_weights(engine: Engine, device: torch.device) -> Tensor:
    """The weights (every copy) as one flat buffer: what the next ``average`` measures each replica's change from."""
    return torch.cat([t.reshape(-1).to(device, torch.float32) for t in _tensors(engine)])


def average(
    engine: Engine, world_size: int, norm_count_at_sync: int, device: torch.device, since: Tensor | None = None
) -> Averaged:
    """Combine ``engine``'s weights (every copy), optimizer moments and input statistics over the group, in place.

    ``since`` (``flat_weights`` at the last sync, identical on every replica): the weights become it plus every
    replica's change (``replicas.combine = "sum"``); None: the replicas' mean.
    """
    started = time.perf_counter()
    weights = _tensors(engine)
    tensors = weights + moments(engine)
    norm = engine.norm
    parts = [t.reshape(-1) for t in tensors] + [norm.mean, norm.var + norm.mean * norm.mean]
    flat = torch.cat([p.to(device, torch.float32) for p in parts])
    dist.all_reduce(flat)
    n = sum(t.numel() for t in weights)
    if since is not None:
        assert since.numel() == n, f"the agreed weights have {since.numel()} entries, the model {n}"
        flat[:n].sub_(since, alpha=world_size - 1)
        flat[n:].div_(world_size)
    else:
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
    """A SHA-256 of the weights (every copy), optimizer state, mask, input statistics and sample clocks:
    equal on replicas that agree."""
    import hashlib

    h = hashlib.sha256()
    slots = [v for name in sorted(engine.live) for _, v in sorted(engine.optimizer.state.get(engine.live[name], {}).items())]
    for t in [*_tensors(engine), *slots, engine.mask, engine.norm.mean, engine.norm.var]:
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if isinstance(t, Tensor) else repr(t).encode())
    m = engine.metrics
    clocks = (m.seen, m.labelled, m.correct, m.trained, engine.steps, engine.clock.age, engine.drift.alarms)
    h.update(repr(clocks).encode())
    return h.hexdigest()
