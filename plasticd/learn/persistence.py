"""The Engine's persistence doors: its state for a checkpoint and back, and the in-memory undo.

``Persisting`` is a door group of the one ``Engine`` class (parts.py).
``state()`` builds an ``EngineState`` and ``state.to_checkpoint`` names its
tensors; ``load_state`` checks and parses a checkpoint (``state.py``) and
installs it. ``savepoint()`` / ``restore()`` are the undo of a big file's
steps (the pipeline's all-or-none): the same state in memory, plus what a
checkpoint can only rebuild (the change detector itself) and the count of
queued reports, so what was undone is not reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from plasticd.learn.drift import DriftMonitor
from plasticd.learn.parts import Parts
from plasticd.learn.state import EngineState, check_architecture, from_checkpoint, to_checkpoint, training_changes
from plasticd.model.plasticity import UsageStats


@dataclass(frozen=True)
class Savepoint:
    """What ``Engine.restore`` returns the engine to (``Engine.savepoint``): in memory only, never a checkpoint."""

    tensors: dict[str, Tensor]
    meta: dict
    drift: DriftMonitor  # the change detector itself (river's state), which a checkpoint can only rebuild
    reports: int  # reports queued at the savepoint


class Persisting(Parts):
    """``state``, ``load_state``, ``savepoint`` and ``restore`` (mixed into ``Engine``)."""

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """Everything needed to resume learning exactly: named tensors, and JSON-able counters (state.py)."""
        optimizer = {
            name: {slot: v for slot, v in self.optimizer.state.get(p, {}).items() if isinstance(v, Tensor)}
            for name, p in self.live.items()
        }
        return to_checkpoint(EngineState(
            theta=self.theta,
            mask=self.mask,
            norm=self.norm.state_dict(),
            stats=self.stats.state_dict(),
            buffer=self.buffer.state_dict(),
            metrics=self.metrics.state_dict(),
            optimizer=optimizer,
            rng_plasticity=self.rng.get_state(),
            rng_growth=self.growth_rng.get_state(),
            merge=self.consolidator.state_dict(),
            replay=self.replay.state_dict() if self.replay is not None else {},
            neuron_ids=self.neuron_ids,
            neuron_born=self.neuron_born,
            next_neuron_id=self.next_neuron_id,
            growth=self.growth.state_dict(),
            steps=self.steps,
            trained_at_rewire=self.trained_at_rewire,
            rewires=self.rewires,
            architecture={
                "input_dim": self.cfg.input_dim,
                "output_dim": self.cfg.output_dim,
                "neurons": self.cfg.neurons,
                "iterations": self.cfg.iterations,
                "activation": self.cfg.activation,
                "copies": self.copies,
                "optimizer": self.train_settings.optimizer,
                "train": self.train_settings.model_dump(mode="json"),  # load_state reports what changed since
            },
            average=self.clock.state_dict(),
            choice=torch.from_numpy(self.choice.state_dict()),
            drift=self.drift.state_dict(),
        ))  # fmt: skip

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> dict[str, tuple[Any, Any]]:
        """Resume from ``state()`` output. The checkpoint's network size wins over the settings
        (growth changes it); a network the model settings cannot have built (input or output size,
        iterations, activation, starting size) is refused (CheckpointError naming the setting, nothing changed).
        Returns the training settings that changed since the checkpoint: name -> (old, new)."""
        check_architecture(tensors, meta, self.growth.model)
        arch = meta["architecture"]
        changes = training_changes(arch.get("train") or {"optimizer": arch.get("optimizer")}, self.train_settings)
        s = from_checkpoint(
            tensors, meta, input_dim=self.cfg.input_dim, output_dim=self.cfg.output_dim,
            copies=self.copies, optimizer=self.train_settings.optimizer, device=self.device,
        )  # fmt: skip
        self._load(s)
        return changes

    def _load(self, s: EngineState, drift: DriftMonitor | None = None) -> None:
        """Install a parsed state: every part, then the weights through ``_install``, then the drift monitor
        (``drift``: that monitor as it is; None: rebuilt from the metrics window, as after a restart)."""
        n = s.mask.shape[0]
        self.norm.load_state_dict(s.norm)
        self.stats = UsageStats(n, device=self.device)
        self.stats.load_state_dict(s.stats)
        self.buffer.load_state_dict(s.buffer)
        self.metrics.load_state_dict(s.metrics)
        self.rng.set_state(s.rng_plasticity)
        if s.rng_growth is not None:
            self.growth_rng.set_state(s.rng_growth)
        self.steps, self.trained_at_rewire, self.rewires = s.steps, s.trained_at_rewire, s.rewires
        self.neuron_ids, self.neuron_born, self.next_neuron_id = s.neuron_ids, s.neuron_born, s.next_neuron_id
        self.growth.load_state_dict(s.growth)
        self.consolidator.load_state_dict(s.merge, self.device)
        if self.replay is not None and s.replay:
            self.replay.load_state_dict(s.replay)
        self._install(s.theta, s.mask, s.optimizer)
        self.clock.load_state_dict(s.average)
        if s.choice is not None:
            self.choice.load_state_dict(s.choice.numpy())
        if drift is not None:
            self.drift = drift
            return
        self.drift.load_state_dict(s.drift)
        self.drift.rebuild(
            1.0 - self.metrics.recent_correct(self.metrics.window), self.metrics.trained - self.drift.last_alarm_at
        )

    def savepoint(self) -> Savepoint:
        """Everything ``restore`` needs to undo what happens after this call (a big file's steps, all or none)."""
        tensors, meta = self.state()
        return Savepoint(
            {k: v.clone() for k, v in tensors.items()}, copy.deepcopy(meta), copy.deepcopy(self.drift), len(self._reports)
        )

    def restore(self, point: Savepoint) -> None:
        """Back to ``point``, exactly: every tensor and counter, the change detector as it was (not rebuilt), and
        the reports queued since dropped (what they reported was undone). ``point`` stays usable."""
        tensors = {k: v.clone() for k, v in point.tensors.items()}
        self._load(
            from_checkpoint(
                tensors, copy.deepcopy(point.meta), input_dim=self.cfg.input_dim, output_dim=self.cfg.output_dim,
                copies=self.copies, optimizer=self.train_settings.optimizer, device=self.device,
            ),
            drift=copy.deepcopy(point.drift),
        )  # fmt: skip
        while len(self._reports) > point.reports:
            self._reports.pop()
