"""One network shape: rank 0 maintains the averaged model, the other replicas take its result.

Replicas step with ``plasticity=False``, so no replica rewires, grows or
merges on its own and the masks never diverge between barriers. At a
barrier, after averaging, rank 0 runs the maintenance that is due
(``Engine.maintain``: rewiring, a growth check, a merge) and tells the
others, in one float, whether the network changed; only when it changed do
its neuron count and ids (one small object), the weights (every copy), the mask
and the optimizer's state of the live weights (moments and steps: a merge
zeroes the first moments, a rewiring resets the changed entries, growth
gathers them) follow, shapes first, so every receiver has its buffers sized before the
tensors arrive. The Engine hands out the change (``Engine.structure``: a
``Structure`` of sizes and ids, and two flat buffers) and a receiver takes
it through ``Engine.adopt`` (a new mask of the same size as a rewiring
plan, a new size through ``resize`` with each neuron's old position found
by id); this module only moves them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from plasticd.learn.engine import Engine
from plasticd.learn.replication import Structure
from plasticd.learn.reports import Report


@dataclass(frozen=True)
class Shared:
    """What rank 0's maintenance did to the group's network at one barrier."""

    changed: bool
    neurons: int
    bytes: int  # tensors broadcast (0 when nothing changed)
    ms: float
    reports: list[Report]  # rank 0's maintenance reports (empty elsewhere)


def share(engine: Engine, leader: bool, device: torch.device, take_reports: Callable[[], list[Report]] | None = None) -> Shared:
    """Rank 0 maintains, everyone ends with rank 0's network (collective: every replica calls it).

    ``take_reports`` hands rank 0 the reports its maintenance queued (the worker's, which logs and counts
    them; default ``engine.take_reports``)."""
    started = time.perf_counter()
    reports: list[Report] = []
    if leader:
        engine.maintain()
        reports = (take_reports or engine.take_reports)()
    flag = torch.tensor([float(leader and any(r.changed for r in reports))])
    dist.broadcast(flag, src=0)  # a flag, not the header: most barriers change nothing (pickling cost ~4 ms a sync)
    if not flag.item():
        return Shared(False, engine.cfg.neurons, 0, (time.perf_counter() - started) * 1e3, reports)
    header: list[object] = [None]
    tensors: list[torch.Tensor] = []
    if leader:
        mine, tensors = engine.structure()
        header = [mine]
    dist.broadcast_object_list(header, src=0)
    head = header[0]
    assert isinstance(head, Structure)
    tensors = [t.to(device) for t in tensors] if leader else head.buffers(device)
    for t in tensors:
        dist.broadcast(t, src=0)
    if not leader:
        engine.adopt(head, tensors)
    sent = sum(t.numel() * t.element_size() for t in tensors)
    return Shared(True, engine.cfg.neurons, sent, (time.perf_counter() - started) * 1e3, reports)
