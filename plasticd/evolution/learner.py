"""The seam where a pipeline calls its learner: one Engine, or a Population of them, behind the same doors."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from plasticd.config import Settings
from plasticd.evolution.population import Population
from plasticd.learn.engine import Engine, StepResult
from plasticd.learn.prequential import MetricsSnapshot
from plasticd.learn.reports import Report


@runtime_checkable
class Learner(Protocol):
    """Predict then learn (``step``), the maintenance reports since the last call, metrics, and checkpoint state."""

    def step(self, x: Tensor, y: np.ndarray | Tensor, plasticity: bool = True) -> StepResult: ...

    def take_reports(self) -> list[Report]: ...

    def snapshot(self) -> MetricsSnapshot: ...

    def state(self) -> tuple[dict[str, Tensor], dict]: ...

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> dict[str, tuple[Any, Any]]: ...


def build_learner(settings: Settings, device: torch.device | str | None = None) -> Engine | Population:
    """A Population with ``evolution.enabled``, else the one Engine the settings describe."""
    if settings.evolution.enabled:
        return Population(settings, device)
    return Engine.from_settings(settings, device)
