"""The Engine's neuron-count doors: a growth check, growth on demand, and ``resize``.

``Resizing`` is a door group of the one ``Engine`` class (parts.py). The
policy (``growth_policy.py``) and the surgery (``model/growth.py``) return
resizes; ``resize`` is the one door through which the neuron count changes:
usage statistics, optimizer moments, neuron ids and birth times follow the
index of old positions, then the Engine's install step rebinds everything.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import Tensor

from plasticd.learn.growth_policy import Network, Samples, grow_neurons, growth_check
from plasticd.learn.parts import Parts
from plasticd.learn.reports import GrowthReport
from plasticd.model.growth import gather_neurons
from plasticd.model.plastic_net import NEURON_AXES


class Resizing(Parts):
    """``grow``, ``grow_neurons``, ``network`` and ``resize`` (mixed into ``Engine``)."""

    def grow(self, trigger: str = "manual") -> GrowthReport:
        """One growth check (growth_policy.py): retire dead/silent neurons, grow on a plateau within the budget."""
        t0 = time.perf_counter()
        m = self.metrics
        check = growth_check(
            self.growth,
            trigger,
            self.network,
            self._samples(),
            (m.trained, m.labelled, m.correct),
            self.neuron_born,
            self.growth_rng,
        )
        for resize in check.resizes:
            self.resize(resize.theta, resize.mask, resize.index)
        report = replace(check.report, check_ms=(time.perf_counter() - t0) * 1e3)
        self._reports.append(report)
        return report

    def grow_neurons(self, wanted: int, divide: int = 0) -> tuple[int, int]:
        """Add up to ``wanted`` neurons now, outside the policy: up to ``divide`` by division, the rest by GradMax.

        Returns (divided, gradmax). Guided by the recent-sample buffer; nothing without one.
        """
        samples = self._samples()
        if samples is None:
            return 0, 0
        grown = grow_neurons(self.growth.settings, self.network, samples, wanted, divide, self.growth_rng)
        for resize in grown.resizes:
            self.resize(resize.theta, resize.mask, resize.index)
        return grown.divided, grown.gradmax

    @property
    def network(self) -> Network:
        """The current weights (every copy), mask and architecture, as growth sees them."""
        return Network(self.theta, self.mask, self.cfg)

    def _samples(self) -> Samples | None:
        """The recent-sample buffer, normalised, with the loss's label smoothing (None when empty)."""
        if len(self.buffer) == 0:
            return None
        xb, yb = self.buffer.contents()
        return Samples(self.norm(xb), yb, self.train_settings.label_smoothing)

    def resize(self, theta: dict[str, Tensor], mask: Tensor, index: Tensor) -> None:
        """The one door through which the neuron count changes (model/growth.py makes ``theta``/``mask``).

        ``index`` (M,) names the old neuron behind each new position (-1: fresh).
        Everything indexed by neuron follows it: usage statistics and optimizer
        moments are gathered (a divided child copies its parent's, fresh neurons
        start at 0), ids are kept (a second position with the same source, or a
        fresh one, gets a new id), step counters are untouched.
        """
        m = index.numel()
        assert mask.shape == (m, m) and theta["w"].shape[1:] == (m, m), f"theta/mask must be sized for {m} neurons"
        optimizer_state = {
            name: {
                slot: gather_neurons(v, NEURON_AXES[name], index) if isinstance(v, Tensor) and v.dim() else v
                for slot, v in self.optimizer.state.get(p, {}).items()
            }
            for name, p in self.live.items()
        }
        self.stats.follow(index)
        pos, src = torch.arange(m), index.clamp_min(0)  # src: a valid old position for every new one
        first = torch.full((self.neuron_ids.numel(),), m, dtype=torch.int64).scatter_reduce(0, src, pos, "amin")
        is_new = (index < 0) | (first[src] != pos)  # (M,) fresh, or not the first position taken from its source
        fresh = int(is_new.sum())
        ids = self.neuron_ids[src]
        ids[is_new] = self.next_neuron_id + torch.arange(fresh)
        self.next_neuron_id += fresh
        self.neuron_ids = ids
        self.neuron_born = torch.where(is_new, self.metrics.trained, self.neuron_born[src])
        self._install(theta, mask, optimizer_state)
