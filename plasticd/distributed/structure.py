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
tensors arrive. A receiver applies the change through the Engine's own
doors: a new mask of the same size as a rewiring plan (``apply_rewire``:
optimizer entries and usage statistics of changed connections reset), a new
size through ``resize`` with the old position of each neuron found by id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from plasticd.learn.engine import Engine
from plasticd.learn.reports import Report
from plasticd.model.plasticity import RewirePlan


@dataclass(frozen=True)
class Shared:
    """What rank 0's maintenance did to the group's network at one barrier."""

    changed: bool
    neurons: int
    bytes: int  # tensors broadcast (0 when nothing changed)
    ms: float
    reports: list[Report]  # rank 0's maintenance reports (empty elsewhere)


def share(engine: Engine, leader: bool, device: torch.device) -> Shared:
    """Rank 0 maintains, everyone ends with rank 0's network (collective: every replica calls it)."""
    started = time.perf_counter()
    reports: list[Report] = []
    if leader:
        engine.maintain()
        reports = engine.take_reports()
    flag = torch.tensor([float(leader and any(r.changed for r in reports))])
    dist.broadcast(flag, src=0)  # a flag, not the header: most barriers change nothing (pickling cost ~4 ms a sync)
    if not flag.item():
        return Shared(False, engine.cfg.neurons, 0, (time.perf_counter() - started) * 1e3, reports)
    header: list[object] = [None]
    if leader:
        header = [
            {
                "changed": True,
                "shapes": {k: tuple(v.shape) for k, v in engine.theta.items()},
                "neuron_ids": engine.neuron_ids,
                "neuron_born": engine.neuron_born,
                "next_neuron_id": engine.next_neuron_id,
                "slots": _slots(engine),
            }
        ]
    dist.broadcast_object_list(header, src=0)
    head = header[0]
    assert isinstance(head, dict)
    sent = 0
    if head["changed"]:
        names = sorted(head["shapes"])
        theta = {k: (engine.theta[k] if leader else torch.empty(head["shapes"][k])).to(device) for k in names}
        n = len(head["neuron_ids"])
        mask = (engine.mask if leader else torch.empty((n, n), dtype=torch.bool)).to(device, torch.uint8)
        for k in names:
            dist.broadcast(theta[k], src=0)
            sent += theta[k].numel() * theta[k].element_size()
        dist.broadcast(mask, src=0)
        sent += mask.numel()
        if not leader:
            adopt(engine, {k: v.to(engine.device) for k, v in theta.items()}, mask.to(engine.device, torch.bool), head)
        sent += _share_slots(engine, leader, head["slots"], device)
    return Shared(head["changed"], engine.cfg.neurons, sent, (time.perf_counter() - started) * 1e3, reports)


def _slots(engine: Engine) -> list[tuple[str, str, tuple[int, ...]]]:
    """(parameter, slot, shape) of every tensor in the optimizer's state of the live weights, in a fixed order."""
    out = []
    for name in sorted(engine.live):
        state = engine.optimizer.state.get(engine.live[name], {})
        out += [(name, slot, tuple(v.shape)) for slot, v in sorted(state.items()) if isinstance(v, Tensor)]
    return out


def _share_slots(engine: Engine, leader: bool, slots: list, device: torch.device) -> int:
    """Rank 0's optimizer state into every replica's (after ``adopt`` sized the receivers' parameters)."""
    if not slots:
        return 0
    if leader:
        flat = torch.cat([engine.optimizer.state[engine.live[n]][slot].reshape(-1).float() for n, slot, _ in slots]).to(device)
    else:
        flat = torch.empty(sum(int(torch.Size(shape).numel()) for _, _, shape in slots), device=device)
    dist.broadcast(flat, src=0)
    if not leader:
        offset = 0
        for name, slot, shape in slots:
            p = engine.live[name]
            size = int(torch.Size(shape).numel())
            value = flat[offset : offset + size].view(shape).to(p.device)
            offset += size
            old = engine.optimizer.state[p].get(slot)
            engine.optimizer.state[p][slot] = (value.to(old.dtype) if isinstance(old, Tensor) else value).clone()
    return flat.numel() * flat.element_size()


def adopt(engine: Engine, theta: dict[str, Tensor], mask: Tensor, head: dict) -> None:
    """Make ``engine``'s network rank 0's: weights ``theta`` (every copy), ``mask``, neuron ids and birth times."""
    ids = torch.as_tensor(head["neuron_ids"], dtype=torch.int64)
    if mask.shape == engine.mask.shape and torch.equal(ids, engine.neuron_ids):
        before = engine.mask.reshape(-1)
        after = mask.reshape(-1)
        prune = torch.nonzero(before & ~after).flatten()
        grow = torch.nonzero(after & ~before).flatten()
        if prune.numel() or grow.numel():
            engine.apply_rewire(RewirePlan(prune=prune, grow=grow, active_before=int(before.sum()), eligible=0))
        for k, v in engine.theta.items():
            v.copy_(theta[k])
    else:
        old = engine.neuron_ids.tolist()
        where = {nid: i for i, nid in enumerate(old)}
        index = torch.tensor([where.get(int(nid), -1) for nid in ids], dtype=torch.int64)
        engine.resize(theta, mask, index)
    engine.neuron_ids = ids.clone()
    engine.neuron_born = torch.as_tensor(head["neuron_born"], dtype=torch.int64).clone()
    engine.next_neuron_id = int(head["next_neuron_id"])
