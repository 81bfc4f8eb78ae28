"""An Engine's complete state as named tensors + JSON counters: writing it, and parsing it back.

Checkpoints store exactly this (service/checkpoints.py writes it). Every part
the engine keeps (weights of every copy, mask, optimizer moments, input
scaler, usage statistics, buffers, merge history, replay reservoir, neuron
ids, RNGs) round-trips, so a resumed engine predicts and trains
bit-identically on CPU. Parts added after the first release are optional on
load (older checkpoints).

Both directions are pure: ``EngineState`` is the engine's state as data, the
Engine builds one to save (``Engine.state``) and installs a parsed one to
resume (``Engine.load_state``); this module never sees the Engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from plasticd.errors import CheckpointError
from plasticd.model.plastic_net import PARAM_NAMES


@dataclass(frozen=True)
class EngineState:
    """Everything needed to resume an engine exactly, by part (each part as its component's state dict)."""

    theta: dict[str, Tensor]  # each (S, ...): live [, average]
    mask: Tensor  # (N, N) bool
    norm: dict[str, Tensor]
    stats: dict[str, Tensor]
    buffer: dict[str, Tensor]
    metrics: dict[str, np.ndarray]
    optimizer: dict[str, dict[str, Tensor]]  # parameter name -> slot -> tensor (empty: no state to restore)
    rng_plasticity: Tensor
    rng_growth: Tensor | None  # None: absent (older checkpoint), keep the seeded generator
    merge: dict[str, Tensor]  # empty: no merge history
    replay: dict[str, Tensor]  # empty: no reservoir
    neuron_ids: Tensor  # (N,) int64 on the CPU
    neuron_born: Tensor  # (N,) int64 on the CPU
    next_neuron_id: int
    growth: dict  # GrowthPolicy.state_dict()
    steps: int
    trained_at_rewire: int
    rewires: int
    architecture: dict  # input_dim, output_dim, neurons, iterations, activation, copies, optimizer
    average: dict  # AverageClock.state_dict(): samples pending and the warm-up's age
    choice: Tensor | None  # (S,) float64 CopyChoice scores (None: absent, older checkpoint)
    drift: dict  # DriftMonitor.state_dict()


def to_checkpoint(state: EngineState) -> tuple[dict[str, Tensor], dict]:
    """The checkpoint form: named tensors and JSON-able meta (names and keys are the file format)."""
    tensors: dict[str, Tensor] = {f"theta.{k}": v for k, v in state.theta.items()}
    tensors["mask"] = state.mask
    tensors.update({f"norm.{k}": v for k, v in state.norm.items()})
    tensors.update({f"stats.{k}": v for k, v in state.stats.items()})
    tensors.update({f"buffer.{k}": v for k, v in state.buffer.items()})
    tensors.update({f"metrics.{k}": torch.from_numpy(v) for k, v in state.metrics.items()})
    for name, slots in state.optimizer.items():
        tensors.update({f"optim.{name}.{slot}": value for slot, value in slots.items()})
    tensors["rng.plasticity"] = state.rng_plasticity
    tensors.update({f"merge.{k}": v for k, v in state.merge.items()})
    tensors.update({f"replay.{k}": v for k, v in state.replay.items()})
    tensors["neuron_ids"] = state.neuron_ids
    tensors["neuron_born"] = state.neuron_born
    if state.rng_growth is not None:
        tensors["rng.growth"] = state.rng_growth
    if state.choice is not None:
        tensors["choice.score"] = state.choice
    meta = {
        "next_neuron_id": state.next_neuron_id,
        "growth": state.growth,
        "steps": state.steps,
        "trained_at_rewire": state.trained_at_rewire,
        "rewires": state.rewires,
        "architecture": state.architecture,
        "average": state.average,
        "drift": state.drift,
    }
    return tensors, meta


def from_checkpoint(
    tensors: dict[str, Tensor],
    meta: dict,
    *,
    input_dim: int,
    output_dim: int,
    copies: int,
    optimizer: str,
    device: torch.device,
) -> EngineState:
    """Parse ``to_checkpoint`` output for an engine with these sizes, copies, optimizer kind and device.

    The checkpoint's network size wins over the settings (growth changes it); a
    different input or output size raises CheckpointError. Weights, mask, ids and
    optimizer moments are copies: an engine must never share storage with the
    caller's tensors (e.g. another engine's state(), or a snapshot kept for a
    roll-back), or training one would move both. Optimizer moments are kept only
    when the optimizer kind is the same.
    """
    arch = meta["architecture"]
    for key, mine in (("input_dim", input_dim), ("output_dim", output_dim)):
        if arch[key] != mine:
            raise CheckpointError(f"the checkpoint's network has {key}={arch[key]}, the settings say {mine}")
    n = int(arch["neurons"])
    theta = {k: tensors[f"theta.{k}"].to(device, copy=True) for k in PARAM_NAMES}
    if theta["w"].shape[0] > copies:  # averaging switched off: keep the live copy
        theta = {k: v[:1].contiguous() for k, v in theta.items()}
    elif theta["w"].shape[0] < copies:  # averaging switched on: start the average at the live weights
        theta = {k: v.repeat((2,) + (1,) * (v.dim() - 1)) for k, v in theta.items()}
    optim: dict[str, dict[str, Tensor]] = {}
    if arch.get("optimizer") == optimizer:
        for name in PARAM_NAMES:
            slots = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")}
            if slots:
                optim[name] = {k: v.to(device, copy=True) for k, v in slots.items()}
    ids = tensors["neuron_ids"].to("cpu", torch.int64, copy=True) if "neuron_ids" in tensors else torch.arange(n)
    born = tensors.get("neuron_born")  # absent before growth existed: every neuron counts as old
    rng_growth = tensors.get("rng.growth")
    choice = tensors.get("choice.score")
    return EngineState(
        theta=theta,
        mask=tensors["mask"].to(device, torch.bool, copy=True),
        norm={k: tensors[f"norm.{k}"].to(device) for k in ("mean", "var", "count")},
        stats={k: tensors[f"stats.{k}"].to(device) for k in ("coact", "credit", "age", "observations")},
        buffer={k: tensors[f"buffer.{k}"].to(device) for k in ("x", "y", "pos_size")},
        metrics={k: tensors[f"metrics.{k}"].numpy() for k in ("correct_ring", "loss_ring", "counters")},
        optimizer=optim,
        rng_plasticity=tensors["rng.plasticity"].cpu(),
        rng_growth=rng_growth.cpu() if rng_growth is not None else None,
        # Merge history and the replay reservoir: absent from older checkpoints (then: none yet).
        merge={k[6:]: v for k, v in tensors.items() if k.startswith("merge.")},
        replay={k[7:]: v for k, v in tensors.items() if k.startswith("replay.")},
        neuron_ids=ids,
        neuron_born=born.to("cpu", torch.int64, copy=True) if born is not None else torch.zeros(n, dtype=torch.int64),
        next_neuron_id=int(meta.get("next_neuron_id", int(ids.max()) + 1 if n else 0)),
        growth=meta.get("growth", {}),
        steps=meta["steps"],
        trained_at_rewire=meta["trained_at_rewire"],
        rewires=meta["rewires"],
        architecture=arch,
        # Before the clock counted samples it counted optimizer steps: the step count carries the warm-up on.
        average=meta.get("average", {"pending": 0, "age": meta["steps"]}),
        choice=choice.to("cpu", torch.float64, copy=True) if choice is not None else None,
        drift=meta.get("drift", {}),
    )
