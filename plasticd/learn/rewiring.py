"""The Engine's connection doors: a plasticity cycle, and the one door through which connections change.

``Rewiring`` is a door group of the one ``Engine`` class (parts.py): ``rewire``
refreshes the usage statistics on the recent-sample buffer, asks
``model/plasticity.plan_rewire`` for a plan and applies it through
``apply_rewire``, which replicas use too (``Engine.adopt``).
"""

from __future__ import annotations

import time

import torch

from plasticd.learn.parts import Parts
from plasticd.learn.reports import RewireReport
from plasticd.model.optim import reset_entries
from plasticd.model.plastic_net import LIVE, backward, cross_entropy_grad, forward
from plasticd.model.plasticity import RewirePlan, plan_rewire


class Rewiring(Parts):
    """``rewire`` and ``apply_rewire`` (mixed into ``Engine``)."""

    @torch.no_grad()
    def rewire(self) -> RewireReport:
        """One plasticity cycle: refresh usage statistics on recent samples, prune, regrow."""
        active = self.active_connections
        if not self.plasticity_settings.enabled:
            return self._report(
                RewireReport(self.metrics.trained, 0, 0, active, active, 0, 0.0, 0.0, skipped="plasticity disabled")
            )
        if len(self.buffer) == 0:
            return self._report(
                RewireReport(self.metrics.trained, 0, 0, active, active, 0, 0.0, 0.0, skipped="no labelled samples yet")
            )
        t0 = time.perf_counter()
        xb, yb = self.buffer.contents()
        trace = forward({k: v[LIVE : LIVE + 1] for k, v in self.theta.items()}, self.norm(xb), self.cfg)
        dlogits = cross_entropy_grad(trace.logits[LIVE], yb, None, self.train_settings.label_smoothing)
        grads = {k: torch.empty_like(v) for k, v in self.live.items()}  # dense: RigL ranks absent connections by it
        backward(self.live, trace, dlogits, grads, self.cfg)
        self.stats.advance_age(self.since_rewire, self.mask)
        self.stats.observe(trace.h[:, LIVE], grads["w"], self.live["w"], self.plasticity.stats_decay)
        t1 = time.perf_counter()
        if self._scratch is None or self._scratch.shape != self.live["w"].shape:
            self._scratch = torch.empty_like(self.live["w"])  # kept: fresh N² buffers cost page faults
        plan = plan_rewire(self.plasticity, self.live["w"], self.mask, grads["w"], self.stats, self.rng, scratch=self._scratch)
        self.apply_rewire(plan)
        t2 = time.perf_counter()
        self.trained_at_rewire = self.metrics.trained
        self.rewires += 1
        return self._report(
            RewireReport(
                trained=self.metrics.trained,
                pruned=plan.prune.numel(),
                regrown=plan.grow.numel(),
                active_before=plan.active_before,
                active_after=plan.active_before - plan.prune.numel() + plan.grow.numel(),
                eligible=plan.eligible,
                estimate_ms=(t1 - t0) * 1e3,
                rewire_ms=(t2 - t1) * 1e3,
            )
        )

    def _report(self, report: RewireReport) -> RewireReport:
        self._reports.append(report)
        return report

    def apply_rewire(self, plan: RewirePlan) -> None:
        """The one door through which connections change: weights (every copy), optimizer, mask, stats."""
        changed = torch.cat((plan.prune, plan.grow))
        self.theta["w"].view(self.copies, -1).index_fill_(1, changed, 0.0)  # pruned vanish, regrown start at 0
        reset_entries(self.optimizer, self.live["w"], changed)
        flat_mask = self.mask.view(-1)
        flat_mask.index_fill_(0, plan.prune, False)
        flat_mask.index_fill_(0, plan.grow, True)
        self.mask_f.view(-1).index_fill_(0, plan.prune, 0.0).index_fill_(0, plan.grow, 1.0)
        self.stats.reset_entries(changed)

    @property
    def since_rewire(self) -> int:
        """Labelled samples learned since the last plasticity cycle (connections age by this much)."""
        return self.metrics.trained - self.trained_at_rewire

    @property
    def active_connections(self) -> int:
        return int(torch.count_nonzero(self.mask))
