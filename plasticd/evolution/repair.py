"""Neural repair: find dead, saturated or exploding neurons and replace them along the gradient.

Found from what the network already keeps, its recent-sample buffer, in one
forward pass of every copy:

* dead: never active on the buffer at any iteration, in any copy (relu: it
  gets no gradient again, ever);
* saturated: |h| > 0.99 on at least 95% of the buffer's samples at the last
  iteration (tanh: its slope is ~0, it has stopped learning);
* exploding: a non-finite or an |h| above ``EXPLODING`` (1e3) anywhere.

Repair retires the faulty neurons (``model/growth.retire`` through
``Engine.resize``: exact for dead ones on the buffer's inputs) and grows as
many back by GradMax (``Engine.grow_neurons``: zero fan-out, fan-in along the
gradient for relu; exact), so the size stays and the new neurons learn from
the next step. Run as maintenance (``evolution.repair_every``) on every
candidate; each pass that finds something is reported with what it found.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plasticd.learn.engine import Engine
from plasticd.model.growth import retire
from plasticd.model.plastic_net import forward

EXPLODING = 1e3
SATURATED = 0.99
SATURATED_SHARE = 0.95


@dataclass(frozen=True)
class Diagnosis:
    dead: tuple[int, ...]  # neuron ids
    saturated: tuple[int, ...]
    exploding: tuple[int, ...]

    @property
    def faulty(self) -> int:
        return len(self.dead) + len(self.saturated) + len(self.exploding)

    def to_dict(self) -> dict[str, list[int]]:
        return {"dead": list(self.dead), "saturated": list(self.saturated), "exploding": list(self.exploding)}


@dataclass(frozen=True)
class RepairReport:
    found: Diagnosis
    retired: int
    regrown: int  # by GradMax
    neurons: int  # after the repair

    def to_dict(self) -> dict:
        return {**self.found.to_dict(), "retired": self.retired, "regrown": self.regrown, "neurons": self.neurons}


@torch.no_grad()
def diagnose(engine: Engine) -> tuple[Diagnosis, torch.Tensor]:
    """What is wrong with which neuron, by id, and the (N,) bool mask of faulty positions (nothing without a buffer)."""
    n = engine.cfg.neurons
    if len(engine.buffer) == 0:
        return Diagnosis((), (), ()), torch.zeros(n, dtype=torch.bool)
    xb, _ = engine.buffer.contents()
    h = forward(engine.theta, engine.norm(xb), engine.cfg).h  # (K, S, B, N)
    finite = torch.isfinite(h).all(dim=(0, 1, 2))
    peak = torch.nan_to_num(h.abs(), nan=torch.inf).amax(dim=(0, 1, 2))  # (N,)
    exploding = ~finite | (peak > EXPLODING)
    dead = (peak == 0.0) & ~exploding
    saturated = ((h[-1].abs() > SATURATED).float().mean(dim=(0, 1)) >= SATURATED_SHARE) & ~exploding & ~dead
    if engine.cfg.activation == "relu":
        saturated = torch.zeros_like(saturated)  # relu does not saturate (large values are exploding's)
    ids = engine.neuron_ids

    def named(m: torch.Tensor) -> tuple[int, ...]:
        return tuple(int(i) for i in ids[m.cpu()].tolist())

    faulty = (dead | saturated | exploding).cpu()
    return Diagnosis(named(dead), named(saturated), named(exploding)), faulty


def repair(engine: Engine, max_share: float = 0.25) -> RepairReport | None:
    """Retire the faulty neurons (at most ``max_share`` of N, never all) and grow as many back by GradMax; None if all is well."""
    found, faulty = diagnose(engine)
    if found.faulty == 0:
        return None
    n = engine.cfg.neurons
    cap = max(1, min(int(max_share * n), n - 2))
    if int(faulty.sum()) > cap:
        faulty[torch.nonzero(faulty).squeeze(1)[cap:]] = False
    retired = int(faulty.sum())
    engine.resize(*retire(engine.theta, engine.mask, ~faulty))
    divided, gradmax = engine.grow_neurons(retired, divide=0)
    return RepairReport(found, retired, divided + gradmax, engine.cfg.neurons)
