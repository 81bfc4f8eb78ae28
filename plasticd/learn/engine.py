"""The learning engine: predict every sample, then learn from the labelled ones.

``Engine.step(x, y)`` takes a micro-batch (one sample or many). Each sample
is predicted with the weights as they were *before* the update that trains
on it, so the running (prequential) accuracy is an honest estimate of how
the network does on data it has not seen. Samples whose label is -1 are
predicted only.

Predictions use a running average (EMA) of the weights when
``train.average_decay > 0``: averaging removes most of the noise that
per-sample updates put into the weights. Training always updates the live
weights.

The engine is single-threaded by design: the worker thread owns it.

It changes only through its own doors: ``step``, ``rewire``, ``grow``,
``merge``, ``resize`` and ``load_state``. Growth (growth_policy.py), merges
(consolidate.py) and checkpoint parsing (state.py) are functions of what they
are given that *return* new weights, sizes or state; the engine applies them,
and every path that replaces the weights (construction, ``resize``,
``load_state``) ends in one install step. This module imports those; they
never import it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plasticd.config import (
    DriftSettings,
    GrowthSettings,
    MergeSettings,
    ModelSettings,
    PlasticitySettings,
    ReplaySettings,
    Settings,
    TrainSettings,
)
from plasticd.errors import NonFiniteError
from plasticd.learn import reaction
from plasticd.learn.average import AverageClock
from plasticd.learn.choice import CopyChoice
from plasticd.learn.configs import net_config, optim_config, plasticity_config, resolve_device
from plasticd.learn.consolidate import Consolidator, merge_due
from plasticd.learn.drift import Alarm, DriftMonitor
from plasticd.learn.growth_policy import (
    GrowthPolicy,
)
from plasticd.learn.inference import BATCH_ROWS, Predictor, chosen_copy, frozen
from plasticd.learn.persistence import Persisting, Savepoint
from plasticd.learn.prequential import MetricsSnapshot, PrequentialMetrics
from plasticd.learn.readout import readout
from plasticd.learn.replication import Replicating
from plasticd.learn.reports import DriftReport, MergeReport, Report
from plasticd.learn.resizing import Resizing
from plasticd.learn.rewiring import Rewiring
from plasticd.learn.state import Predicting
from plasticd.model.buffer import RecentBuffer
from plasticd.model.normalize import EPS, InputNorm
from plasticd.model.optim import (
    build_optimizer,
    per_step,
    zero_first_moments,
)
from plasticd.model.plastic_net import (
    LIVE,
    Trace,
    Workspace,
    backward,
    cross_entropy_grad,
    forward,
    init_params,
)
from plasticd.model.plasticity import (
    UsageStats,
)
from plasticd.model.replay import ReservoirBuffer

__all__ = ["UNLABELLED", "Engine", "Savepoint", "StepResult", "resolve_device"]

UNLABELLED = -1
_NOT_FINITE = (  # by the first check of the step's readout that failed
    "the network's outputs for this batch are not finite",
    "the network's input statistics (running variance) for this batch are not finite",
    "the gradient of this batch is not finite; the update was not applied",
)


@dataclass(frozen=True)
class StepResult:
    """What one step predicted, per sample, and what it did."""

    predicted: np.ndarray  # (B,) int64 class predicted before training
    confidence: np.ndarray  # (B,) float32 probability of the predicted class
    loss: np.ndarray  # (B,) float32 prequential cross-entropy, NaN where unlabelled
    labels: np.ndarray  # (B,) int64, -1 where unlabelled
    trained: int  # labelled samples learned from in this step


class Engine(Rewiring, Resizing, Persisting, Replicating):
    """A PlasticNet with its optimizer, weight average, input scaler, plasticity and metrics."""

    def __init__(
        self,
        model: ModelSettings,
        train: TrainSettings,
        plasticity: PlasticitySettings,
        growth: GrowthSettings,
        merge: MergeSettings,
        replay: ReplaySettings,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drift: DriftSettings = DriftSettings(),
    ) -> None:
        self.device = torch.device(device)
        self.train_settings = train
        self.plasticity_settings = plasticity
        self.replay_ratio = replay.ratio
        self.cfg = net_config(model)
        self.plasticity = plasticity_config(plasticity)
        copies = 2 if train.average_decay > 0 else 1
        theta, mask = init_params(self.cfg, torch.Generator().manual_seed(seed), copies=copies)
        self.norm = InputNorm(self.cfg.input_dim, enabled=model.input_norm, device=self.device)
        self.stats = UsageStats(self.cfg.neurons, device=self.device)
        self.buffer = RecentBuffer(plasticity.buffer_size, self.cfg.input_dim, device=self.device)
        # experience replay (off by default): a reservoir mixed into training steps
        self.replay = ReservoirBuffer(replay.size, self.cfg.input_dim, self.device, seed=seed + 2) if replay.size else None
        self.consolidator = Consolidator(merge)  # MagMax fold, drift detector (merge.py, consolidate.py)
        self.metrics = PrequentialMetrics(train.window)
        self.clock = AverageClock(train.average_decay, train.average_every)  # the average's per-sample schedule
        self.choice = CopyChoice(copies, train.select_horizon)  # which copy predicts (choice.py)
        self.drift_settings = drift
        self.drift = DriftMonitor(drift)  # change detector on the prequential error (drift.py)
        self.rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.steps = 0  # optimizer steps taken
        self.trained_at_rewire = 0  # labelled samples trained on when the last plasticity cycle ran
        self.rewires = 0
        # A persistent identity per neuron: growth gives new neurons fresh ids and
        # retirement drops ids, so anything kept across size changes (merge bases,
        # logs) can line neurons up by id rather than by position.
        self.neuron_ids = torch.arange(self.cfg.neurons, dtype=torch.int64)  # (N,) on the CPU
        self.next_neuron_id = self.cfg.neurons
        self.neuron_born = torch.zeros(self.cfg.neurons, dtype=torch.int64)  # (N,) labelled samples learned at each birth
        self.growth = GrowthPolicy(growth, model)  # neuron growth/retirement: plateau history and payoff (growth_policy.py)
        self.growth_rng = torch.Generator().manual_seed(seed + 3)  # division shares, new neurons' connections
        self._reports: deque[Report] = deque(maxlen=1024)  # maintenance done since the last take_reports() (bounded)
        self._install(theta, mask)

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device | str | None = None) -> Engine:
        """An engine from the sections of ``settings`` it uses; ``device`` defaults to ``runtime.device`` resolved."""
        return cls(
            model=settings.model,
            train=settings.train,
            plasticity=settings.plasticity,
            growth=settings.growth,
            merge=settings.merge,
            replay=settings.replay,
            seed=settings.runtime.seed,
            device=device if device is not None else resolve_device(settings.runtime.device),
            drift=settings.drift,
        )

    def _install(self, theta: dict[str, Tensor], mask: Tensor, optimizer_state: dict[str, dict[str, Any]] | None = None) -> None:
        """The one step every path that replaces the weights ends in: construction, ``resize``, ``load_state``.

        Takes ``theta`` (each (S, ...)) and ``mask`` (N, N) as the network, sizes the
        architecture by them, rebuilds the float mask, drops the scratch buffer, and
        (re)creates the live/average views, gradient buffers and optimizer, whose
        per-parameter state becomes ``optimizer_state`` (parameter name -> slots).
        """
        self.theta = {k: v.to(self.device) for k, v in theta.items()}  # each (S, ...): live [, average]
        self.mask = mask.to(self.device, torch.bool)  # (N, N) bool
        self.mask_f = self.mask.float()  # (N, N) the same mask as float32, for the gradient multiply
        self.cfg = replace(self.cfg, neurons=self.mask.shape[0])
        self._scratch: Tensor | None = None  # (N, N) float32 score buffer for plasticity cycles, made on first use
        self.live = {k: v[LIVE] for k, v in self.theta.items()}
        self.avg = {k: v[-1] for k, v in self.theta.items()} if self.copies == 2 else None
        if self.choice.copies != self.copies:  # averaging switched on or off since the checkpoint
            self.choice.resize(self.copies)
        self.grads = {k: torch.zeros_like(v) for k, v in self.live.items()}
        self.ws = Workspace()  # the per-sample path's buffers and views (plastic_net.py), for these weights
        for name, p in self.live.items():
            p.grad = self.grads[name]
        self.optim_config = optim_config(self.train_settings, self.cfg.input_dim)
        self.optimizer = build_optimizer(list(self.live.values()), self.optim_config)
        for name, slots in (optimizer_state or {}).items():
            if slots:
                self.optimizer.state[self.live[name]] = slots

    # ------------------------------------------------------------------ learning

    @torch.no_grad()
    def step(self, x: Tensor, y: np.ndarray | Tensor, plasticity: bool = True) -> StepResult:
        """Predict every row of ``x`` (B, D), then train once on the labelled rows (``y`` >= 0).

        With ``plasticity=True`` a rewiring cycle runs once ``plasticity.interval``
        labelled samples have been learned since the last one (samples, not steps,
        so the cadence does not depend on how the stream was batched). Raises NonFiniteError, having
        changed nothing, when the batch would make the network's outputs or update
        non-finite.
        """
        labels = np.asarray(y.cpu() if isinstance(y, Tensor) else y, dtype=np.int64)
        b = len(labels)
        assert x.dim() == 2 and x.shape == (b, self.cfg.input_dim), f"x must be ({b}, {self.cfg.input_dim}), got {tuple(x.shape)}"
        x = x.to(self.device, torch.float32, non_blocking=True)
        is_lab = labels >= 0
        n_lab = int(np.count_nonzero(is_lab))
        norm_before = self.norm.snapshot()
        self.norm.update(x)
        xn = self.norm(x)
        train = (labels, is_lab, n_lab)  # what _learn trains on: this batch, plus replayed rows when replay is on
        if n_lab and self.replay is not None and len(self.replay):
            xn, train = self._with_replay(xn, labels, is_lab, n_lab)
        # Every copy runs on a labelled batch (training needs the live one, the choice scores all);
        # predictions come from the chosen copy, as it was before this step's update.
        chosen = self.choice.chosen()
        theta = self.theta if n_lab else {k: v[chosen : chosen + 1] for k, v in self.theta.items()}
        trace = forward(theta, xn, self.cfg, self.ws)
        pred_logits = trace.logits[chosen if n_lab else 0, :b]  # replayed rows (after the first b) are never predicted
        target = torch.from_numpy(np.where(train[1], train[0], 0)).to(self.device, non_blocking=True)
        # Finite but huge inputs overflow the running variance; rsqrt(inf) = 0 would then
        # blind the network to every later input: refuse the batch like a non-finite output.
        # One sum each (any inf/NaN makes it non-finite; so does an overflowing sum), brought back
        # with the predictions in one transfer (readout.py), before anything is updated.
        checks = [trace.logits.sum(), self.norm.var.sum()]
        if n_lab:
            checks.extend(self._gradients(trace, target, *train[1:]))
        scored = trace.logits[:, :b] if n_lab and self.choice.enabled else None  # every copy, for the choice
        out = readout(pred_logits, target[:b], is_lab, scored, checks)
        if not out.finite.all():
            self.norm.restore(norm_before)
            raise NonFiniteError(_NOT_FINITE[min(int(np.argmin(out.finite)), 2)])  # checks 2.. are the gradients
        if n_lab:
            self._learn(train[2])  # replayed rows count: the step is over every row it trained on
            self._follow_average(n_lab)
        if n_lab:
            x_lab = x if n_lab == b else x[torch.from_numpy(is_lab).to(self.device)]
            self.buffer.add(x_lab, labels[is_lab])
            if self.replay is not None:
                self.replay.add(x_lab, labels[is_lab])
        predicted, confidence, loss, by_copy = out.predicted, out.confidence, out.loss, out.by_copy
        correct = predicted[is_lab] == labels[is_lab]
        self.metrics.update(correct, loss[is_lab], unlabelled=b - n_lab, trained=n_lab)
        if by_copy is not None:
            self.choice.observe(by_copy[:, is_lab] == labels[is_lab])  # (S, n_lab)
        alarm = self.drift.observe((~correct).astype(np.float64), self.metrics.trained - n_lab)
        if alarm is not None:
            self.react("local", alarm)
        if plasticity:
            self._maintain()
        return StepResult(predicted=predicted, confidence=confidence, loss=loss, labels=labels, trained=n_lab)

    def maintain(self) -> None:
        """The maintenance due by sample count, outside a step (replicas step with ``plasticity=False``; rank 0 calls this
        at each barrier on the averaged model)."""
        self._maintain()

    def _maintain(self) -> None:
        """The maintenance whose cadence (in learned samples) is due after a step: rewiring, a growth check, a merge."""
        interval = self.plasticity_settings.interval
        if interval and self.plasticity_settings.enabled and self.since_rewire >= interval:
            self.rewire()
        if self.growth.due(self.metrics.trained):
            self.grow("interval")
        merge = self.consolidator.settings
        due = merge_due(merge, self.consolidator, self.consolidator.since_boundary(self.metrics.trained))
        if due:
            self.merge(due, min_samples=merge.min_samples)

    @property
    def learning_rate(self) -> float:
        """The rate now: ``train.lr``, times a boost that decays linearly over ``drift.boost_samples`` after an alarm."""
        d = self.drift_settings
        since = self.metrics.trained - self.drift.last_alarm_at
        left = max(0.0, 1.0 - since / d.boost_samples) if self.drift.alarms else 0.0
        return self.optim_config.lr * (1.0 + (d.lr_boost - 1.0) * left)

    def _follow_average(self, samples: int) -> None:
        """The average follows the live weights as far as ``samples`` newly learned ones take it (average.py)."""
        weight = self.clock.advance(samples)
        if self.avg is not None and weight is not None:
            torch._foreach_lerp_(list(self.avg.values()), list(self.live.values()), weight)

    def react(self, origin: str = "local", alarm: Alarm | None = None) -> DriftReport:
        """A change of the concept: apply the drift reaction table (reaction.py) and queue its ``DriftReport``.

        ``origin="local"``: this engine's detector raised ``alarm``; ``"group"``: a replica's did since the last
        agreement (``fold``), and the evidence is the group's window.
        """
        d = self.drift
        parts = reaction.Parts(self.live, self.avg, self.clock, self.choice, self.growth, self.consolidator)
        actions = reaction.react(self.drift_settings, self.consolidator.settings, parts)
        if alarm is None:
            recent = self.metrics.recent_correct(min(self.metrics.window, 200))
            error = round(float(1.0 - recent.mean()), 4) if recent.size else 0.0
            alarm = Alarm(self.drift_settings.detector, d.last_alarm_at, error, None, self.metrics.trained - d.last_alarm_at)
        report = DriftReport(
            detector=alarm.detector, trained=alarm.trained, error_recent=alarm.error_recent,
            error_before=alarm.error_before, since_last=alarm.since_last, actions=actions, origin=origin,
        )  # fmt: skip
        self._reports.append(report)
        return report

    def take_reports(self) -> list[Report]:
        """The maintenance reports (rewire, growth, merge) since the last call, oldest first."""
        reports = list(self._reports)
        self._reports.clear()
        return reports

    def _with_replay(
        self, xn: Tensor, labels: np.ndarray, is_lab: np.ndarray, n_lab: int
    ) -> tuple[Tensor, tuple[np.ndarray, np.ndarray, int]]:
        """Append ``ceil(replay.ratio * n_lab)`` reservoir samples to the normalised batch (B, D) for training."""
        assert self.replay is not None, "replay is off"
        k = int(np.ceil(self.replay_ratio * n_lab))
        rx, ry = self.replay.sample(k)  # (k, D) raw on the device, (k,) on the CPU
        xn = torch.cat((xn, self.norm(rx)))  # (B + k, D)
        labels = np.concatenate((labels, ry.numpy()))
        is_lab = np.concatenate((is_lab, np.ones(k, dtype=bool)))
        return xn, (labels, is_lab, n_lab + k)

    @torch.no_grad()
    def merge(self, reason: str, lam: float | None = None, min_samples: int = 0) -> MergeReport:
        """A task boundary: fold the task vector and write the MagMax merge θ₀ + λ·τ* (see consolidate.py).

        The merge goes into every copy; the optimizer's first moments are zeroed
        (they point along the pre-merge trajectory), second moments kept.
        """
        current = {k: v[-1] for k, v in self.theta.items()}  # the predicting copy, (…) without the copy axis
        merge = self.consolidator.merge(
            current, self.neuron_ids, self.mask, self.metrics.trained, reason, lam=lam, min_samples=min_samples
        )
        if merge.theta is not None:
            for k, v in self.theta.items():
                v.copy_(merge.theta[k].unsqueeze(0).expand_as(v))  # every copy: (S, …)
            zero_first_moments(self.optimizer, list(self.live.values()))
        self._reports.append(merge.report)
        return merge.report

    def _gradients(self, trace: Trace, target: Tensor, is_lab: np.ndarray, n_lab: int) -> list[Tensor]:
        """The live copy's gradient on the labelled rows into ``grads`` (nothing else changes); the sum of
        each gradient, for the finiteness check."""
        weight = None if n_lab == len(is_lab) else torch.from_numpy(is_lab.astype(np.float32)).to(self.device)
        dlogits = cross_entropy_grad(trace.logits[LIVE], target, weight, self.train_settings.label_smoothing)
        backward(self.live, trace, dlogits, self.grads, self.cfg, self.ws)
        self.grads["w"].mul_(self.mask_f)  # absent connections get no update
        return [g.sum() for g in self.grads.values()]

    def _learn(self, n_lab: int) -> None:
        """One optimizer step of the live copy with the gradient ``_gradients`` wrote."""
        per_step(self.optimizer, self.optim_config, self.learning_rate, n_lab)
        self.optimizer.step()
        self.steps += 1

    def predict_logits(self, x: Tensor, batch_size: int = BATCH_ROWS) -> Tensor:
        """Logits (B, C) for ``x`` (B, D) as the engine would predict them now (the chosen copy); changes no state."""
        return self._predictor().logits(x, batch_size)

    def predictor(self) -> Predictor:
        """What ``predict_logits`` uses now, cloned (inference.py): it predicts as the engine does at this moment,
        whatever the engine does next, and may be used from another thread."""
        return frozen(self._predictor())

    def _predictor(self) -> Predictor:
        return Predictor(chosen_copy(self.theta, self.choice.chosen()), self.norm, self.cfg)

    def predicting(self) -> Predicting:
        """A CPU copy of the weights that predict now (the chosen copy), the mask and the input scaler."""
        chosen, cfg, norm = self.choice.chosen(), self.cfg, self.norm
        cpu = {k: v[chosen].detach().float().cpu().contiguous() for k, v in self.theta.items()}
        mean, var = (norm.mean.float().cpu().contiguous(), norm.var.float().cpu().contiguous()) if norm.enabled else (None, None)
        copy_name = "average" if self.copies > 1 and chosen == self.copies - 1 else "live"
        return Predicting(
            cpu, self.mask.cpu().contiguous(), mean, var, EPS, copy_name, cfg.input_dim, cfg.output_dim, cfg.neurons,
            cfg.iterations, cfg.activation, self.metrics.seen,
        )  # fmt: skip

    def evaluate(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> float:
        """Accuracy on a held-out set; changes no state."""
        predicted = self.predict_logits(x, batch_size).argmax(dim=1).cpu()
        return float((predicted == y.cpu()).float().mean())

    # ------------------------------------------------------------------- reports

    def snapshot(self) -> MetricsSnapshot:
        return self.metrics.snapshot()
