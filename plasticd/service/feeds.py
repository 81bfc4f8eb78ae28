"""Feeds turn sources into work items for the worker: claimed files, or slices of a stream.

An item knows how to load its samples (which may fail: a bad file), its
stable id (for predictions and checkpoints), and when it arrived.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plasticd.service.claims import Claim, Claimer
from plasticd.data.fashion_mnist import Split
from plasticd.samples import Limits, SampleBatch, decode_file
from plasticd.service.sources import FolderSource


@dataclass(frozen=True)
class Item:
    key: str  # stable id: predictions are "<key>#<index>"
    name: str  # what people see: the original file name, or "fashion-mnist/train/<i>"
    load: Callable[[], SampleBatch]  # raises SampleError for a bad file
    arrived: float  # wall-clock time the item arrived (a file's mtime), for latency
    claim: Claim | None = None


class FileFeed:
    """Claims files from a folder source; claims recovered from an earlier run come first."""

    def __init__(self, source: FolderSource, claimer: Claimer, input_dim: int, num_classes: int, limits: Limits) -> None:
        self.source = source
        self.claimer = claimer
        self.input_dim, self.num_classes, self.limits = input_dim, num_classes, limits
        self.recovered: deque[Claim] = deque()

    def _item(self, claim: Claim) -> Item:
        try:
            arrived = os.lstat(claim.path).st_mtime
        except OSError:
            arrived = time.time()
        return Item(
            key=claim.key,
            name=claim.original_name,
            load=lambda: decode_file(claim.path, self.input_dim, self.num_classes, self.limits),
            arrived=arrived,
            claim=claim,
        )

    def take(self, limit: int) -> list[Item]:
        items = []
        while self.recovered and len(items) < limit:
            items.append(self._item(self.recovered.popleft()))
        while len(items) < limit:
            paths = self.source.take(limit - len(items))
            if not paths:
                break
            for path in paths:
                claim = self.claimer.claim(path)
                if claim is not None:  # None: another process took it first
                    items.append(self._item(claim))
        return items

    @property
    def backlog(self) -> int:
        return len(self.recovered) + self.source.backlog


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

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = np.random.default_rng(self.seed + epoch).permutation(len(self.split))[: self.per_epoch]
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
