"""decode + validate → Engine.step → predictions out; invalid items quarantined.

The same pipeline serves the inbox daemon, one-shot ingest and the
Fashion-MNIST stream. Whole items are packed into micro-batches of at most
``train.max_batch`` samples (each sample still predicted before the step
that trains on it). A micro-batch the engine rejects as non-finite changed
nothing and is retried one item at a time, so only the guilty file is
quarantined; a file larger than one micro-batch is learned all or nothing
(the engine state is restored if a later step of it is rejected).

A large file (34,000 samples) takes many steps: between two of them the
pipeline calls ``between_chunks`` (the worker's heartbeat and stop check), so
the service stays responsive. When that asks to stop, the file is abandoned
whole: the engine is restored to its state before the file, no prediction of
it is written, and the file and every item after it in the batch land in
``Outcome.interrupted``: their claims stay in the work area, untouched, and
are processed from the start at the next run. No checkpoint can be taken
between chunks (checkpoints run only between micro-batches), so a partly
learned file is never covered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plasticd.errors import NonFiniteError, SampleError
from plasticd.learn.engine import Engine, StepResult
from plasticd.log import get_logger
from plasticd.samples import SampleBatch
from plasticd.service.feeds import Item
from plasticd.service.moves import Quarantine
from plasticd.service.predictions import PredictionWriter


@dataclass
class Outcome:
    """What one call of ``Pipeline.process`` did."""

    done: list[Item] = field(default_factory=list)  # predicted (and trained on, if labelled)
    failed: list[Item] = field(default_factory=list)  # refused: quarantined (or waiting to be, see moves.Quarantine)
    reasons: list[str] = field(default_factory=list)  # the quarantine reason code of each item in ``failed``, in order
    interrupted: list[Item] = field(default_factory=list)  # not processed: a stop came first; they changed nothing
    samples: int = 0

    @property
    def files_processed(self) -> int:
        """Files among ``done`` (a stream's slices are not files)."""
        return sum(item.claim is not None for item in self.done)


class _Interrupted(Exception):
    """``between_chunks`` asked to stop in the middle of a large file."""


class Pipeline:
    """Turns work items into predictions and training steps; owns nothing but the way there.

    It holds no queue and no state of its own: ``process(items)`` loads each
    item (a bad file is quarantined with its reason), packs the rest into
    micro-batches, steps the engine (every sample predicted before the step
    that trains on it), appends the predictions to the journal and returns an
    ``Outcome``. Exactly-once is the worker's side of the contract: the
    pipeline only promises that an item in ``Outcome.done`` was learned whole
    and its predictions written, an item in ``Outcome.failed`` changed nothing
    (a file is moved to the failed folder with its reason), and no item is in both. The worker then
    keeps the claims of ``done`` in the work area until a durable checkpoint
    covers them.
    """

    def __init__(
        self,
        engine: Engine,
        predictions: PredictionWriter,
        failed_folder: Path,
        max_batch: int,
        sample_log_level: str = "info",
        retry_seconds: float = 5.0,
        plasticity: bool = True,
        replica: tuple[int, int] | None = None,
    ) -> None:
        self.engine = engine
        self.sample_log_level = sample_log_level
        self.predictions = predictions
        self.failed_folder = failed_folder
        self.max_batch = max_batch
        self.quarantine = Quarantine(failed_folder, retry_seconds)  # the worker retries and recovers through it
        self.plasticity = plasticity  # maintenance inside Engine.step (replicas: False, rank 0 maintains at barriers)
        self.replica = replica  # (rank, world size) in a group: seq rank-strided, records labelled
        self.log = get_logger("pipeline")

    def process(self, items: list[Item], between_chunks: Callable[[], bool] = lambda: False) -> Outcome:
        """``between_chunks`` is asked between the steps of a large file (the worker's heartbeat): True to stop."""
        out = Outcome()
        loaded: list[tuple[Item, SampleBatch]] = []
        for item in items:
            try:
                loaded.append((item, item.load()))
            except SampleError as exc:
                self._reject(item, exc.reason, str(exc), type(exc).__name__, out)
        groups = self._groups(loaded)
        for i, group in enumerate(groups):
            if len(group) == 1 and len(group[0][1].y) > self.max_batch:
                if not self._step_big(group[0], out, between_chunks):
                    out.interrupted += [item for later in groups[i:] for item, _ in later]
                    return out
                continue
            try:
                self._step(group, out)
            except NonFiniteError:
                for one in group:  # find the guilty item(s): the rejected step changed nothing
                    try:
                        self._step([one], out)
                    except NonFiniteError as exc:
                        self._reject(one[0], "non_finite_training", str(exc), type(exc).__name__, out)
        return out

    def _groups(self, loaded: list[tuple[Item, SampleBatch]]) -> list[list[tuple[Item, SampleBatch]]]:
        """Consecutive items packed into micro-batches of at most max_batch samples; a larger item alone."""
        groups: list[list[tuple[Item, SampleBatch]]] = []
        size = self.max_batch
        for pair in loaded:
            n = len(pair[1].y)
            if groups and size + n <= self.max_batch:
                groups[-1].append(pair)
                size += n
            else:
                groups.append([pair])
                size = n
        return groups

    def _step_big(self, pair: tuple[Item, SampleBatch], out: Outcome, between_chunks: Callable[[], bool]) -> bool:
        """A file of more than max_batch samples takes several steps: all of them, or none.
        False when a stop request came between two of them (the file is left as it was)."""
        saved = self.engine.savepoint()
        try:
            self._step([pair], out, between_chunks)
        except NonFiniteError as exc:
            self.engine.restore(saved)
            self._reject(pair[0], "non_finite_training", str(exc), type(exc).__name__, out)
        except _Interrupted:
            self.engine.restore(saved)
            self.log.info("sample.interrupted", file=pair[0].name, samples=len(pair[1].y), reason="stop requested")
            return False
        return True

    def _step(
        self, loaded: list[tuple[Item, SampleBatch]], out: Outcome, between_chunks: Callable[[], bool] | None = None
    ) -> None:
        """Step through the concatenated samples of ``loaded``, max_batch at a time (``chunked``: asking
        ``between_chunks`` before each step after the first; _Interrupted when it says stop)."""
        x = np.concatenate([b.x for _, b in loaded])
        y = np.concatenate([b.y for _, b in loaded])
        owner = np.repeat(np.arange(len(loaded)), [len(b.y) for _, b in loaded])
        index = np.concatenate([np.arange(len(b.y)) for _, b in loaded])
        xt = torch.from_numpy(x)
        records: list[dict] = []
        for start in range(0, len(y), self.max_batch):
            if between_chunks is not None and start and between_chunks():
                raise _Interrupted
            end = min(start + self.max_batch, len(y))
            seq0 = self.engine.metrics.seen
            result = self.engine.step(xt[start:end], y[start:end], plasticity=self.plasticity)
            records += self._records(loaded, owner[start:end], index[start:end], result, seq0, self.replica)
        self.predictions.write(records)
        emit = getattr(self.log, self.sample_log_level)
        for rec in records:
            emit("sample.processed", **rec)
        out.done += [item for item, _ in loaded]
        out.samples += len(y)

    @staticmethod
    def _records(
        loaded, owner: np.ndarray, index: np.ndarray, result: StepResult, seq0: int, replica: tuple[int, int] | None = None
    ) -> list[dict]:
        """One journal record per sample. In a group (``replica``: rank r of W) ``seq`` is the replica's sample
        count times W plus r: unique across the group's journals (a replica's count only grows, the group's
        at each sync), and ``seq // W`` is within one sync interval of the group's sample number."""
        now = time.time()
        rank, world = replica if replica is not None else (0, 1)
        records = []
        for j in range(len(owner)):
            item, batch = loaded[int(owner[j])]
            label = int(result.labels[j])
            labelled = label >= 0
            records.append(
                {
                    "id": f"{item.key}#{int(index[j])}",
                    "claim": item.key if item.claim is not None else None,
                    "sample_id": batch.ids[int(index[j])] if batch.ids is not None else None,
                    "file": item.name,
                    "index": int(index[j]),
                    "predicted": int(result.predicted[j]),
                    "confidence": round(float(result.confidence[j]), 6),
                    "label": label if labelled else None,
                    "correct": bool(result.predicted[j] == label) if labelled else None,
                    "loss": round(float(result.loss[j]), 6) if labelled else None,
                    "seq": (seq0 + j) * world + rank,
                    "latency_ms": round((now - item.arrived) * 1e3, 3),
                }
            )
            if replica is not None:
                records[-1] |= {"replica": rank, "replicas": world}
        return records

    def _reject(self, item: Item, reason: str, message: str, error_type: str, out: Outcome) -> None:
        """Quarantine a refused item: it changed nothing. When the failed folder fails (full, read-only),
        the file waits in the work area with its reason and ``Quarantine`` retries it (``file.quarantine_failed``)."""
        out.failed.append(item)
        out.reasons.append(reason)
        where = None
        if item.claim is None:
            self.quarantine.done += 1  # a stream's slice: nothing to move, still a refusal to count
        else:
            final = self.quarantine.put(item.claim, reason, message, error_type)
            if final is None:
                return
            where = str(final)
        self.log.warning("sample.quarantined", file=item.name, reason=reason, error=message, exception=error_type, moved_to=where)
