"""The group's clocks: every count the engine keeps in learned samples, made the group's at each barrier.

Between barriers each replica counts only what it learned itself. At a
barrier every replica hands the others, in one all_gather_object, what it
counted since the barrier before: its prequential outcomes (the 0/1
correctness and loss of each labelled sample, for the metrics' window), its
seen/labelled/correct/trained counts, its optimizer steps, the age of its
weight-average clock, its drift alarms and its copy-choice scores. Every
replica then folds the others' into its own engine, so after the barrier
each engine counts what the *group* learned:

* ``metrics.trained`` (and seen, labelled, correct) are the group's: the
  cadences that run on it (rewiring every ``plasticity.interval``, growth
  checks, merges every ``merge.every_samples``, neurons' ages, the drift
  boost) run in group samples, as they would in one process that learned
  the whole stream; rank 0 maintains at the barrier with these counts. The
  metrics' window holds each replica's own outcomes first, then the
  others' (in rank order): the same counts everywhere, the window's order
  per replica;
* optimizer steps (``Engine.steps`` and Adam's per-parameter ``step``) are
  the last agreed count plus every replica's steps since (the moments
  themselves are averaged with the weights: ``averaging``);
* the weight average's clock (``AverageClock``): its age is the last
  agreed age plus every replica's samples since; the samples pending toward
  its next move are the largest of the replicas' (always fewer than
  ``train.average_every``);
* which copy predicts (``CopyChoice``): the mean of the replicas' scores;
* drift: each replica's monitor watches its own prequential errors between
  barriers and reacts at once, locally (``Engine`` restarts its average). At
  the barrier, if any replica raised an alarm since the one before, every
  replica takes the group's reaction on the averaged model (the average set
  to the live weights, its clock restarted, the choice levelled, growth
  re-armed), the alarm count and the last alarm's sample count become the
  group's, and every monitor is rebuilt from the group's window (as after a
  restart), so no replica alarms again for the change the group reacted to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from plasticd.learn.engine import Engine


@dataclass
class Marks:
    """The engine's counts as the group last agreed them (what "since the barrier before" is measured from)."""

    seen: int
    labelled: int
    correct: int
    trained: int
    steps: int
    age: int
    alarms: int

    @classmethod
    def of(cls, engine: Engine) -> Marks:
        m = engine.metrics
        return cls(m.seen, m.labelled, m.correct, m.trained, engine.steps, engine.clock.age, engine.drift.alarms)


@dataclass(frozen=True)
class Agreed:
    """What one agreement folded in from the other replicas."""

    trained: int  # labelled samples the others learned since the barrier before
    alarms: int  # drift alarms raised in the group since the barrier before
    reacted: bool  # the group's drift reaction was applied


def _mine(engine: Engine, marks: Marks) -> dict:
    m, labelled = engine.metrics, engine.metrics.labelled - marks.labelled
    return {
        "seen": m.seen - marks.seen,
        "labelled": labelled,
        "correct": m.correct - marks.correct,
        "trained": m.trained - marks.trained,
        "outcomes": m.recent_correct(labelled).astype(np.bool_),  # at most the window
        "losses": m.recent_loss(labelled).astype(np.float32),
        "steps": engine.steps - marks.steps,
        "age": engine.clock.age - marks.age,
        "pending": engine.clock.pending,
        "alarms": engine.drift.alarms - marks.alarms,
        "last_alarm_at": engine.drift.last_alarm_at,
        "choice": engine.choice.state_dict(),
    }


def _fold_metrics(engine: Engine, other: dict) -> None:
    """Count another replica's prequential outcomes into ``engine``'s metrics (its window: the latest ones)."""
    m = engine.metrics
    kept = other["outcomes"]
    m.update(kept, other["losses"].astype(np.float64), unlabelled=other["seen"] - other["labelled"], trained=other["trained"])
    dropped = other["labelled"] - kept.size  # more than a window since the barrier before: counted, not kept
    if dropped:
        m.seen += dropped
        m.labelled += dropped
        m.correct += other["correct"] - int(np.count_nonzero(kept))


def agree(engine: Engine, rank: int, world_size: int, marks: Marks) -> Agreed:
    """Make ``engine``'s clocks the group's (collective: every replica calls it, after ``averaging.average``)."""
    everyone: list = [None] * world_size
    dist.all_gather_object(everyone, _mine(engine, marks))
    others = [o for r, o in enumerate(everyone) if r != rank]
    for other in others:
        _fold_metrics(engine, other)
    more_steps = sum(o["steps"] for o in others)
    engine.steps += more_steps
    for p in engine.live.values():
        step = engine.optimizer.state.get(p, {}).get("step")
        if isinstance(step, torch.Tensor):
            step.add_(more_steps)
        elif step is not None:
            engine.optimizer.state[p]["step"] = step + more_steps
    clock = engine.clock
    clock.age = marks.age + sum(o["age"] for o in everyone)
    clock.pending = max(o["pending"] for o in everyone)
    if engine.choice.enabled:
        engine.choice.load_state_dict(np.mean([o["choice"] for o in everyone], axis=0))
    alarms = sum(o["alarms"] for o in everyone)
    reacted = False
    if alarms:
        d = engine.drift
        d.alarms = marks.alarms + alarms
        d.last_alarm_at = max(o["last_alarm_at"] for o in everyone)
        reacted = react(engine)
        d.rebuild(1.0 - engine.metrics.recent_correct(engine.metrics.window), engine.metrics.trained - d.last_alarm_at)
    return Agreed(trained=sum(o["trained"] for o in others), alarms=alarms, reacted=reacted)


def react(engine: Engine) -> bool:
    """The group's drift reaction on the averaged model, what ``Engine``'s own reaction does (``drift.*`` settings)."""
    s = engine.drift_settings
    acted = False
    if s.reset_average and engine.avg is not None:
        torch._foreach_copy_(list(engine.avg.values()), list(engine.live.values()))
        engine.clock.restart()
        engine.choice.level()
        acted = True
    if s.rearm_growth:
        engine.growth.rearm()
        acted = True
    return acted
