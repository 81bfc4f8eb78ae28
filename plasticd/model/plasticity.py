"""Structural plasticity of the recurrent weights: usage statistics, prune, regrow.

Connection ``w[i, j]`` carries neuron j's state into neuron i. Per
connection we keep (all N × N, all updated with whole-tensor ops):

* ``coact``  float16 — EMA of the activation cosine similarity |h_i·h_j| / (‖h_i‖‖h_j‖)
* ``credit`` float16 — EMA of the first-order saliency |w ⊙ ∂L/∂w|, scaled to [0, 1]
* ``age``    int16   — labelled samples learned while the connection existed (saturates at 32767)

Statistics come from a batched forward/backward pass over a small buffer
of recent labelled samples, taken when a cycle runs; the per-sample hot
path pays nothing for them. A cycle then

1. prunes the ``prune_fraction`` of active connections with the smallest
   ``|w|`` (or credit) among those at least ``min_age`` samples old, and
2. regrows as many absent ones (not those just pruned) with the largest
   dense gradient ``|∂L/∂w|`` (RigL), co-activation (Hebbian) or both,

so the active count stays put unless it lies outside the configured bounds,
which a cycle restores. Regrown weights are zero: regrowth alone never
changes what the network computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.model.growth import gather_neurons
from plasticd.model.select import select_top

AGE_MAX = 32767


@dataclass(frozen=True)
class PlasticityConfig:
    prune_fraction: float = 0.1  # share of active connections pruned per cycle
    prune_score: str = "magnitude"  # "magnitude" (|w|) or "credit" (EMA of |w * grad|)
    regrow: str = "gradient"  # "gradient" (RigL), "coactivation" (Hebbian) or "mixed"
    min_age: int = 500  # labelled samples a connection lives through before it may be pruned
    min_sparsity: float = 0.3  # the active count never exceeds (1 - min_sparsity) N²
    max_sparsity: float = 0.7  # ... nor falls below (1 - max_sparsity) N²
    stats_decay: float = 0.8  # EMA decay of coact/credit across cycles

    def __post_init__(self) -> None:
        assert self.prune_score in ("magnitude", "credit"), f"bad prune_score {self.prune_score!r}"
        assert self.regrow in ("gradient", "coactivation", "mixed"), f"bad regrow {self.regrow!r}"
        assert 0.0 <= self.min_sparsity <= self.max_sparsity < 1.0, "need 0 <= min_sparsity <= max_sparsity < 1"

    def bounds(self, n: int) -> tuple[int, int]:
        """Fewest and most active connections allowed in an N × N mask."""
        total = n * n
        return math.ceil(total * (1.0 - self.max_sparsity)), math.floor(total * (1.0 - self.min_sparsity))


@dataclass(frozen=True)
class RewirePlan:
    prune: Tensor  # flat indices into the (N, N) weights that lose their connection
    grow: Tensor  # flat indices that gain one (weight starts at 0)
    active_before: int
    eligible: int  # active connections old enough to be pruned


class UsageStats:
    """Per-connection statistics; one instance per network, shapes follow N."""

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        self.coact = torch.zeros((n, n), dtype=torch.float16, device=device)  # (N, N)
        self.credit = torch.zeros((n, n), dtype=torch.float16, device=device)  # (N, N)
        self.age = torch.zeros((n, n), dtype=torch.int16, device=device)  # (N, N)
        self.observations = 0

    def observe(self, h: Tensor, grad_w: Tensor, w: Tensor, decay: float) -> None:
        """Fold one buffer pass into the EMAs: hidden states ``h`` (K, B, N), dense ``grad_w`` (N, N)."""
        n = h.shape[-1]
        hf = h.reshape(-1, n).float()  # (K*B, N)
        gram = hf.t() @ hf  # (N, N)
        norm = gram.diagonal().sqrt().clamp_min_(1e-12)  # (N,)
        coact = gram.abs_().div_(norm.unsqueeze(1)).div_(norm.unsqueeze(0))  # (N, N) in [0, 1]
        credit = (w * grad_w).abs_()
        credit.div_(credit.max().clamp_min_(1e-30))  # (N, N) in [0, 1]
        keep = decay if self.observations > 0 else 0.0
        self.coact.copy_(torch.lerp(self.coact.float(), coact, 1.0 - keep))
        self.credit.copy_(torch.lerp(self.credit.float(), credit, 1.0 - keep))
        self.observations += 1

    def advance_age(self, samples: int, mask: Tensor) -> None:
        """Age active connections by ``samples`` learned samples (saturating), keep absent ones at 0."""
        samples = min(max(samples, 0), AGE_MAX)
        self.age.clamp_(max=AGE_MAX - samples).add_(samples).mul_(mask)

    def reset_entries(self, flat_index: Tensor) -> None:
        """Forget the history of connections that were just pruned or regrown."""
        for t in (self.coact, self.credit, self.age):
            t.view(-1).index_fill_(0, flat_index, 0)

    def follow(self, index: Tensor) -> None:
        """Re-index every statistic by a size change's ``index`` (M,) (see ``growth.gather_neurons``; fresh: 0)."""
        for name in ("coact", "credit", "age"):
            setattr(self, name, gather_neurons(getattr(self, name), (0, 1), index))

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "coact": self.coact,
            "credit": self.credit,
            "age": self.age,
            "observations": torch.tensor(self.observations, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in ("coact", "credit", "age"):
            getattr(self, name).copy_(state[name])
        self.observations = int(state["observations"])


def regrow_score(cfg: PlasticityConfig, grad_w: Tensor, stats: UsageStats, out: Tensor) -> Tensor:
    """Score of every connection for regrowth (higher is better), written into ``out`` float32 (N, N)."""
    if cfg.regrow == "coactivation":
        return out.copy_(stats.coact)
    torch.abs(grad_w, out=out)
    if cfg.regrow == "gradient":
        return out
    return out.div_(out.max().clamp_min_(1e-30)).add_(stats.coact)


def plan_rewire(
    cfg: PlasticityConfig,
    w: Tensor,
    mask: Tensor,
    grad_w: Tensor,
    stats: UsageStats,
    generator: torch.Generator | None = None,
    scratch: Tensor | None = None,
) -> RewirePlan:
    """Choose which connections to prune and to regrow; modifies nothing but ``scratch``.

    ``scratch`` is an optional float32 buffer shaped like ``w``, reused for the
    scores: allocating N² floats afresh each cycle costs page faults.
    """
    n = w.shape[0]
    flat_mask = mask.view(-1)
    active = int(torch.count_nonzero(flat_mask))
    eligible_mask = flat_mask & (stats.age.view(-1) >= cfg.min_age)
    eligible = int(torch.count_nonzero(eligible_mask))
    lo, hi = cfg.bounds(n)
    target = min(max(active, lo), hi)
    k_prune = min(math.floor(active * cfg.prune_fraction), eligible)
    k_prune = min(max(k_prune, active - target), eligible)  # prune more when above the upper bound
    free = n * n - active
    k_grow = min(max(target - (active - k_prune), 0), free)

    scratch = torch.empty_like(w) if scratch is None else scratch
    if cfg.prune_score == "magnitude":
        prune_rank = torch.abs(w, out=scratch).view(-1)
    else:
        prune_rank = scratch.copy_(stats.credit).view(-1)
    prune = select_top(prune_rank, k_prune, largest=False, valid=eligible_mask, generator=generator)
    grow_rank = regrow_score(cfg, grad_w, stats, out=scratch).view(-1)
    grow = select_top(grow_rank, k_grow, largest=True, valid=~flat_mask, generator=generator)
    return RewirePlan(prune=prune, grow=grow, active_before=active, eligible=eligible)
