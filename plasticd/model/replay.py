"""A reservoir of past labelled samples, replayed into training steps (the standard baseline).

Reservoir sampling (Vitter's algorithm R): the n-th labelled sample ever
offered replaces a uniformly chosen slot with probability capacity/n, so at
any time the buffer is a uniform sample of everything seen so far, in O(capacity)
memory. A whole batch is offered in one vectorised pass; when two samples of
one batch pick the same slot the later one wins, exactly as offering them one
by one would.

Samples are stored raw (before input standardisation), like ``RecentBuffer``,
so they are scaled with the current statistics when replayed. Replayed samples
only ever enter the *training* half of a step, never predictions or the
prequential metrics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class ReservoirBuffer:
    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu", seed: int = 0) -> None:
        assert capacity >= 1, f"capacity must be >= 1, got {capacity}"
        self.capacity = capacity
        self.x = torch.zeros((capacity, dim), device=device)  # (R, D) raw inputs
        self.y = torch.zeros((capacity,), dtype=torch.int64)  # (R,) labels, on the CPU (step labels are host arrays)
        self.offered = 0  # labelled samples ever offered
        self.rng = torch.Generator().manual_seed(seed)  # CPU: slot choice and replay draws

    def __len__(self) -> int:
        return min(self.offered, self.capacity)

    def add(self, x: Tensor, y: Tensor | np.ndarray) -> None:
        """Offer a batch (B, D) / (B,) of labelled samples.

        Slot choice is host arithmetic on B numbers (numpy: a handful of µs,
        far cheaper than small-tensor ops), then one ``index_copy_`` of the winners.
        """
        b = x.shape[0]
        if b == 0:
            return
        n = np.arange(self.offered + 1, self.offered + b + 1)  # (B,) 1-based arrival number
        u = torch.rand(b, generator=self.rng, dtype=torch.float64).numpy()  # (B,)
        slot = np.where(n <= self.capacity, n - 1, (u * n).astype(np.int64))  # fill first, then uniform in [0, n)
        pos = np.flatnonzero(slot < self.capacity)  # (W,) arrivals that enter the reservoir
        if pos.size > 1:  # later arrivals overwrite earlier ones that chose the same slot: keep the last writer
            _, last = np.unique(slot[pos][::-1], return_index=True)
            pos = pos[::-1][last]
        self.offered += b
        if pos.size == 0:
            return
        rows, slots = torch.from_numpy(pos), torch.from_numpy(slot[pos])
        self.x.index_copy_(0, slots.to(self.x.device), x.index_select(0, rows.to(x.device)).to(self.x.dtype))
        self.y.index_copy_(0, slots, torch.as_tensor(y, dtype=torch.int64).cpu().index_select(0, rows))

    def sample(self, k: int) -> tuple[Tensor, Tensor]:
        """``k`` stored samples drawn uniformly with replacement: x (k, D) on the buffer's device, y (k,) on the CPU."""
        size = len(self)
        assert size > 0, "cannot sample from an empty replay buffer"
        idx = torch.randint(size, (k,), generator=self.rng)
        return self.x.index_select(0, idx.to(self.x.device)), self.y.index_select(0, idx)

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "x": self.x,
            "y": self.y,
            "offered": torch.tensor([self.offered], dtype=torch.int64),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore ``state_dict()`` output. A buffer of another capacity keeps what fits; one that grew
        counts only the stored samples as offered (so new arrivals fill the free slots first)."""
        offered = int(state["offered"][0])
        size = min(offered, state["x"].shape[0])
        keep = min(size, self.capacity)
        self.x[:keep] = state["x"][:keep].to(self.x.device)
        self.y[:keep] = state["y"][:keep].cpu()
        self.offered = offered if keep == self.capacity or offered == size else keep
        self.rng.set_state(state["rng"].cpu())
