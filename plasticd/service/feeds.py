"""Feeds turn sources into work items for the worker: claimed files, or slices of a stream.

An item knows how to load its samples (which may fail: a bad file), its
stable id (for predictions and checkpoints), and when it arrived. Every feed
answers the one ``Feed`` protocol, so the worker never asks what kind of feed
it has: a stream has nothing to scan and no claims to requeue, a file feed
has no position to resume from.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from plasticd.data.fashion_mnist import Split
from plasticd.data.stream import epoch_order
from plasticd.log import get_logger
from plasticd.samples import Limits, SampleBatch, decode_file
from plasticd.service.claims import Claim, Claimer
from plasticd.service.sources import FolderSource


@dataclass(frozen=True)
class Item:
    key: str  # stable id: predictions are "<key>#<index>"
    name: str  # what people see: the original file name, or "fashion-mnist/train/<i>"
    load: Callable[[], SampleBatch]  # raises SampleError for a bad file
    arrived: float  # wall-clock time the daemon first saw the item (not the file's mtime), where latency starts
    claim: Claim | None = None


class Feed(Protocol):
    """What the worker asks of its source of work."""

    def take(self, limit: int) -> list[Item]:
        """Up to ``limit`` items, in order; an empty list when nothing is ready now."""
        ...

    @property
    def backlog(self) -> int:
        """Items known to be waiting (for the status file and progress events)."""
        ...

    def waiting_since(self) -> float | None:
        """Wall-clock time the oldest item still waiting was first seen by this process; None when nothing waits
        (thread-safe: the metrics exporter reads it)."""
        ...

    def scan(self) -> None:
        """Look for new work (a folder listing: file-system events can be dropped)."""
        ...

    def drained(self) -> bool:
        """True when nothing is left: burst mode (ingest, the stream) ends here."""
        ...

    def requeue(self, claims: list[Claim]) -> None:
        """Take again claims an earlier run left in the work area untrained; they come first."""
        ...

    def resume_state(self) -> dict:
        """What a checkpoint stores (in its meta) to resume this feed where it stopped."""
        ...

    def resume(self, meta: dict) -> None:
        """Continue from a loaded checkpoint's meta (the counterpart of ``resume_state``)."""
        ...


class FileFeed:
    """Claims files from a folder source; claims recovered from an earlier run come first."""

    def __init__(self, source: FolderSource, claimer: Claimer, input_dim: int, num_classes: int, limits: Limits) -> None:
        self.source = source
        self.claimer = claimer
        self.input_dim, self.num_classes, self.limits = input_dim, num_classes, limits
        self.recovered: deque[Claim] = deque()
        self.requeued_at = 0.0  # wall-clock time of the last requeue (recovered claims wait since then)

    def _item(self, claim: Claim, seen: float | None = None) -> Item:
        """``seen``: when the source first saw the file; a claim recovered from an earlier run counts from its
        claim (the rename into the work area set its ctime), never from the producer's mtime."""
        if seen is None:
            try:
                seen = os.lstat(claim.path).st_ctime
            except OSError:
                seen = time.time()
        arrived = seen
        return Item(
            key=claim.key,
            name=claim.original_name,
            load=lambda: decode_file(claim.path, self.input_dim, self.num_classes, self.limits),
            arrived=arrived,
            claim=claim,
        )

    def take(self, limit: int) -> list[Item]:
        items: list[Item] = []
        while self.recovered and len(items) < limit:
            items.append(self._item(self.recovered.popleft()))
        while len(items) < limit:
            paths = self.source.take_seen(limit - len(items))
            if not paths:
                break
            for path, seen in paths:
                claim = self.claimer.claim(path)
                if claim is not None:  # None: another process took it first
                    items.append(self._item(claim, seen))
        return items

    @property
    def backlog(self) -> int:
        return len(self.recovered) + self.source.backlog

    def waiting_since(self) -> float | None:
        return self.requeued_at if self.recovered else self.source.waiting_since()

    def scan(self) -> None:
        self.source.scan()

    def drained(self) -> bool:
        self.scan()
        return self.backlog == 0

    def requeue(self, claims: list[Claim]) -> None:
        if not self.recovered:
            self.requeued_at = time.time()
        self.recovered.extend(claims)

    def resume_state(self) -> dict:
        return {}  # the work area and the checkpoint's covered claims say where a file feed stands

    def resume(self, meta: dict) -> None:
        pass


class StreamFeed:
    """The Fashion-MNIST training stream, in seeded shuffled passes, resumable from a position."""

    def __init__(self, split: Split, seed: int, epochs: int, limit: int | None, position: int = 0) -> None:
        self.split = split
        self.seed = seed
        self.per_epoch = len(split) if limit is None else min(limit, len(split))
        self.total = self.per_epoch * epochs
        self.position = position  # samples consumed so far, over all passes
        self._order: np.ndarray | None = None
        self._order_epoch = -1
        self.log = get_logger("worker")

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = epoch_order(len(self.split), self.seed, epoch, self.per_epoch)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def take(self, limit: int) -> list[Item]:
        if self.position >= self.total:
            return []
        epoch, offset = divmod(self.position, self.per_epoch)
        idx = self._order_of(epoch)[offset : offset + limit]
        start = self.position
        self.position += len(idx)
        batch = SampleBatch(x=self.split.x[idx], y=self.split.y[idx])
        return [Item(key=f"fashion-mnist/{start}", name=f"fashion-mnist/train/{epoch}", load=lambda: batch, arrived=time.time())]

    @property
    def identity(self) -> dict:
        """What makes two streams the same stream (a checkpoint's position is only valid for it)."""
        return {"dataset": "fashion-mnist/train", "seed": self.seed, "per_epoch": self.per_epoch}

    @property
    def exhausted(self) -> bool:
        return self.position >= self.total

    @property
    def backlog(self) -> int:
        return self.total - self.position

    def waiting_since(self) -> float | None:
        return None  # a stream's samples do not wait: they are read when taken

    def scan(self) -> None:
        pass  # every sample of a stream is known from the start

    def drained(self) -> bool:
        return self.exhausted

    def requeue(self, claims: list[Claim]) -> None:
        if claims:  # dropping them silently would lose work: refuse loudly
            raise ValueError(f"a stream has no claims to requeue ({len(claims)} given)")

    def resume_state(self) -> dict:
        return {"stream_position": self.position, "stream": self.identity}

    def resume(self, meta: dict) -> None:
        """Continue at the checkpoint's position, if it was made on this same stream."""
        stream = meta.get("stream") or {}
        if stream == self.identity:
            self.position = int(meta.get("stream_position") or 0)
        else:
            self.log.warning("stream.restarted", reason="the checkpoint was made on a different stream", checkpoint=stream)
