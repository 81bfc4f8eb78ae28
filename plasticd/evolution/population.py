"""The population: a champion that predicts and up to P challengers that learn from the same samples.

``Population.step(x, y)`` is ``Engine.step`` for the champion, then, within the
compute budget (budget.py), the same batch for the challengers in turn: each
predicts every row before it learns from it (test-then-train), so its score
(promotion.Score, paired with the champion's errors on the same samples) is
as honest as the champion's. Every ``evolution.check_every`` labelled samples
the population

1. promotes the challenger that beats the champion beyond the Hoeffding bound
   after ``min_samples`` (promotion.judge; cost rule with one knob), logging
   ``evolution.promoted`` with both genomes, windows, bounds and costs;
2. retires challengers that are clearly worse, dominated on the front of
   (error relative to the champion, work per sample, active parameters)
   (pareto.py), or older than ``MAX_AGE`` × min_samples without a promotion;
3. fills the free slots with children of the front: one-gene mutations or
   crossovers, inheriting weights where the change allows (mutation.py).

A drift alarm of the champion starts a fresh challenger of the champion's
genome (ARF's background learner). Repair (repair.py) is a mutation: a
share of the children are the champion with its dead, saturated or
exploding neurons replaced, judged like any other child; with
``repair_every`` it is also maintenance on every candidate.
All decisions depend on sample counts and modelled work only, so ``state``
/ ``load_state`` continue the whole population bit-identically.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plasticd.config import Settings
from plasticd.errors import NonFiniteError
from plasticd.evolution.budget import Budget, active_parameters, step_cost, work_per_sample
from plasticd.evolution.genome import Genome
from plasticd.evolution.mutation import crossover, mutate, spawn
from plasticd.evolution.pareto import dominates, fronts
from plasticd.evolution.promotion import Score, Verdict, cost_penalty, hoeffding, judge
from plasticd.evolution.repair import repair
from plasticd.learn.engine import Engine, StepResult, resolve_device
from plasticd.learn.prequential import MetricsSnapshot
from plasticd.learn.reports import DriftReport, Report

MAX_AGE = 8  # a challenger is retired after MAX_AGE × min_samples scored samples without a promotion
CROSSOVER_SHARE = 0.3  # share of children made by crossover when the front has two or more parents
REPAIR_SHARE = 0.2  # share of children that are the champion with its faulty neurons repaired (repair as a mutation)
PREFIX = "evolution."  # challengers' tensors in a checkpoint: evolution.<slot>.<engine tensor name>


@dataclass
class Candidate:
    genome: Genome
    engine: Engine
    base_neurons: int  # model.neurons its Engine was built with
    seed: int
    born: int  # the population's labelled samples when it was born
    origin: str  # "settings", "initial", "mutation:<gene>", "crossover", "drift", "promoted"
    inherited: str  # how it got its weights (mutation.Child.inherited)
    score: Score = field(default_factory=Score)
    work: float = 0.0  # modelled multiply-adds per labelled sample
    size: int = 0  # active parameters
    us_per_sample: float = 0.0  # measured, EMA over its steps (reported only)

    def refresh(self) -> None:
        self.work, self.size = work_per_sample(self.engine), active_parameters(self.engine)

    def describe(self) -> dict[str, Any]:
        return {
            "genome": self.genome.to_dict(),
            "label": self.genome.label(),
            "neurons_now": self.engine.cfg.neurons,
            "origin": self.origin,
            "inherited": self.inherited,
            "born": self.born,
            "window": self.score.to_dict(),
            "work_per_sample": self.work,
            "us_per_sample": round(self.us_per_sample, 2),
            "active_parameters": self.size,
        }


@dataclass(frozen=True)
class EvolutionEvent:
    """One thing the population did: ``evolution.promoted``, ``.spawned``, ``.retired``, ``.repaired``."""

    event: str
    fields: dict[str, Any]


class Population:
    """A champion Engine and its challengers; the same doors as an Engine (``step``, ``state``, ``load_state``)."""

    def __init__(self, settings: Settings, device: torch.device | str | None = None) -> None:
        self.settings = settings
        self.ev = settings.evolution
        self.device = torch.device(device) if device is not None else resolve_device(settings.runtime.device)
        seed = settings.runtime.seed
        self.rng = np.random.default_rng(seed + 7919)
        first = Genome.from_settings(settings)
        champion = Candidate(first, Engine.from_settings(settings, device=self.device), settings.model.neurons, seed, 0,
                             "settings", "fresh")  # fmt: skip
        self.candidates: list[Candidate] = [champion]  # [0] is the champion
        self.budget = Budget(self.ev.budget, self.ev.backlog_budget, settings.train.max_batch)
        self.trained = 0  # labelled samples the champion learned from
        self.serial = 0  # children made (their seeds)
        self.checked_at = 0
        self.repaired_at = 0
        self.promotions = 0
        # measured wall time (reported, never decided on): champion steps; challenger steps; challengers + checks + repair
        self.seconds = {"champion": 0.0, "challengers": 0.0, "evolution": 0.0}
        self._reports: deque[Report] = deque(maxlen=1024)
        self._events: deque[EvolutionEvent] = deque(maxlen=1024)
        champion.refresh()
        for _ in range(self.ev.population):
            self._add(self._child(initial=True))

    # ------------------------------------------------------------------ learning

    @property
    def champion(self) -> Engine:
        return self.candidates[0].engine

    @property
    def challengers(self) -> list[Candidate]:
        return self.candidates[1:]

    @torch.no_grad()
    def step(self, x: Tensor, y: np.ndarray | Tensor, plasticity: bool = True) -> StepResult:
        """The champion's step, then the challengers' within the budget; the champion's (or the front's) prediction."""
        t_start = time.perf_counter()
        result = self.champion.step(x, y, plasticity)
        t_champion = time.perf_counter()
        self.seconds["champion"] += t_champion - t_start
        new = self.champion.take_reports()
        self._reports.extend(new)
        labels, n_lab = result.labels, result.trained
        if not n_lab:
            return result
        is_lab = labels >= 0
        champion_miss = result.predicted[is_lab] != labels[is_lab]
        champion_wrong = int(np.count_nonzero(champion_miss))
        self.budget.grant(step_cost(self.candidates[0].work, len(labels)), len(labels))
        votes = [(result.predicted, self._weight(self.candidates[0]))] if self.ev.ensemble else []
        failed: list[Candidate] = []
        slots = self.challengers
        for slot in self.budget.lease(len(slots)):
            if not self.budget.can_pay():
                break
            c = slots[slot]
            t0 = time.perf_counter()
            try:
                r = c.engine.step(x, y, plasticity)
            except NonFiniteError:
                failed.append(c)
                continue
            finally:
                self.budget.pay(step_cost(c.work, len(labels)), slot, len(slots))
            us = (time.perf_counter() - t0) * 1e6 / len(labels)
            c.us_per_sample = us if c.us_per_sample == 0.0 else 0.9 * c.us_per_sample + 0.1 * us
            c.engine.take_reports()  # a challenger's maintenance is its own business
            miss = r.predicted[is_lab] != labels[is_lab]
            disagree = int(np.count_nonzero(miss != champion_miss))
            c.score.add(int(np.count_nonzero(miss)), champion_wrong, n_lab, float(np.nansum(r.loss)), disagree)
            if self.ev.ensemble and c.score.n >= self.ev.min_samples:
                votes.append((r.predicted, self._weight(c)))
        for c in failed:
            self._retire(c, "non_finite")
        self.seconds["challengers"] += time.perf_counter() - t_champion
        self.trained += n_lab
        if self.ev.spawn_on_drift and any(isinstance(r, DriftReport) for r in new) and self.ev.population:
            self._spawn_at_drift()
        if self.trained - self.checked_at >= self.ev.check_every:
            self.check()
        if self.ev.repair_every and self.trained - self.repaired_at >= self.ev.repair_every:
            self.repair()
        self.seconds["evolution"] += time.perf_counter() - t_champion
        return self._vote(result, votes) if len(votes) > 1 else result

    def _weight(self, c: Candidate) -> float:
        recent = c.engine.metrics.recent_correct(self.ev.min_samples)
        return float(recent.mean()) ** 2 if len(recent) else 0.0

    def _vote(self, result: StepResult, votes: list[tuple[np.ndarray, float]]) -> StepResult:
        """The front's accuracy-weighted vote (ARF's): each member's class gets its weight; shares as confidence."""
        c = self.champion.cfg.output_dim
        tally = np.zeros((len(result.labels), c))
        for predicted, w in votes:
            tally[np.arange(len(predicted)), predicted] += w
        total = tally.sum(axis=1).clip(min=1e-12)
        predicted = tally.argmax(axis=1)
        confidence = (tally[np.arange(len(predicted)), predicted] / total).astype(np.float32)
        return replace(result, predicted=predicted.astype(np.int64), confidence=confidence)

    # ------------------------------------------------------------------ selection

    def verdicts(self) -> list[Verdict]:
        """Each challenger against the champion (promotion.judge), in slot order."""
        champion_work = self.candidates[0].work
        return [
            judge(
                c.score,
                cost_penalty(c.work, champion_work, self.ev.cost_weight),
                self.ev.min_samples,
                self.ev.confidence,
                self.ev.bound,
            )  # fmt: skip
            for c in self.challengers
        ]

    def front(self) -> list[int]:
        """Indices into ``candidates`` of the non-dominated set over (error relative to the champion, work, size)."""
        return fronts(self._points())[0]

    def _points(self) -> list[tuple[float, float, float]]:
        points = [(0.0, self.candidates[0].work, float(self.candidates[0].size))]
        for c in self.challengers:
            rel = c.score.error - c.score.champion_error if c.score.n >= self.ev.min_samples else 1.0
            if c.score.n >= self.ev.min_samples and abs(rel) <= 2.0 * hoeffding(c.score.n, self.ev.confidence):
                rel = 0.0  # within the bound: a tie, so a rival of the champion's shape is not "dominated" by noise
            points.append((rel, c.work, float(c.size)))
        return points

    def check(self) -> None:
        """Promote on evidence, retire what lost, fill the free slots with children of the front."""
        self.checked_at = self.trained
        for c in self.candidates:
            c.refresh()
        verdicts = self.verdicts()
        winners = [(v.error + v.penalty, i) for i, v in enumerate(verdicts) if v.promote]
        if winners:
            self._promote(min(winners)[1] + 1, verdicts[min(winners)[1]])
            verdicts = self.verdicts()
        points = self._points()
        for i, (c, v) in reversed(list(enumerate(zip(self.challengers, verdicts, strict=True), start=1))):
            ready = c.score.n >= self.ev.min_samples
            dominated = ready and any(j != i and dominates(points[j], points[i]) for j in range(len(points)))
            old = c.score.n >= MAX_AGE * self.ev.min_samples
            if v.worse or dominated or old:
                self._retire(c, "worse" if v.worse else "dominated" if dominated else "old", v)
        while len(self.challengers) < self.ev.population:
            self._add(self._child())

    def _promote(self, index: int, verdict: Verdict) -> None:
        old, new = self.candidates[0], self.candidates[index]
        self._events.append(EvolutionEvent("evolution.promoted", {
            "trained": self.trained,
            "champion": new.describe(),
            "previous": old.describe(),
            "bounds": verdict.to_dict(),
        }))  # fmt: skip
        self.candidates[0], self.candidates[index] = new, old
        old.origin = "promoted"  # the old champion stays on as a challenger until it loses
        for c in self.candidates:
            c.score = Score()  # windows are paired with the champion: a new champion starts new ones
        self.promotions += 1

    def _retire(self, c: Candidate, why: str, verdict: Verdict | None = None) -> None:
        self.candidates.remove(c)
        fields = {"trained": self.trained, "why": why, **c.describe()}
        if verdict is not None:
            fields["bounds"] = verdict.to_dict()
        self._events.append(EvolutionEvent("evolution.retired", fields))

    def add_challenger(self, genome: Genome, inherit: bool = True, origin: str = "manual") -> Candidate:
        """A challenger of ``genome`` now, outside the policy (tests, experiments): a child of the champion's weights
        where ``inherit`` and the change allow it, else fresh. It may exceed ``evolution.population`` until a check."""
        c = self._make(genome, origin, self.candidates[0] if inherit else None)
        self._add(c)
        return c

    def _add(self, c: Candidate) -> None:
        c.refresh()
        self.candidates.append(c)
        self._events.append(EvolutionEvent("evolution.spawned", {"trained": self.trained, **c.describe()}))

    def _child(self, initial: bool = False) -> Candidate:
        """A child of the front: a crossover of two front members or a one-gene mutation of one."""
        front = [i for i in self.front() if i == 0 or self.candidates[i].score.n >= self.ev.min_samples]
        parents = [self.candidates[i] for i in front]
        roll = self.rng.random()
        if not initial and roll < REPAIR_SHARE:
            return self.repaired_child(self.candidates[0])
        if len(parents) >= 2 and roll < REPAIR_SHARE + CROSSOVER_SHARE:
            a, b = (parents[i] for i in self.rng.choice(len(parents), size=2, replace=False))
            genome, origin, parent = crossover(a.genome, b.genome, self.rng), "crossover", a
        else:
            parent = parents[int(self.rng.integers(len(parents)))]
            genome, gene = mutate(parent.genome, self.rng, self.ev.max_neurons)
            origin = "initial" if initial else f"mutation:{gene}"
        return self._make(genome, origin, parent)

    def _make(self, genome: Genome, origin: str, parent: Candidate | None) -> Candidate:
        self.serial += 1
        seed = self.settings.runtime.seed + 1000 * self.serial
        donor = (parent.engine, parent.genome, parent.base_neurons) if parent is not None else None
        child = spawn(self.settings, genome, seed, self.device, donor)
        genome = genome.with_gene("neurons", child.engine.cfg.neurons)  # what the doors could make
        return Candidate(genome, child.engine, child.base_neurons, seed, self.trained, origin, child.inherited)

    def repaired_child(self, parent: Candidate) -> Candidate:
        """Repair as a mutation: a copy of ``parent`` (its whole state) whose faulty neurons are replaced; it then has
        to earn its promotion like any other child. Without anything to repair, a plain one-gene mutation instead."""
        child = self._make(parent.genome, "repair", parent)
        report = repair(child.engine)
        if report is None:
            genome, gene = mutate(parent.genome, self.rng, self.ev.max_neurons)
            return self._make(genome, f"mutation:{gene}", parent)
        self._events.append(EvolutionEvent("evolution.repaired", {
            "trained": self.trained, "candidate": "child", "label": parent.genome.label(), **report.to_dict(),
        }))  # fmt: skip
        return child

    def _spawn_at_drift(self) -> None:
        """ARF's background learner: a fresh network of the champion's genome, in the worst challenger's slot if full."""
        if len(self.challengers) >= self.ev.population:
            worst = max(self.challengers, key=lambda c: (c.score.error - c.score.champion_error, -c.born))
            self._retire(worst, "drift")
        self._add(self._make(self.candidates[0].genome, "drift", None))

    def repair(self) -> None:
        """Neural repair of every candidate (repair.py); each pass that found something is an event."""
        self.repaired_at = self.trained
        for i, c in enumerate(self.candidates):
            report = repair(c.engine)
            if report is not None:
                c.refresh()
                self._events.append(EvolutionEvent("evolution.repaired", {
                    "trained": self.trained, "candidate": i, "label": c.genome.label(), **report.to_dict(),
                }))  # fmt: skip

    # ------------------------------------------------------------------ reports

    def take_reports(self) -> list[Report]:
        """The champion's maintenance reports since the last call (as ``Engine.take_reports``)."""
        out = list(self._reports)
        self._reports.clear()
        return out

    def take_events(self) -> list[EvolutionEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    def snapshot(self) -> MetricsSnapshot:
        return self.champion.snapshot()

    def describe(self) -> dict[str, Any]:
        """The champion, the front and every candidate, for status and reports."""
        return {
            "champion": self.candidates[0].describe(),
            "front": self.front(),
            "candidates": [c.describe() for c in self.candidates],
            "promotions": self.promotions,
            "budget": self.budget.to_dict(),
        }

    # --------------------------------------------------------------- persistence

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """The champion's Engine state as is (names unprefixed), every challenger's under ``evolution.<slot>.``,
        and ``meta["evolution"]``: genomes, windows, the budget, the rng and the counters."""
        tensors, meta = self.champion.state()
        tensors, meta = dict(tensors), dict(meta)
        entries = []
        for slot, c in enumerate(self.candidates):
            entry = {**c.describe(), "base_neurons": c.base_neurons, "seed": c.seed}
            if slot:
                t, m = c.engine.state()
                tensors.update({f"{PREFIX}{slot}.{k}": v for k, v in t.items()})
                entry["engine"] = m
            entries.append(entry)
        meta["evolution"] = {
            "candidates": entries,
            "budget": self.budget.to_dict(),
            "rng": self.rng.bit_generator.state,
            "counters": {"trained": self.trained, "serial": self.serial, "checked_at": self.checked_at,
                         "repaired_at": self.repaired_at, "promotions": self.promotions},
        }  # fmt: skip
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> dict[str, tuple[Any, Any]]:
        """Resume the whole population from ``state()`` output; a plain Engine checkpoint resumes the champion alone."""
        ev = meta.get("evolution")
        self._events.clear()  # what construction did is not what the checkpoint's population did
        self._reports.clear()
        own = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
        engine_meta = {k: v for k, v in meta.items() if k != "evolution"}
        changes: dict[str, tuple[Any, Any]] = {}
        if ev is None:
            changes = self.champion.load_state(own, engine_meta)
            self.candidates = self.candidates[:1]
            return changes
        candidates = []
        for slot, entry in enumerate(ev["candidates"]):
            genome = Genome.from_dict(entry["genome"])
            base, seed = int(entry["base_neurons"]), int(entry["seed"])
            engine = Engine.from_settings(genome.apply(self.settings, neurons=base, seed=seed), device=self.device)
            if slot == 0:
                changes = engine.load_state(own, engine_meta)
            else:
                prefix = f"{PREFIX}{slot}."
                mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                engine.load_state(mine, json.loads(json.dumps(entry["engine"])))
            c = Candidate(genome, engine, base, seed, int(entry["born"]), entry["origin"], entry["inherited"],
                          Score.from_dict(entry["window"]), float(entry["work_per_sample"]),
                          int(entry["active_parameters"]), float(entry["us_per_sample"]))  # fmt: skip
            candidates.append(c)
        self.candidates = candidates
        self.budget.load(ev["budget"])
        self.rng.bit_generator.state = ev["rng"]
        counters = ev["counters"]
        self.trained, self.serial = int(counters["trained"]), int(counters["serial"])
        self.checked_at, self.repaired_at = int(counters["checked_at"]), int(counters["repaired_at"])
        self.promotions = int(counters["promotions"])
        return changes
