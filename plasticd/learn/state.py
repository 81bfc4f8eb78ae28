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
    from plasticd.learn.engine import Engine


def engine_state(engine: Engine) -> tuple[dict[str, Tensor], dict]:
    """Everything needed to resume learning exactly: named tensors, and JSON-able counters."""
    tensors: dict[str, Tensor] = {f"theta.{k}": v for k, v in engine.theta.items()}
    tensors["mask"] = engine.mask
    tensors.update({f"norm.{k}": v for k, v in engine.norm.state_dict().items()})
    tensors.update({f"stats.{k}": v for k, v in engine.stats.state_dict().items()})
    tensors.update({f"buffer.{k}": v for k, v in engine.buffer.state_dict().items()})
    tensors.update({f"metrics.{k}": torch.from_numpy(v) for k, v in engine.metrics.state_dict().items()})
    for name, p in engine.live.items():
        for slot, value in engine.optimizer.state.get(p, {}).items():
            if isinstance(value, Tensor):
                tensors[f"optim.{name}.{slot}"] = value
    tensors["rng.plasticity"] = engine.rng.get_state()
    tensors.update({f"merge.{k}": v for k, v in engine.consolidator.state_dict().items()})
    if engine.replay is not None:
        tensors.update({f"replay.{k}": v for k, v in engine.replay.state_dict().items()})
    tensors["neuron_ids"] = engine.neuron_ids
    tensors["neuron_born"] = engine.neuron_born
    tensors["rng.growth"] = engine.growth_rng.get_state()
    meta = {
        "next_neuron_id": engine.next_neuron_id,
        "growth": engine.growth.state_dict(),
        "steps": engine.steps,
        "trained_at_rewire": engine.trained_at_rewire,
        "rewires": engine.rewires,
        "architecture": {
            "input_dim": engine.cfg.input_dim,
            "output_dim": engine.cfg.output_dim,
            "neurons": engine.cfg.neurons,
            "iterations": engine.cfg.iterations,
            "activation": engine.cfg.activation,
            "copies": engine.copies,
            "optimizer": engine.settings.train.optimizer,
        },
    }
    return tensors, meta


def load_engine_state(engine: Engine, tensors: dict[str, Tensor], meta: dict) -> None:
    """Resume ``engine`` from ``engine_state()`` output. The checkpoint's network size wins over the settings
    (growth changes it); a different input or output size is refused."""
    arch = meta["architecture"]
    for key, mine in (("input_dim", engine.cfg.input_dim), ("output_dim", engine.cfg.output_dim)):
        if arch[key] != mine:
            raise CheckpointError(f"the checkpoint's network has {key}={arch[key]}, the settings say {mine}")
    n = int(arch["neurons"])
    if n != engine.cfg.neurons:
        engine.cfg = replace(engine.cfg, neurons=n)
    # Copies: the engine must never share storage with the caller's tensors (e.g. another
    # engine's state(), or a snapshot kept for a roll-back), or training one would move both.
    theta = {k: tensors[f"theta.{k}"].to(engine.device, copy=True) for k in PARAM_NAMES}
    if theta["w"].shape[0] > engine.copies:  # averaging switched off: keep the live copy
        theta = {k: v[:1].contiguous() for k, v in theta.items()}
    elif theta["w"].shape[0] < engine.copies:  # averaging switched on: start the average at the live weights
        theta = {k: v.repeat((2,) + (1,) * (v.dim() - 1)) for k, v in theta.items()}
    engine.theta = theta
    engine.mask = tensors["mask"].to(engine.device, torch.bool, copy=True)
    engine.mask_f = engine.mask.float()
    engine._scratch = None
    engine.norm.load_state_dict({k: tensors[f"norm.{k}"].to(engine.device) for k in ("mean", "var", "count")})
    engine.stats = UsageStats(n, device=engine.device)
    engine.stats.load_state_dict({k: tensors[f"stats.{k}"].to(engine.device) for k in ("coact", "credit", "age", "observations")})
    engine.buffer.load_state_dict({k: tensors[f"buffer.{k}"].to(engine.device) for k in ("x", "y", "pos_size")})
    engine.metrics.load_state_dict({k: tensors[f"metrics.{k}"].numpy() for k in ("correct_ring", "loss_ring", "counters")})
    engine.rng.set_state(tensors["rng.plasticity"].cpu())
    engine.steps, engine.trained_at_rewire, engine.rewires = meta["steps"], meta["trained_at_rewire"], meta["rewires"]
    engine.neuron_ids = tensors["neuron_ids"].to("cpu", torch.int64, copy=True) if "neuron_ids" in tensors else torch.arange(n)
    engine.next_neuron_id = int(meta.get("next_neuron_id", int(engine.neuron_ids.max()) + 1 if n else 0))
    born = tensors.get("neuron_born")  # absent before growth existed: every neuron counts as old
    engine.neuron_born = born.to("cpu", torch.int64, copy=True) if born is not None else torch.zeros(n, dtype=torch.int64)
    if "rng.growth" in tensors:
        engine.growth_rng.set_state(tensors["rng.growth"].cpu())
    engine.growth.load_state_dict(meta.get("growth", {}))
    # Merge history and the replay reservoir: absent from older checkpoints (then: none yet).
    engine.consolidator.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("merge.")}, engine.device)
    replay_state = {k[7:]: v for k, v in tensors.items() if k.startswith("replay.")}
    if engine.replay is not None and replay_state:
        engine.replay.load_state_dict(replay_state)
    engine._bind_parameters()
    if arch.get("optimizer") == engine.settings.train.optimizer:
        for name, p in engine.live.items():
            slots = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")}
            if slots:
                engine.optimizer.state[p] = {k: v.to(engine.device, copy=True) for k, v in slots.items()}
