"""What maintenance did: one report type per kind of change, and how each is logged.

The Engine runs rewiring, growth checks, merges and drift reactions (when its cadences say so
inside ``step``, or when asked through ``rewire``/``grow``/``merge``) and
queues a report for each; the service takes them with
``Engine.take_reports()`` and logs them with ``log_report``. A report whose
``changed`` is true altered the network (the model wants a checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RewireReport:
    """One plasticity cycle: what was pruned and regrown, and what it cost."""

    trained: int  # labelled samples learned when it ran
    pruned: int
    regrown: int
    active_before: int
    active_after: int
    eligible: int  # active connections old enough to be pruned
    estimate_ms: float  # statistics pass over the recent-sample buffer
    rewire_ms: float  # choosing and applying the changes
    skipped: str | None = None  # why nothing was done, if so

    @property
    def changed(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True)
class GrowthReport:
    """What one growth check saw, decided and did."""

    trigger: str  # "interval", "idle", "manual"
    decision: str  # "grew", "retired", "grew+retired", "none", "skipped"
    reason: str  # why, in words
    neurons_before: int
    neurons_after: int
    active_before: int
    active_after: int
    divided: int = 0
    gradmax: int = 0
    retired: int = 0
    recent_accuracy: float | None = None
    previous_accuracy: float | None = None
    check_ms: float = 0.0

    @property
    def changed(self) -> bool:
        return self.neurons_after != self.neurons_before or self.retired > 0


@dataclass(frozen=True)
class MergeReport:
    """One task boundary: the MagMax merge it wrote, or why it wrote nothing."""

    reason: str  # what triggered the boundary: idle, samples, drift, task, ...
    lam: float  # λ used
    tasks: int  # task vectors folded into τ* so far
    entries_changed: int  # parameter entries whose value the merge changed
    entries: int  # parameter entries under the merge (recurrent ones only where the mask is on)
    neurons: int  # N at the merge
    trained: int  # labelled samples learned since the previous boundary
    merge_ms: float
    skipped: str | None = None  # why nothing was written, if so
    refused: bool = False  # skipped because the values were not finite (an error, not a routine skip)

    @property
    def changed(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True)
class DriftReport:
    """A detected change of the concept (the evidence) and what the engine did about it."""

    detector: str
    trained: int  # labelled samples learned when it fired
    error_recent: float  # prequential error rate over the latest samples ...
    error_before: float | None  # ... and over those before them
    since_last: int  # labelled samples since the previous alarm
    actions: tuple[str, ...]  # the rows of the reaction table that acted (reaction.py): "average_reset", ...
    origin: str = "local"  # "local": this engine's detector fired; "group": a replica's did, reacted to at an agreement

    @property
    def changed(self) -> bool:
        return True  # the monitor's state changed (and usually the weights): worth a checkpoint


Report = RewireReport | GrowthReport | MergeReport | DriftReport


def log_rewire(log, report: RewireReport) -> None:
    """One ``plasticity.rewired`` event per cycle (or ``plasticity.skipped``)."""
    if report.skipped:
        log.info("plasticity.skipped", reason=report.skipped, trained=report.trained)
        return
    log.info(
        "plasticity.rewired",
        pruned=report.pruned,
        regrown=report.regrown,
        active=report.active_after,
        eligible=report.eligible,
        estimate_ms=round(report.estimate_ms, 2),
        rewire_ms=round(report.rewire_ms, 2),
        trained=report.trained,
    )


def log_growth(log, report: GrowthReport) -> None:
    """``growth.decided`` for every check; ``growth.applied`` with before/after sizes when the network changed."""
    fields = asdict(report)
    fields["check_ms"] = round(report.check_ms, 2)
    decided = ("trigger", "decision", "reason", "recent_accuracy", "previous_accuracy")
    log.info("growth.decided", **{k: fields[k] for k in decided})
    if report.changed:
        sizes = ("neurons_before", "neurons_after", "active_before", "active_after", "divided", "gradmax", "retired", "check_ms")
        log.info("growth.applied", **{k: fields[k] for k in sizes})


def log_merge(log, report: MergeReport) -> None:
    """One ``merge.applied`` event per merge (``merge.skipped`` when nothing was written; an error
    when it was refused for non-finite values)."""
    r = report
    fields = {"reason": r.reason, "lam": r.lam, "tasks": r.tasks, "neurons": r.neurons, "trained": r.trained}
    if report.skipped is None:
        log.info(
            "merge.applied", changed=report.entries_changed, entries=report.entries, merge_ms=round(report.merge_ms, 2), **fields
        )
    elif report.refused:
        log.error("merge.refused", why=report.skipped, **fields)
    else:
        log.info("merge.skipped", why=report.skipped, **fields)


def log_drift(log, report: DriftReport) -> None:
    """``drift.detected`` with its evidence; ``drift.adapted`` with what was done (when anything was)."""
    log.info(
        "drift.detected", detector=report.detector, trained=report.trained, error_recent=report.error_recent,
        error_before=report.error_before, since_last=report.since_last, origin=report.origin,
    )  # fmt: skip
    if report.actions:
        log.info("drift.adapted", actions=list(report.actions), trained=report.trained, origin=report.origin)


def log_report(log, report: Report) -> None:
    """The events of one maintenance report (see each ``log_*``)."""
    if isinstance(report, RewireReport):
        log_rewire(log, report)
    elif isinstance(report, GrowthReport):
        log_growth(log, report)
    elif isinstance(report, DriftReport):
        log_drift(log, report)
    else:
        log_merge(log, report)
