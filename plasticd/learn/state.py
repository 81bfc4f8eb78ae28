"""An Engine's complete state as named tensors + JSON counters: writing it, and parsing it back.

Checkpoints store exactly this (service/checkpoint_store.py writes it). Every part
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

from plasticd.config import ModelSettings, TrainSettings
from plasticd.errors import CheckpointError
from plasticd.model.plastic_net import PARAM_NAMES


@dataclass(frozen=True)
class Predicting:
    """The copy the engine predicts with, on the CPU (what ``plasticd export`` writes): no optimizer, no history."""

    theta: dict[str, Tensor]  # each without the copy axis, float32
    mask: Tensor  # (N, N) bool
    norm_mean: Tensor | None  # (D,) float32; None: inputs are not standardised
    norm_var: Tensor | None
    norm_eps: float
    copy: str  # "average" or "live"
    input_dim: int
    output_dim: int
    neurons: int
    iterations: int
    activation: str
    samples_seen: int


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
    for key, setting, mine in (("input_dim", "model.input_dim", input_dim), ("output_dim", "model.num_classes", output_dim)):
        if arch[key] != mine:
            raise CheckpointError(_mismatch(setting, arch[key], mine))
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


FRESH_START = (
    "to keep the model, set the setting back; to start a new model with the new value, "
    "move the checkpoints folder aside (mv checkpoints checkpoints.old) and start again"
)


def _mismatch(setting: str, recorded: object, configured: object) -> str:
    return f"{setting} = {configured!r} in the settings, but the checkpoint's model was built with {recorded!r}; {FRESH_START}"


def configured_sizes(tensors: dict[str, Tensor], meta: dict) -> tuple[int, int]:
    """The range of ``model.neurons`` this checkpoint's network can have started from (growth changes its size).

    Neurons keep ids for life: the first network has ids 0..N0-1, growth numbers new
    neurons from ``next_neuron_id`` on and stamps their birth (> 0 labelled samples);
    retirement removes ids. So N0 is at least one more than the largest surviving
    original id and at most the smallest grown id (or ``next_neuron_id`` if none
    survives). A network never resized gives exactly its size.
    """
    n = int(meta["architecture"]["neurons"])
    ids = tensors["neuron_ids"].to(torch.int64) if "neuron_ids" in tensors else torch.arange(n)
    born = tensors.get("neuron_born")
    born = born.to(torch.int64) if born is not None else torch.zeros(n, dtype=torch.int64)
    next_id = int(meta.get("next_neuron_id", int(ids.max()) + 1 if n else 0))
    original, grown = ids[born == 0], ids[born > 0]
    low = int(original.max()) + 1 if original.numel() else 0
    high = int(grown.min()) if grown.numel() else next_id
    return low, high


def check_architecture(tensors: dict[str, Tensor], meta: dict, model: ModelSettings) -> None:
    """CheckpointError naming the setting, both values and the way out when ``model`` cannot have built this network.

    ``model.neurons`` may differ from the checkpoint's size when growth resized it:
    what must match is the size the network started from (``configured_sizes``).
    """
    arch = meta["architecture"]
    for key, setting, mine in (
        ("input_dim", "model.input_dim", model.input_dim),
        ("output_dim", "model.num_classes", model.num_classes),
        ("iterations", "model.iterations", model.iterations),
        ("activation", "model.activation", model.activation),
    ):
        if key in arch and arch[key] != mine:
            raise CheckpointError(_mismatch(setting, arch[key], mine))
    low, high = configured_sizes(tensors, meta)
    if not low <= model.neurons <= high:
        n = int(arch["neurons"])
        started = f"{low}" if low == high else f"between {low} and {high}"
        grown = "" if low == high == n else f" (it started from {started} neurons; growth made it {n})"
        raise CheckpointError(_mismatch("model.neurons", low if low == high else f"{low}..{high}", model.neurons) + grown)


def training_changes(recorded: dict | None, train: TrainSettings) -> dict[str, tuple[object, object]]:
    """The ``train.*`` settings that differ from those the checkpoint was trained with: name -> (old, new).

    They take effect at load (the optimizer kind resets its moments); older
    checkpoints recorded only the optimizer.
    """
    now = train.model_dump(mode="json")
    then = dict(recorded or {})
    changes: dict[str, tuple[object, object]] = {}
    for key, value in now.items():
        if key in then and then[key] != value:
            changes[f"train.{key}"] = (then[key], value)
    return changes
