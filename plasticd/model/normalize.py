"""Running per-feature standardisation of the input stream.

Exact running mean/variance (Welford/Chan) for the first ``horizon`` samples,
then an exponential moving average with rate ~1/horizon, so the scale follows
a drifting stream. Only inputs are used (never labels), so updating the
statistics before predicting a sample keeps prequential evaluation honest.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-2  # added to the variance: keeps near-constant features (blank pixels) from exploding


class InputNorm:
    """Standardise ``x`` with running statistics; ``enabled=False`` is the identity."""

    def __init__(self, dim: int, enabled: bool = True, horizon: int = 1000, device: torch.device | str = "cpu") -> None:
        assert horizon >= 1, f"horizon must be >= 1, got {horizon}"
        self.enabled = enabled
        self.horizon = horizon
        self.mean = torch.zeros(dim, device=device)  # (D,)
        self.var = torch.ones(dim, device=device)  # (D,)
        self.count = 0

    def update(self, x: Tensor) -> None:
        """Fold a batch (B, D) into the statistics."""
        if not self.enabled:
            return
        b = x.shape[0]
        w = b / (min(self.count, self.horizon) + b)  # weight of the new batch
        if b == 1:  # the common per-sample case, in three ops
            delta = x[0] - self.mean
            self.var.mul_(1.0 - w).addcmul_(delta, delta, value=w * (1.0 - w))
        else:
            batch_mean = x.mean(dim=0)  # (D,)
            dev = x - batch_mean  # (B, D)
            batch_var = dev.mul_(dev).mean(dim=0)  # 10x faster on CPU than x.var(dim=0), a slow strided reduction
            delta = batch_mean - self.mean
            self.var.mul_(1.0 - w).add_(batch_var, alpha=w).addcmul_(delta, delta, value=w * (1.0 - w))
        self.mean.add_(delta, alpha=w)
        self.count += b

    def __call__(self, x: Tensor) -> Tensor:
        """The standardised copy of ``x``; ``x`` itself is not modified."""
        if not self.enabled:
            return x
        return (x - self.mean) * torch.rsqrt(self.var + EPS)

    def snapshot(self) -> tuple[Tensor, Tensor, int]:
        """A copy of the statistics, for ``restore`` when a step is rejected."""
        return self.mean.clone(), self.var.clone(), self.count

    def copy(self) -> InputNorm:
        """An independent scaler with the same statistics (clones: later updates of either do not reach the other)."""
        twin = InputNorm.__new__(InputNorm)
        twin.enabled, twin.horizon, twin.count = self.enabled, self.horizon, self.count
        twin.mean, twin.var = self.mean.clone(), self.var.clone()
        return twin

    def restore(self, snapshot: tuple[Tensor, Tensor, int]) -> None:
        mean, var, self.count = snapshot
        self.mean.copy_(mean)
        self.var.copy_(var)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "var": self.var, "count": torch.tensor(self.count, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.mean.copy_(state["mean"])
        self.var.copy_(state["var"])
        self.count = int(state["count"])
