"""What replicas exchange, as flat tensors and plain data: the Engine hands it out and takes it back.

``distributed/`` moves what this module packs and never touches the Engine's
parts itself: the Engine's replication doors (``counts``, ``news``, ``fold``,
``payload``, ``combine``, ``structure``, ``adopt``, ``digest``) call the
functions here with the parts they concern, so the Engine stays the only
writer of learning state. Nothing here knows about process groups.

* ``payload`` / ``combine``: every weight copy, the optimizer's per-element
  moments of the live weights and the input scaler's mean and second moment in
  one flat float32 buffer, and back (sum of the group's buffers in,
  ``replicas.combine`` applied, copied *into* the existing tensors so views and
  the optimizer keep their storage).
* ``news`` / ``fold_metrics``: the counts kept in learned samples (metrics,
  optimizer steps, the average's clock, drift alarms, copy-choice scores) that a
  replica learned since the last agreement, and another replica's folded in.
* ``Structure``: what a leader's maintenance did to the network (sizes, neuron
  ids, optimizer slots) and its tensors as two flat buffers (weights and
  optimizer state as float32, the mask as uint8).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from plasticd.learn.parts import Parts
from plasticd.learn.prequential import PrequentialMetrics
from plasticd.model.optim import Optimizer, PlainSGD
from plasticd.model.plasticity import RewirePlan

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class Counts:
    """The Engine's counts in learned samples at one moment (what "since the last agreement" is measured from)."""

    seen: int
    labelled: int
    correct: int
    trained: int
    steps: int
    age: int  # the weight average's clock
    alarms: int
    inputs: int  # samples the input scaler has seen


@dataclass(frozen=True)
class Folded:
    """What one ``Engine.fold`` took in from the other replicas."""

    trained: int  # labelled samples the others learned since the last agreement
    alarms: int  # drift alarms raised in the group since the last agreement
    reacted: bool  # the drift reaction table did something on the group's model


@dataclass(frozen=True)
class Structure:
    """The network after maintenance, for replicas that did not run it: plain data plus flat tensors."""

    shapes: dict[str, tuple[int, ...]]  # every theta entry, copy axis included
    neuron_ids: list[int]
    neuron_born: list[int]
    next_neuron_id: int
    slots: list[tuple[str, str, tuple[int, ...]]]  # (parameter, slot, shape) of the live weights' optimizer state

    @property
    def neurons(self) -> int:
        return len(self.neuron_ids)

    def buffers(self, device: torch.device) -> list[Tensor]:
        """Empty receive buffers: weights and optimizer state (float32), mask (uint8)."""
        floats = sum(int(torch.Size(s).numel()) for s in self.shapes.values())
        floats += sum(int(torch.Size(s).numel()) for _, _, s in self.slots)
        n = self.neurons
        return [torch.empty(floats, device=device), torch.empty((n, n), dtype=torch.uint8, device=device)]


def moments(optimizer: Optimizer, kind: str, live: dict[str, Tensor]) -> list[Tensor]:
    """The optimizer's per-element moments of every live parameter, made (zeros) where it has not stepped yet.

    The zeros are what torch's Adam and SGD make at their first step (for SGD with momentum and no dampening
    a zero buffer gives the same first step as none), so making them early changes nothing.
    """
    if isinstance(optimizer, PlainSGD):
        return []
    adam = kind in ("adam", "adamw")
    out = []
    for name in sorted(live):
        p = live[name]
        state = optimizer.state[p]
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


def weights(theta: dict[str, Tensor]) -> list[Tensor]:
    return [theta[k] for k in sorted(theta)]


def flat(tensors: list[Tensor], device: torch.device) -> Tensor:
    return torch.cat([t.reshape(-1).to(device, torch.float32) for t in tensors])


def combine(
    summed: Tensor, tensors: list[Tensor], n_weights: int, mean: Tensor, var: Tensor, world_size: int, since: Tensor | None
) -> None:
    """Write the group's sum of ``payload`` buffers back: weights by ``since`` (sum of changes) or the mean,
    moments and scaler statistics by the mean (variance pooled: mean of var + mean², minus mean²)."""
    if since is not None:
        assert since.numel() == n_weights, f"the agreed weights have {since.numel()} entries, the model {n_weights}"
        summed[:n_weights].sub_(since, alpha=world_size - 1)
        summed[n_weights:].div_(world_size)
    else:
        summed.div_(world_size)
    offset = 0
    for t in tensors:
        t.copy_(summed[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    d = mean.numel()
    m, second = summed[offset : offset + d], summed[offset + d : offset + 2 * d]
    mean.copy_(m)
    var.copy_((second - m * m).clamp_min(0.0))


def news(metrics: PrequentialMetrics, since: Counts, now: Counts, pending: int, last_alarm_at: int, choice: np.ndarray) -> dict:
    """What one replica learned since ``since`` (plain data for an all_gather_object)."""
    labelled = now.labelled - since.labelled
    return {
        "seen": now.seen - since.seen,
        "labelled": labelled,
        "correct": now.correct - since.correct,
        "trained": now.trained - since.trained,
        "outcomes": metrics.recent_correct(labelled).astype(np.bool_),  # at most the window
        "losses": metrics.recent_loss(labelled).astype(np.float32),
        "steps": now.steps - since.steps,
        "age": now.age - since.age,
        "pending": pending,
        "alarms": now.alarms - since.alarms,
        "last_alarm_at": last_alarm_at,
        "choice": choice,
    }


def fold_metrics(metrics: PrequentialMetrics, other: dict) -> None:
    """Count another replica's prequential outcomes into ``metrics`` (its window: the latest ones)."""
    kept = other["outcomes"]
    metrics.update(
        kept, other["losses"].astype(np.float64), unlabelled=other["seen"] - other["labelled"], trained=other["trained"]
    )
    dropped = other["labelled"] - kept.size  # more than a window since the last agreement: counted, not kept
    if dropped:
        metrics.seen += dropped
        metrics.labelled += dropped
        metrics.correct += other["correct"] - int(np.count_nonzero(kept))


def add_steps(optimizer: Optimizer, live: dict[str, Tensor], more: int) -> None:
    """``more`` optimizer steps into the per-parameter step counts (Adam's bias correction follows the group)."""
    for p in live.values():
        step = optimizer.state.get(p, {}).get("step")
        if isinstance(step, Tensor):
            step.add_(more)
        elif step is not None:
            optimizer.state[p]["step"] = step + more


def slots_of(optimizer: Optimizer, live: dict[str, Tensor]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(parameter, slot, shape) of every tensor in the optimizer's state of the live weights, in a fixed order."""
    out = []
    for name in sorted(live):
        state = optimizer.state.get(live[name], {})
        out += [(name, slot, tuple(v.shape)) for slot, v in sorted(state.items()) if isinstance(v, Tensor)]
    return out


def slot_tensors(optimizer: Optimizer, live: dict[str, Tensor], slots: list[tuple[str, str, tuple[int, ...]]]) -> list[Tensor]:
    return [optimizer.state[live[n]][slot] for n, slot, _ in slots]


def write_slots(optimizer: Optimizer, live: dict[str, Tensor], slots: list, values: Tensor) -> None:
    """The optimizer state of the live weights from a flat buffer laid out as ``slots``."""
    offset = 0
    for name, slot, shape in slots:
        p = live[name]
        size = int(torch.Size(shape).numel())
        value = values[offset : offset + size].view(shape).to(p.device)
        offset += size
        old = optimizer.state[p].get(slot)
        optimizer.state[p][slot] = (value.to(old.dtype) if isinstance(old, Tensor) else value).clone()


def digest(tensors: list[object], clocks: tuple[int, ...]) -> str:
    """A SHA-256 of tensors (or reprs of other values) and counts: equal on replicas that agree."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if isinstance(t, Tensor) else repr(t).encode())
    h.update(repr(clocks).encode())
    return h.hexdigest()


class Replicating(Parts):
    """The replication doors (mixed into ``Engine``): counts and their fold, the payload, the structure, the digest."""

    def counts(self) -> Counts:
        """Every count the engine keeps in learned samples, now (what ``news`` and ``fold`` measure from)."""
        m = self.metrics
        return Counts(m.seen, m.labelled, m.correct, m.trained, self.steps, self.clock.age, self.drift.alarms, self.norm.count)

    def news(self, since: Counts) -> dict:
        """What this engine learned since ``since``, as plain data for the other replicas (py)."""
        return news(self.metrics, since, self.counts(), self.clock.pending, self.drift.last_alarm_at, self.choice.state_dict())

    def fold(self, everyone: list[dict], rank: int, since: Counts) -> Folded:
        """Make every count the group's: ``everyone``'s ``news`` (this engine's at ``rank``) folded in from ``since``.

        Metrics (window: own outcomes first, then the others' in rank order), optimizer steps (Adam's too), the
        average's clock (age summed, pending the largest), the copy choice (mean score); when any replica alarmed,
        the alarm count and last alarm become the group's, the reaction table is applied (``react("group")``) and
        the detector rebuilt from the group's window, so no replica alarms again for that change.
        """
        others = [o for r, o in enumerate(everyone) if r != rank]
        for other in others:
            fold_metrics(self.metrics, other)
        more_steps = sum(o["steps"] for o in others)
        self.steps += more_steps
        add_steps(self.optimizer, self.live, more_steps)
        self.clock.age = since.age + sum(o["age"] for o in everyone)
        self.clock.pending = max(o["pending"] for o in everyone)
        if self.choice.enabled:
            self.choice.load_state_dict(np.mean([o["choice"] for o in everyone], axis=0))
        alarms = sum(o["alarms"] for o in everyone)
        reacted = False
        if alarms:
            d = self.drift
            d.alarms = since.alarms + alarms
            d.last_alarm_at = max(o["last_alarm_at"] for o in everyone)
            reacted = bool(self.react("group").actions)
            d.rebuild(1.0 - self.metrics.recent_correct(self.metrics.window), self.metrics.trained - d.last_alarm_at)
        return Folded(trained=sum(o["trained"] for o in others), alarms=alarms, reacted=reacted)

    def _shared(self) -> list[Tensor]:
        return weights(self.theta) + moments(self.optimizer, self.optim_config.kind, self.live)

    def payload(self, device: torch.device) -> Tensor:
        """Every weight copy, the optimizer's moments of the live weights and the scaler's mean and second moment,
        as one flat float32 buffer on ``device`` (moments are made, as zeros, where the optimizer has not stepped)."""
        norm = self.norm
        return flat([*self._shared(), norm.mean, norm.var + norm.mean * norm.mean], device)

    def combine(self, summed: Tensor, world_size: int, since: Tensor | None, inputs: int) -> None:
        """Take the group's sum of ``payload`` buffers: weights ``since`` plus every change (None: the mean), the
        moments and scaler statistics averaged, the scaler's sample count ``inputs``."""
        n_weights = sum(t.numel() for t in self.theta.values())
        combine(summed, self._shared(), n_weights, self.norm.mean, self.norm.var, world_size, since)
        self.norm.count = inputs

    def flat_weights(self, device: torch.device) -> Tensor:
        """The weights (every copy) as one flat float32 buffer (what ``combine`` measures changes from)."""
        return flat(weights(self.theta), device)

    def structure(self) -> tuple[Structure, list[Tensor]]:
        """The network as replicas that did not maintain it need it: sizes and ids, and two flat buffers
        (weights of every copy then the live weights' optimizer state, float32; the mask, uint8)."""
        slots = slots_of(self.optimizer, self.live)
        head = Structure(
            {k: tuple(v.shape) for k, v in self.theta.items()}, self.neuron_ids.tolist(), self.neuron_born.tolist(),
            self.next_neuron_id, slots,
        )  # fmt: skip
        floats = flat(weights(self.theta) + slot_tensors(self.optimizer, self.live, slots), self.device)
        return head, [floats, self.mask.to(torch.uint8)]

    def adopt(self, head: Structure, tensors: list[Tensor]) -> None:
        """Become the network ``structure()`` handed out: a new mask of the same size as a rewiring plan
        (``apply_rewire``), a new size through ``resize`` with each neuron's old position found by id; then the
        ids, birth times and the optimizer state of the live weights."""
        floats, mask = tensors[0].to(self.device), tensors[1].to(self.device, torch.bool)
        theta, offset = {}, 0
        for k in sorted(head.shapes):
            size = int(torch.Size(head.shapes[k]).numel())
            theta[k] = floats[offset : offset + size].view(head.shapes[k]).clone()
            offset += size
        ids = torch.tensor(head.neuron_ids, dtype=torch.int64)
        if mask.shape == self.mask.shape and torch.equal(ids, self.neuron_ids):
            before, after = self.mask.reshape(-1), mask.reshape(-1)
            prune = torch.nonzero(before & ~after).flatten()
            grow = torch.nonzero(after & ~before).flatten()
            if prune.numel() or grow.numel():
                self.apply_rewire(RewirePlan(prune=prune, grow=grow, active_before=int(before.sum()), eligible=0))
            for k, v in self.theta.items():
                v.copy_(theta[k])
        else:
            where = {nid: i for i, nid in enumerate(self.neuron_ids.tolist())}
            self.resize(theta, mask, torch.tensor([where.get(nid, -1) for nid in head.neuron_ids], dtype=torch.int64))
        self.neuron_ids = ids
        self.neuron_born = torch.tensor(head.neuron_born, dtype=torch.int64)
        self.next_neuron_id = head.next_neuron_id
        write_slots(self.optimizer, self.live, head.slots, floats[offset:])

    def digest(self) -> str:
        """A SHA-256 of the weights, optimizer state, mask, input statistics and sample clocks: equal on replicas
        that agree."""
        slots = [v for name in sorted(self.live) for _, v in sorted(self.optimizer.state.get(self.live[name], {}).items())]
        tensors = [*weights(self.theta), *slots, self.mask, self.norm.mean, self.norm.var]
        m = self.metrics
        return digest(tensors, (m.seen, m.labelled, m.correct, m.trained, self.steps, self.clock.age, self.drift.alarms))
