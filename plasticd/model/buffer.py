"""A fixed-size ring of the most recent labelled samples, kept on the model's device.

Plasticity cycles (and later growth) estimate gradients and co-activations
on it in one batched pass instead of paying for statistics on every step.
Samples are stored raw (before input standardisation) so they are always
scaled with the current statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class RecentBuffer:
    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu") -> None:
        assert capacity >= 1, f"capacity must be >= 1, got {capacity}"
        self.capacity = capacity
        self.x = torch.zeros((capacity, dim), device=device)  # (S, D)
        self.y = torch.zeros((capacity,), dtype=torch.int64, device=device)  # (S,)
        self._pos = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, x: Tensor, y: Tensor | np.ndarray) -> None:
        """Append a batch (B, D) / (B,), overwriting the oldest entries."""
        b = x.shape[0]
        if b == 1:  # the per-sample path: two copies into the ring
            self.x[self._pos].copy_(x[0])
            self.y[self._pos] = int(y[0])
            self._pos = (self._pos + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)
            return
        y = torch.as_tensor(y, dtype=torch.int64).to(self.y.device, non_blocking=True)
        if b == 0:
            return
        if b >= self.capacity:
            x, y, b = x[-self.capacity :], y[-self.capacity :], self.capacity
        first = min(b, self.capacity - self._pos)
        self.x[self._pos : self._pos + first] = x[:first]
        self.y[self._pos : self._pos + first] = y[:first]
        if first < b:
            self.x[: b - first] = x[first:]
            self.y[: b - first] = y[first:]
        self._pos = (self._pos + b) % self.capacity
        self._size = min(self._size + b, self.capacity)

    def contents(self) -> tuple[Tensor, Tensor]:
        """The stored samples (views, oldest-first order not guaranteed)."""
        return self.x[: self._size], self.y[: self._size]

    def state_dict(self) -> dict[str, Tensor]:
        return {"x": self.x, "y": self.y, "pos_size": torch.tensor([self._pos, self._size], dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.x.copy_(state["x"])
        self.y.copy_(state["y"])
        self._pos, self._size = (int(v) for v in state["pos_size"])
