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
  barriers and reacts at once, locally (the reaction table of
  ``learn/reaction.py``, a ``DriftReport`` with origin "local"). At the
  barrier, if any replica raised an alarm since the one before, every
  replica applies the same table on the averaged model (origin "group", one
  more ``DriftReport`` that the worker logs and ``/metrics`` counts), the
  alarm count and the last alarm's sample count become the group's, and
  every monitor is rebuilt from the group's window (as after a restart), so
  no replica alarms again for the change the group reacted to.

The Engine does all of it (``Engine.counts``, ``news`` and ``fold``, laid out
in ``learn/replication.py``); this module only moves the plain data.
"""

from __future__ import annotations

import torch.distributed as dist

from plasticd.learn.engine import Engine
from plasticd.learn.replication import Counts, Folded


def agree(engine: Engine, rank: int, world_size: int, marks: Counts) -> Folded:
    """Make ``engine``'s clocks the group's (collective: every replica calls it, after ``averaging.average``)."""
    everyone: list = [None] * world_size
    dist.all_gather_object(everyone, engine.news(marks))
    return engine.fold(everyone, rank, marks)
