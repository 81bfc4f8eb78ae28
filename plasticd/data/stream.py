"""Seeded shuffled passes over a dataset split: the one epoch order of the stream feed and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from plasticd.data.fashion_mnist import Split


def epoch_order(n_total: int, seed: int, epoch: int, limit: int | None = None) -> np.ndarray:
    """Positions of the samples of pass ``epoch`` over a split of ``n_total``, in the order they are seen.

    A fresh permutation per pass, seeded by ``seed + epoch``, cut to the first
    ``limit``. Checkpoints of the stream feed store a position in this order, so
    it must never change: the same arguments give the same array, bit for bit,
    across releases.
    """
    order = np.random.default_rng(seed + epoch).permutation(n_total)
    return order if limit is None else order[:limit]


@dataclass(frozen=True)
class StreamBatch:
    x: torch.Tensor  # (B, D) float32
    y: np.ndarray  # (B,) int64
    index: np.ndarray  # (B,) position of each sample in the split


def stream_batches(split: Split, batch_size: int, seed: int, epochs: int = 1, limit: int | None = None) -> Iterator[StreamBatch]:
    """Shuffled passes over ``split`` (``epoch_order`` per pass), ``limit`` samples per pass at most."""
    assert batch_size >= 1 and epochs >= 1, "batch_size and epochs must be positive"
    n = len(split) if limit is None else min(limit, len(split))
    x_all = torch.from_numpy(split.x)
    for epoch in range(epochs):
        order = epoch_order(len(split), seed, epoch, n)
        x_epoch = x_all[torch.from_numpy(order)]  # one gather per epoch, not per batch
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield StreamBatch(x=x_epoch[i : i + batch_size], y=split.y[idx], index=idx)
