"""Seeded shuffled passes over a dataset split, in batches (the benchmark's stream)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from plasticd.data.fashion_mnist import Split


@dataclass(frozen=True)
class StreamBatch:
    x: torch.Tensor  # (B, D) float32
    y: np.ndarray  # (B,) int64
    index: np.ndarray  # (B,) position of each sample in the split


def stream_batches(split: Split, batch_size: int, seed: int, epochs: int = 1, limit: int | None = None) -> Iterator[StreamBatch]:
    """Shuffled passes over ``split`` (a fresh seeded order per epoch), ``limit`` samples per pass at most."""
    assert batch_size >= 1 and epochs >= 1, "batch_size and epochs must be positive"
    n = len(split) if limit is None else min(limit, len(split))
    x_all = torch.from_numpy(split.x)
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(len(split))[:n]
        x_epoch = x_all[torch.from_numpy(order)]  # one gather per epoch, not per batch
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield StreamBatch(x=x_epoch[i : i + batch_size], y=split.y[idx], index=idx)
