"""What every door of the Engine works on: its parts, declared once.

``Engine`` (engine.py) is assembled from this base and the door groups kept
beside it: ``rewiring.Rewiring`` (connections), ``resizing.Resizing`` (the
neuron count), ``persistence.Persisting`` (checkpoints and the undo), and
``replication.Replicating`` (what replicas exchange). Each group is a mixin
of the one Engine class: the parts below are written only by the Engine's own
methods, whichever module they are written in, and the pure functions those
methods call take parts, never the Engine. The few methods one group calls
on another are declared here; the Engine's class provides them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from plasticd.config import DriftSettings, PlasticitySettings, TrainSettings
from plasticd.learn.average import AverageClock
from plasticd.learn.choice import CopyChoice
from plasticd.learn.consolidate import Consolidator
from plasticd.learn.drift import Alarm, DriftMonitor
from plasticd.learn.growth_policy import GrowthPolicy
from plasticd.learn.prequential import PrequentialMetrics
from plasticd.learn.reports import DriftReport, Report
from plasticd.model.buffer import RecentBuffer
from plasticd.model.normalize import InputNorm
from plasticd.model.optim import OptimConfig, Optimizer
from plasticd.model.plastic_net import NetConfig
from plasticd.model.plasticity import PlasticityConfig, RewirePlan, UsageStats
from plasticd.model.replay import ReservoirBuffer


class Parts:
    """The Engine's state, by part (see ``Engine.__init__`` and ``Engine._install`` for what each holds)."""

    device: torch.device
    train_settings: TrainSettings
    plasticity_settings: PlasticitySettings
    drift_settings: DriftSettings
    replay_ratio: float
    cfg: NetConfig
    plasticity: PlasticityConfig
    theta: dict[str, Tensor]  # each (S, ...): live [, average]
    mask: Tensor  # (N, N) bool
    mask_f: Tensor  # (N, N) float32
    live: dict[str, Tensor]
    avg: dict[str, Tensor] | None
    grads: dict[str, Tensor]
    optim_config: OptimConfig
    optimizer: Optimizer
    norm: InputNorm
    stats: UsageStats
    buffer: RecentBuffer
    replay: ReservoirBuffer | None
    consolidator: Consolidator
    metrics: PrequentialMetrics
    clock: AverageClock
    choice: CopyChoice
    drift: DriftMonitor
    growth: GrowthPolicy
    rng: torch.Generator
    growth_rng: torch.Generator
    steps: int
    trained_at_rewire: int
    rewires: int
    neuron_ids: Tensor  # (N,) int64 on the CPU
    neuron_born: Tensor  # (N,) int64
    next_neuron_id: int
    _reports: deque[Report]
    _scratch: Tensor | None

    @property
    def copies(self) -> int:
        return self.theta["w"].shape[0]

    # provided by the Engine's class (declared for the door groups that call them)
    def _install(self, theta: dict[str, Tensor], mask: Tensor, optimizer_state: dict[str, dict[str, Any]] | None = None) -> None:
        raise NotImplementedError

    def apply_rewire(self, plan: RewirePlan) -> None:
        raise NotImplementedError

    def resize(self, theta: dict[str, Tensor], mask: Tensor, index: Tensor) -> None:
        raise NotImplementedError

    def react(self, origin: str = "local", alarm: Alarm | None = None) -> DriftReport:
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Tensor], dict]:
        raise NotImplementedError
