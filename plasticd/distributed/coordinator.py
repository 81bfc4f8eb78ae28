"""The replicas' loop: when they meet, what they agree on, and the checkpoint that covers them all.

The barrier protocol. After a turn of its worker loop (one micro-batch, or
an idle wait) and at most every ``replicas.agree_seconds`` while it is busy (every turn
when it is idle or stopping), each replica adds a few numbers into one
small all_reduce (``FLAGS``): labelled samples since the last sync, unsaved samples, claims
waiting for a checkpoint, whether it wants to stop, whether it was idle,
and rank 0's clocks. Every replica sees the same sums and so takes the same
decision without another message: sync now, sync and checkpoint, stop. No
replica can block forever on an idle peer: an idle replica still turns
(without its idle wait while any peer is busy, so the busy ones are not held
back), and a dead or hung one makes the others' all_reduce fail within
``replicas.timeout_seconds`` (torchrun then restarts the group). Collectives
pair up by their order, not by turn, so a busy replica may learn several
micro-batches between two agreements: each agreement is a barrier (the
faster replica waits for the slower one's batch), and agreeing after every
micro-batch cost 2 replicas about 4 ms per batch of 8 on a loaded 2-core
host. The cost is one round trip of a 72-byte tensor per agreement
(``turn_us`` in ``replicas.synced``); a sync may come up to ``replicas.agree_seconds`` of
learning after ``replicas.sync_samples`` is reached.

A sync: the weights, optimizer moments and input statistics are averaged
(``averaging``), every count kept in learned samples becomes the group's
(``clocks``: metrics, steps, the average's clock, drift alarms), then rank 0
maintains the averaged model with the group's counts and the others follow
(``structure``). A
checkpoint at a sync: every replica makes its predictions journal durable
and hands rank 0, in one all_gather_object, the keys of its claims that are
trained on and not moved on, its settled quarantines and its counters since
it started; rank 0 saves the averaged model covering all of them
(``Checkpointing.checkpoint`` with ``Elsewhere``), broadcasts what it
saved, and only then does each replica move its own files
(``Checkpointing.covered_by``). A replica killed at any point leaves its
claims in its session folder; after torchrun restarts the group, rank 0
requeues every uncovered claim of every session that is not a live
replica's (``Worker.adopts``) and moves on the covered ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from plasticd.config import Settings
from plasticd.distributed import requeue
from plasticd.distributed.averaging import average, digest, flat_weights
from plasticd.distributed.clocks import agree
from plasticd.distributed.group import Replica, ReplicaError
from plasticd.distributed.outer import OuterOptimizer
from plasticd.distributed.structure import share
from plasticd.distributed.totals import Totals, row
from plasticd.log import get_logger
from plasticd.service.checkpoint_policy import Elsewhere
from plasticd.service.claims import Session
from plasticd.service.pipeline import Outcome
from plasticd.service.worker import WAIT_S, Worker

RAMP_MIN = 64  # the shortest sync interval of replicas.sync_ramp
# positions in the per-turn flags tensor
LABELLED, UNSAVED, WAITING, STOP, IDLE, CHANGED, SYNC_DUE, CHECKPOINT_DUE, QUIET_DUE = range(9)


@dataclass
class SyncFacts:
    """The last sync, for the status file and the log."""

    syncs: int = 0
    at: str | None = None  # UTC time of the last sync
    samples: int = 0  # labelled samples the group learned since the sync before
    bytes: int = 0
    ms: float = 0.0
    checkpoint: int | None = None  # seq of the checkpoint written at it, if any
    digest: str | None = None  # of the weights, mask and input statistics after the final sync
    turn_us: float = 0.0  # mean cost of the per-turn flags all_reduce since the sync before
    extra: dict = field(default_factory=dict)


def sync_interval(sync_samples: int, ramp: float, trained: int) -> int:
    """``sync_samples``, or while the group's model is young and ``ramp`` > 0, that share of the ``trained``
    samples the group has learned (at least ``RAMP_MIN``): early samples move the model most, so syncs come
    often then and thin out to H. ``trained`` is the group's count at the last sync: the same on every replica."""
    if ramp <= 0:
        return sync_samples
    return min(sync_samples, max(RAMP_MIN, int(ramp * trained)))


class Coordinator:
    """Drives one replica's worker in step with the group (every method but ``on_batch`` is collective)."""

    def __init__(self, worker: Worker, replica: Replica, settings: Settings, comm_device: torch.device, backend: str) -> None:
        self.worker = worker
        self.replica = replica
        self.settings = settings
        self.comm_device = comm_device  # where the weights are reduced: the CPU for gloo, the GPU for NCCL
        self.backend = backend
        self.log = get_logger("replicas")
        self.facts = SyncFacts()
        self.busy = False  # this replica processed something this turn
        self.turns, self.turn_s = 0, 0.0
        now = time.monotonic()
        self.last_sync = self.last_checkpoint = self.group_busy_at = self.agreed_at = now
        worker.on_batch.append(self.on_batch)
        # built as one of the group (daemon.build_file_worker(replica=...)): no replica rewires, grows or merges on
        # its own (masks stay identical), journal seq unique across the group, rank 0 saves at the barriers only
        assert worker.pipeline.replica == (replica.rank, replica.world_size) and not worker.pipeline.plasticity
        r = settings.replicas
        self.outer = OuterOptimizer(r.outer_lr, r.outer_momentum) if r.combine == "outer" else None

    def on_batch(self, outcome: Outcome) -> None:
        self.busy = self.busy or bool(outcome.done or outcome.failed)

    # ---------------------------------------------------------------- start

    def meet(self) -> None:
        """Before recovery: the same settings everywhere, and the live sessions no one may take over or tidy away."""
        w = self.worker
        agreed = {
            k: self.settings.model_dump(mode="json")[k] for k in ("model", "train", "plasticity", "growth", "merge", "drift")
        }
        agreed |= {"replicas": self.settings.replicas.model_dump(mode="json"), "every": self.settings.checkpoint.every_samples}
        mine = {"settings": json.dumps(agreed, sort_keys=True), "session": w.session.id if w.session else None}
        everyone: list = [None] * self.replica.world_size
        dist.all_gather_object(everyone, mine)
        differing = [r for r, o in enumerate(everyone) if o["settings"] != mine["settings"]]
        if differing:
            raise ReplicaError(
                f"replicas {differing} run with other model/train/plasticity/growth/merge/drift/replicas settings than replica "
                f"{self.replica.rank}: every replica must use the same configuration"
            )
        live = {o["session"] for o in everyone if o["session"]}
        w.checkpoints.unmoved.live_sessions = live
        w.adopts = self._adopts(live)

    def _adopts(self, live: set[str]):  # noqa: ANN202 - a predicate
        leader = self.replica.leader

        def adopts(session: Session) -> bool:
            return leader and session.id not in live  # rank 0 takes over every dead session, of any earlier replica

        return adopts

    def start(self) -> None:
        """After recovery: every replica loaded the same checkpoint; the group's counts start from it."""
        w = self.worker
        e = w.engine
        digests: list = [None] * self.replica.world_size
        dist.all_gather_object(digests, digest(e))
        if len(set(digests)) != 1:
            raise ReplicaError(
                "the replicas start from different models (a checkpoint written meanwhile, or other seeds): "
                f"digests {sorted(set(digests))}; start every replica against the same paths.checkpoints"
            )
        self.counters_at_start = w.counters.as_dict()
        self.marks = e.counts()  # the checkpoint's counts are the group's (rank 0 saves them after each agreement)
        self.totals = Totals(self.replica.world_size, self.counters_at_start)
        self.totals.update(self.totals.rows, self.marks)
        self.trained_at_sync = e.metrics.trained
        self.norm_count_at_sync = e.counts().inputs
        self.since = self._agreed()
        w.heartbeat.ready_facts.update(rank=self.replica.rank, world_size=self.replica.world_size, backend=self.backend)
        self._publish()

    # ---------------------------------------------------------------- the loop

    def run(self) -> int:
        """Recover, then turn in step with the group until it agrees to stop; the final sync covers everything."""
        w = self.worker
        w.install_signal_handlers()
        clean = False
        try:
            self.meet()
            w.recover()
            requeue.share(w, self.replica)  # rank 0 requeued every dead session's uncovered claims: one share each
            self.start()
            w.feed.scan()
            w.heartbeat.ready(w.mode)
            while True:
                w.run_once()
                if self.turn():
                    break
            clean = True
        except (dist.DistError, RuntimeError) as exc:  # gloo reports a peer's death as a plain RuntimeError
            raise ReplicaError(
                f"replica {self.replica.rank} of {self.replica.world_size} lost its group ({type(exc).__name__}: {exc}); "
                "its trained files stay in paths.work and the restarted group learns them again from the last checkpoint"
            ) from None
        finally:
            w.shutdown(check=clean)
        return 0

    def turn(self) -> bool:
        """One turn's agreement (collective, when due); True when the group stops (after its final sync)."""
        w, s = self.worker, self.settings
        now = time.monotonic()
        if self.busy and not w.stopping and now - self.agreed_at < s.replicas.agree_seconds:
            return False  # learning on: the group hears from this replica a little later
        self.agreed_at = now
        leader = self.replica.leader
        e, a, cp = w.engine, w.activity, w.checkpoints
        flags = torch.zeros(9, dtype=torch.float64)
        flags[LABELLED] = e.metrics.trained - self.trained_at_sync
        flags[UNSAVED] = a.unsaved_samples
        flags[WAITING] = len(cp.pending) + len(cp.unmoved)
        flags[STOP] = float(w.stopping)
        flags[IDLE] = float(not self.busy)
        flags[CHANGED] = float(a.unsaved_changes)
        if leader:
            flags[SYNC_DUE] = float(now - self.last_sync >= s.replicas.sync_seconds)
            flags[CHECKPOINT_DUE] = float(now - self.last_checkpoint >= s.checkpoint.every_seconds)
            quiet = now - self.group_busy_at >= s.checkpoint.idle_seconds
            flags[QUIET_DUE] = float(quiet and now - self.last_checkpoint >= s.checkpoint.min_interval_seconds)
        started = time.perf_counter()
        mine = torch.cat([flags, row(w, self.counters_at_start, self.marks)])
        rows = [torch.empty_like(mine) for _ in range(self.replica.world_size)]
        dist.all_gather(rows, mine)  # every replica's flags and counts: the flags summed, the counts the group's totals
        self.turn_s += time.perf_counter() - started
        self.turns += 1
        table = torch.stack(rows)
        flags = table[:, : len(flags)].sum(dim=0)
        self.totals.update(table[:, len(flags) :], self.marks)
        self._publish()
        self.busy = False
        f = flags.tolist()
        idle = f[IDLE] == self.replica.world_size
        if not idle:
            self.group_busy_at = now
        w.wait_seconds = WAIT_S if idle else 0.0  # a busy peer waits in the next all_reduce for this replica's turn
        stop = f[STOP] > 0
        unsaved = f[WAITING] > 0 or f[CHANGED] > 0 or f[UNSAVED] > 0
        if stop:
            reason = "shutdown"
        elif f[UNSAVED] >= s.checkpoint.every_samples:
            reason = "samples"
        elif unsaved and f[CHECKPOINT_DUE] > 0:
            reason = "timer"
        elif unsaved and idle and f[QUIET_DUE] > 0:
            reason = "idle"
        else:
            reason = ""
        if reason or f[LABELLED] >= self.interval() or (f[SYNC_DUE] > 0 and f[LABELLED] > 0):
            self.sync(int(f[LABELLED]), reason, final=stop)
        return stop

    def interval(self) -> int:
        """Labelled samples between syncs now (``sync_interval`` of the group's count at the last sync)."""
        return sync_interval(self.settings.replicas.sync_samples, self.settings.replicas.sync_ramp, self.trained_at_sync)

    # ---------------------------------------------------------------- the barrier

    def sync(self, samples: int, checkpoint_reason: str, final: bool = False) -> None:
        """Average, maintain on rank 0 and share, then (with a reason) the checkpoint covering every replica."""
        w = self.worker
        e = w.engine
        started = time.perf_counter()
        if self.outer is not None and self.since is not None:
            averaged = self.outer.average(e, self.replica.world_size, self.norm_count_at_sync, self.comm_device, self.since)
        else:
            averaged = average(e, self.replica.world_size, self.norm_count_at_sync, self.comm_device, self.since)
        clocks = agree(e, self.replica.rank, self.replica.world_size, self.marks)
        if clocks.alarms:
            self.log.info("replicas.drift", rank=self.replica.rank, alarms=clocks.alarms, reacted=clocks.reacted)
        self.marks = e.counts()
        shared = share(e, self.replica.leader, self.comm_device, w.log_reports)  # logged, counted, marked unsaved
        self.trained_at_sync, self.norm_count_at_sync = e.metrics.trained, e.counts().inputs
        self.since = self._agreed()  # after rank 0's maintenance: the network every replica now holds
        self.last_sync = time.monotonic()
        seq = self.checkpoint(checkpoint_reason) if checkpoint_reason else None
        f = self.facts
        f.syncs += 1
        f.at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        f.samples, f.bytes = samples, averaged.bytes + shared.bytes
        f.ms = (time.perf_counter() - started) * 1e3
        f.checkpoint = seq
        f.turn_us = self.turn_s / max(self.turns, 1) * 1e6
        if final:
            f.digest = digest(e)
        self.log.info(
            "replicas.synced", rank=self.replica.rank, world_size=self.replica.world_size, syncs=f.syncs, samples=samples,
            bytes=f.bytes, ms=round(f.ms, 2), average_ms=round(averaged.ms, 2), structure_ms=round(shared.ms, 2),
            changed=shared.changed, neurons=shared.neurons, checkpoint=seq, turns=self.turns, turn_us=round(f.turn_us, 1),
        )  # fmt: skip
        self.turns, self.turn_s = 0, 0.0
        self._publish()

    def checkpoint(self, reason: str) -> int | None:
        """Rank 0 saves the averaged model covering every replica's claims; each then moves its own. The seq, or None."""
        w = self.worker
        cp = w.checkpoints
        ok = True
        try:
            w.predictions.sync()  # the predictions of the claims this checkpoint covers are durable first
        except OSError as exc:
            ok = False
            self.log.error("replicas.journal_sync_failed", rank=self.replica.rank, error=str(exc))
        w.counters.files_failed += cp.quarantine.take_done()
        now = w.counters.as_dict()
        quarantined: list[str] = list(cp.quarantine.settled_keys)
        mine = {
            "ok": ok,
            "covered": [c.key for c in cp.unmoved.claims + cp.pending],
            "quarantined": quarantined,
            "counters": {k: v - self.counters_at_start[k] for k, v in now.items()},
            "changed": w.activity.unsaved_changes,
        }
        everyone: list = [None] * self.replica.world_size
        dist.all_gather_object(everyone, mine)
        self.totals.update_counters([o["counters"] for o in everyone])
        box: list = [None]
        if self.replica.leader and all(o["ok"] for o in everyone):
            others = everyone[1:]
            if any(o["changed"] for o in others):
                w.activity.unsaved_changes = True
            counters = {k: self.counters_at_start[k] + sum(o["counters"][k] for o in everyone) for k in now}
            group = {
                "world_size": self.replica.world_size,
                "trained": w.engine.metrics.trained,  # the group's, agreed at this barrier
                "syncs": self.facts.syncs + 1,
            }
            elsewhere = Elsewhere(
                covered=[k for o in others for k in o["covered"]],
                quarantined=[k for o in others for k in o["quarantined"]],
                meta={"counters": counters, "replicas": group},
            )
            box = [cp.checkpoint(reason, elsewhere)]
            if box[0] is not None:
                self.last_checkpoint = time.monotonic()
        dist.broadcast_object_list(box, src=0)
        info = box[0]
        if info is None:
            return None
        if not self.replica.leader:
            self.last_checkpoint = time.monotonic()
            moved = cp.covered_by(info, quarantined)
            self.log.info("replicas.covered", rank=self.replica.rank, seq=info.seq, files_moved=moved)
        return info.seq

    def _agreed(self) -> torch.Tensor | None:
        """The weights the next sync measures changes from (``replicas.combine = "sum"``), or None (the mean)."""
        wanted = self.settings.replicas.combine in ("sum", "outer")
        return flat_weights(self.worker.engine, self.comm_device) if wanted else None

    def _publish(self) -> None:
        f = self.facts
        group, each = self.totals.group(), self.totals.each()
        hb = self.worker.heartbeat
        hb.stopped_facts = group | {"world_size": self.replica.world_size, "replica": each[self.replica.rank]}
        hb.status_facts = {
            **group,  # the group's counts replace this replica's own in its status file (and rank 0's /metrics)
            "replicas": each,
            "replica": {
                "rank": self.replica.rank,
                "world_size": self.replica.world_size,
                "backend": self.backend,
                "syncs": f.syncs,
                "last_sync": None
                if f.at is None
                else {"at": f.at, "samples": f.samples, "bytes": f.bytes, "ms": round(f.ms, 2), "checkpoint": f.checkpoint},
                "turn_us": round(f.turn_us, 1),
                "digest": f.digest,
            },
        }
