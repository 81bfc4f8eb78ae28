"""Consolidation: when to mark a task boundary, and the MagMax merge the engine writes at one.

A *task* is the stretch of the stream between two boundaries. Boundaries
come from the daemon (an idle period, every ``merge.every_samples`` labelled
samples, or a drift alarm) or from a benchmark that knows where its tasks end.
At a boundary ``Consolidator.merge`` folds the task vector of the predicting
copy into τ* (``model/merge.py``) and returns θ₀ + λ·τ*; ``Engine.merge``
writes it into the network (this module never changes the engine).

Which copy. Predictions come from the weight average (the last copy), so the
task vector is taken from it: it is what the daemon currently *knows*, with the
per-sample noise of the live copy averaged out. The merged weights are then
written into **every** copy: the average so the merge is visible at once (a
merge of the live copy alone would take the average's horizon, thousands of
samples, to show), and the live copy so training continues from the
consolidated point instead of pulling the average back to where it was.

Optimizer state after a merge is *rescaled deliberately*: first moments
(Adam's ``exp_avg``, SGD's ``momentum_buffer``) are zeroed, because they point
along the pre-merge trajectory and the weights just jumped; second moments
(``exp_avg_sq``) are kept, because they measure the scale of the gradients,
which a merge does not change, and zeroing them with Adam's step count intact
would make the next update ~3x too large. Plain SGD (no momentum) keeps no state.

Drift: a boundary on a change of the concept is a row of the drift reaction
table (``reaction.py``): the one change detector on the prequential error
(``drift.py``, ``drift.*`` settings) raises the alarm, the row sets
``drift_pending``, and the next maintenance merges (``merge_due``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.config import MergeSettings
from plasticd.learn.reports import MergeReport
from plasticd.model.merge import MagMaxFold


def merge_due(settings: MergeSettings, consolidator: Consolidator, trained_since: int) -> str | None:
    """The reason for a merge the worker should run after a batch (drift alarm or sample count), if any."""
    if not settings.enabled:
        return None
    if settings.on_drift and consolidator.drift_pending:
        return "drift"
    if settings.every_samples and trained_since >= settings.every_samples:
        return "samples"
    return None


@dataclass(frozen=True)
class Merge:
    """What one boundary produced: the report, and the merged weights to write (None: write nothing)."""

    report: MergeReport
    theta: dict[str, Tensor] | None  # each without the copy axis: what every copy becomes


class Consolidator:
    """The engine's MagMax fold and boundary bookkeeping."""

    def __init__(self, settings: MergeSettings) -> None:
        self.settings = settings
        self.fold = MagMaxFold()
        self.trained_at_boundary = 0  # engine.metrics.trained at the last boundary
        self.merges = 0
        self.drift_pending = False  # set by the drift reaction table's merge row, cleared by the merge it triggers

    def since_boundary(self, trained: int) -> int:
        """Labelled samples learned since the last boundary, given the engine's count ``trained``."""
        return trained - self.trained_at_boundary

    @torch.no_grad()
    def merge(
        self,
        current: dict[str, Tensor],
        neuron_ids: Tensor,
        mask: Tensor,
        trained: int,
        reason: str,
        lam: float | None = None,
        min_samples: int = 0,
    ) -> Merge:
        """A task boundary: fold the task vector of ``current`` (the predicting copy), return θ₀ + λ·τ*.

        ``trained`` is the engine's count of labelled samples learned. Skips (the fold
        unchanged, no weights returned) with fewer than ``min_samples`` labelled samples
        since the last boundary, or when the task vector or the merge is not finite.
        """
        t0 = time.perf_counter()
        lam = self.settings.lam if lam is None else lam
        since = self.since_boundary(trained)
        n = mask.shape[0]

        def skip(skipped: str, refused: bool = False) -> Merge:
            ms = (time.perf_counter() - t0) * 1e3
            return Merge(MergeReport(reason, lam, self.fold.tasks, 0, 0, n, since, ms, skipped, refused), None)

        self.drift_pending = False  # an alarm right after a boundary is not a new task
        if since < max(1, min_samples):
            return skip(f"{since} labelled samples since the last boundary, fewer than {max(1, min_samples)}")
        before = self.fold.snapshot()
        if not self.fold.fold(current, neuron_ids):
            return skip("the weights or the task vector are not finite; nothing was folded or written", refused=True)
        result = self.fold.apply(current, neuron_ids, mask, lam)
        if not result.finite:
            self.fold.restore(before)
            return skip("the merged weights are not finite; the network and the fold were left unchanged", refused=True)
        self.trained_at_boundary = trained
        self.merges += 1
        ms = (time.perf_counter() - t0) * 1e3
        report = MergeReport(reason, lam, self.fold.tasks, result.changed, result.entries, n, since, ms, None, False)
        return Merge(report, result.theta)

    # ------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"fold.{k}": v for k, v in self.fold.state_dict().items()}
        out["counters"] = torch.tensor([self.trained_at_boundary, self.merges], dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str) -> None:
        """Restore ``state_dict()`` output; an empty dict (an older checkpoint) means no history."""
        self.fold.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("fold.")}, device)
        counters = state.get("counters")
        self.trained_at_boundary, self.merges = (int(c) for c in counters) if counters is not None else (0, 0)
        self.drift_pending = False
