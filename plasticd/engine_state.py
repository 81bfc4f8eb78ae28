"""An Engine's complete state as named tensors + JSON counters, and resuming from it.

Checkpoints store exactly this (checkpoint.py writes it). Every part the
engine keeps (weights of every copy, mask, optimizer moments, input scaler,
usage statistics, buffers, merge history, replay reservoir, neuron ids, RNGs)
round-trips, so a resumed engine predicts and trains bit-identically on CPU.
Parts added after the first release are optional on load (older checkpoints).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from plasticd.errors import CheckpointError
from plasticd.model.plastic_net import PARAM_NAMES
from plasticd.model.plasticity import UsageStats

if TYPE_CHECKING:
    from plasticd.engine import Engine


def engine_state(self: Engine) -> tuple[dict[str, Tensor], dict]:
    """Everything needed to resume learning exactly: named tensors, and JSON-able counters."""
    tensors: dict[str, Tensor] = {f"theta.{k}": v for k, v in self.theta.items()}
    tensors["mask"] = self.mask
    tensors.update({f"norm.{k}": v for k, v in self.norm.state_dict().items()})
    tensors.update({f"stats.{k}": v for k, v in self.stats.state_dict().items()})
    tensors.update({f"buffer.{k}": v for k, v in self.buffer.state_dict().items()})
    tensors.update({f"metrics.{k}": torch.from_numpy(v) for k, v in self.metrics.state_dict().items()})
    for name, p in self.live.items():
        for slot, value in self.optimizer.state.get(p, {}).items():
            if isinstance(value, Tensor):
                tensors[f"optim.{name}.{slot}"] = value
    tensors["rng.plasticity"] = self.rng.get_state()
    tensors.update({f"merge.{k}": v for k, v in self.consolidator.state_dict().items()})
    if self.replay is not None:
        tensors.update({f"replay.{k}": v for k, v in self.replay.state_dict().items()})
    tensors["neuron_ids"] = self.neuron_ids
    tensors["neuron_born"] = self.neuron_born
    tensors["rng.growth"] = self.growth_rng.get_state()
    meta = {
        "next_neuron_id": self.next_neuron_id,
        "growth": self.growth.state_dict(),
        "steps": self.steps,
        "trained_at_rewire": self.trained_at_rewire,
        "rewires": self.rewires,
        "architecture": {
            "input_dim": self.cfg.input_dim,
            "output_dim": self.cfg.output_dim,
            "neurons": self.cfg.neurons,
            "iterations": self.cfg.iterations,
            "activation": self.cfg.activation,
            "copies": self.copies,
            "optimizer": self.settings.train.optimizer,
        },
    }
    return tensors, meta

def load_engine_state(self: Engine, tensors: dict[str, Tensor], meta: dict) -> None:
    """Resume ``self`` from ``engine_state()`` output. The checkpoint's network size wins over the settings
    (growth changes it); a different input or output size is refused."""
    arch = meta["architecture"]
    for key, mine in (("input_dim", self.cfg.input_dim), ("output_dim", self.cfg.output_dim)):
        if arch[key] != mine:
            raise CheckpointError(f"the checkpoint's network has {key}={arch[key]}, the settings say {mine}")
    n = int(arch["neurons"])
    if n != self.cfg.neurons:
        self.cfg = replace(self.cfg, neurons=n)
    # Copies: the engine must never share storage with the caller's tensors (e.g. another
    # engine's state(), or a snapshot kept for a roll-back), or training one would move both.
    theta = {k: tensors[f"theta.{k}"].to(self.device, copy=True) for k in PARAM_NAMES}
    if theta["w"].shape[0] > self.copies:  # averaging switched off: keep the live copy
        theta = {k: v[:1].contiguous() for k, v in theta.items()}
    elif theta["w"].shape[0] < self.copies:  # averaging switched on: start the average at the live weights
        theta = {k: v.repeat((2,) + (1,) * (v.dim() - 1)) for k, v in theta.items()}
    self.theta = theta
    self.mask = tensors["mask"].to(self.device, torch.bool, copy=True)
    self.mask_f = self.mask.float()
    self._scratch = None
    self.norm.load_state_dict({k: tensors[f"norm.{k}"].to(self.device) for k in ("mean", "var", "count")})
    self.stats = UsageStats(n, device=self.device)
    self.stats.load_state_dict({k: tensors[f"stats.{k}"].to(self.device) for k in ("coact", "credit", "age", "observations")})
    self.buffer.load_state_dict({k: tensors[f"buffer.{k}"].to(self.device) for k in ("x", "y", "pos_size")})
    self.metrics.load_state_dict({k: tensors[f"metrics.{k}"].numpy() for k in ("correct_ring", "loss_ring", "counters")})
    self.rng.set_state(tensors["rng.plasticity"].cpu())
    self.steps, self.trained_at_rewire, self.rewires = meta["steps"], meta["trained_at_rewire"], meta["rewires"]
    self.neuron_ids = tensors["neuron_ids"].to("cpu", torch.int64, copy=True) if "neuron_ids" in tensors else torch.arange(n)
    self.next_neuron_id = int(meta.get("next_neuron_id", int(self.neuron_ids.max()) + 1 if n else 0))
    born = tensors.get("neuron_born")  # absent before growth existed: every neuron counts as old
    self.neuron_born = born.to("cpu", torch.int64, copy=True) if born is not None else torch.zeros(n, dtype=torch.int64)
    if "rng.growth" in tensors:
        self.growth_rng.set_state(tensors["rng.growth"].cpu())
    self.growth.load_state_dict(meta.get("growth", {}))
    # Merge history and the replay reservoir: absent from older checkpoints (then: none yet).
    self.consolidator.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("merge.")}, self.device)
    replay_state = {k[7:]: v for k, v in tensors.items() if k.startswith("replay.")}
    if self.replay is not None and replay_state:
        self.replay.load_state_dict(replay_state)
    self._bind_parameters()
    if arch.get("optimizer") == self.settings.train.optimizer:
        for name, p in self.live.items():
            slots = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")}
            if slots:
                self.optimizer.state[p] = {k: v.to(self.device, copy=True) for k, v in slots.items()}
