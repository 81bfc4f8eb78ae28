"""MagMax consolidation: a running max-magnitude fold of task vectors, applied as θ₀ + λ·τ*.

    τ_t = θ_t − θ₀                                  # task vector of the t-th task boundary
    τ*  = where(|τ_t| >= |τ*|, τ_t, τ*)             # running fold: O(P) memory, newer wins ties
    θ   = θ₀ + λ·τ*                                 # the merge (λ = 0.5 in MagMax's scripts)

(danielm1405/magmax, ``src/merging/task_vectors.py``; see ALGORITHMS.md.)

The network changes size (growth adds neurons, retirement removes them), so
θ₀ and τ* are kept together with the persistent neuron ids they were taken
at and re-keyed to the live ids before every fold or apply:

- a neuron id no longer live is dropped with its rows/columns;
- a neuron id with no history (grown since) gets τ* = 0 and θ₀ = its live
  value at that moment, so a merge leaves its weights exactly unchanged
  (it has nothing to consolidate yet) and its later drift counts as task
  vector from then on.

The per-neuron axes are: ``w_in`` rows, ``b_in``, ``w`` rows and columns,
``w_out`` columns; ``b_out`` has none.

Connections: a merge writes only where the live mask is on. Absent
(pruned) connections stay exactly zero whatever θ₀ or τ* hold there; a
connection regrown since the base had θ₀ = 0 there (absent weights are 0),
so its task vector is simply its current weight.

Everything here is pure tensor math on single-copy parameter dicts (no copy
axis): whole-tensor ``torch.where`` and ``index_select``, no Python loops
over entries or neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.model.plastic_net import NEURON_AXES, all_finite


@dataclass(frozen=True)
class MergeResult:
    """What ``MagMaxFold.apply`` computed (the caller decides whether to write it)."""

    theta: dict[str, Tensor]  # merged parameters, single copy, live layout
    changed: int  # entries whose value differs from the live value
    entries: int  # entries that took part (mask on, with history)
    finite: bool  # every merged value is finite


def id_positions(stored: Tensor, live: Tensor) -> tuple[Tensor, Tensor]:
    """For each id in ``live`` (N,), its position in ``stored`` (M,) and whether it is there at all.

    Returns ``(index, found)``, both (N,); ``index`` is 0 (a valid, ignored
    position) where ``found`` is False. Ids are unique int64.
    """
    if stored.numel() == 0:
        return torch.zeros_like(live), torch.zeros(live.shape, dtype=torch.bool)
    order = torch.argsort(stored)
    sorted_ids = stored[order]
    pos = torch.searchsorted(sorted_ids, live).clamp_max(stored.numel() - 1)  # (N,)
    found = sorted_ids[pos] == live
    index = torch.where(found, order[pos], torch.zeros_like(pos))
    return index, found


def realign(t: Tensor, axes: tuple[int, ...], index: Tensor, found: Tensor, fill: Tensor | float) -> Tensor:
    """``t`` re-keyed along its neuron ``axes`` to the live layout; entries of ids not found take ``fill``.

    ``fill`` is a scalar or a tensor already in the live layout (e.g. the live values).
    """
    if not axes:
        return t.clone()
    out = t
    keep = torch.ones((), dtype=torch.bool, device=t.device)
    for axis in axes:
        out = out.index_select(axis, index.to(t.device))
        shape = [1] * t.dim()
        shape[axis] = found.numel()
        keep = keep & found.to(t.device).view(shape)
    fill_t = torch.as_tensor(fill, dtype=t.dtype, device=t.device)
    return torch.where(keep, out, fill_t)


class MagMaxFold:
    """θ₀ and the running max-magnitude task vector τ*, keyed by neuron id.

    ``fold(theta, ids)`` marks a task boundary: the first call takes θ₀
    (a daemon trains from scratch, so the weights at its first boundary are
    the natural base; random init would make the first "task vector" the whole
    of learning), later calls fold τ = θ − θ₀ into τ*. ``apply(...)`` returns
    θ₀ + λ·τ* under the live mask without changing anything.
    """

    def __init__(self) -> None:
        self.base: dict[str, Tensor] = {}  # θ₀ per parameter, single copy
        self.tau: dict[str, Tensor] = {}  # τ* per parameter, same shapes as base
        self.ids = torch.empty(0, dtype=torch.int64)  # (M,) neuron ids of the stored layout, CPU
        self.tasks = 0  # task vectors folded into τ*

    @property
    def has_base(self) -> bool:
        return bool(self.base)

    def _rekey(self, theta: dict[str, Tensor], ids: Tensor) -> None:
        """Bring θ₀ and τ* to the layout of ``ids``: dropped ids vanish, new ids get θ₀ = live, τ* = 0."""
        if torch.equal(self.ids, ids):
            return
        index, found = id_positions(self.ids, ids)
        for name, live in theta.items():
            axes = NEURON_AXES[name]
            self.base[name] = realign(self.base[name], axes, index, found, live)
            self.tau[name] = realign(self.tau[name], axes, index, found, 0.0)
        self.ids = ids.clone()

    @torch.no_grad()
    def fold(self, theta: dict[str, Tensor], ids: Tensor) -> bool:
        """Mark a task boundary at ``theta`` (single copy, live layout). Returns False, changing
        nothing, when ``theta`` or the task vector is not finite."""
        assert set(theta) == set(NEURON_AXES), f"theta must hold {sorted(NEURON_AXES)}, got {sorted(theta)}"
        if not all_finite(list(theta.values())):  # it would become θ₀ (first fold, or new neurons' history)
            return False
        if not self.has_base:
            self.base = {k: v.detach().clone() for k, v in theta.items()}
            self.tau = {k: torch.zeros_like(v) for k, v in theta.items()}
            self.ids = ids.clone()
            return True
        before = self.snapshot()
        self._rekey(theta, ids)
        taus = {k: theta[k] - self.base[k] for k in theta}
        if not all_finite(list(taus.values())):  # finite θ and θ₀ can still overflow when subtracted
            self.restore(before)
            return False
        for k, tau in taus.items():
            self.tau[k] = torch.where(tau.abs() >= self.tau[k].abs(), tau, self.tau[k])  # ties: the newer wins
        self.tasks += 1
        return True

    @torch.no_grad()
    def apply(self, theta: dict[str, Tensor], ids: Tensor, mask: Tensor, lam: float) -> MergeResult:
        """θ₀ + λ·τ* in the live layout, on the live mask; ``theta`` (single copy) is not modified."""
        assert self.has_base, "apply needs a base: call fold() at a task boundary first"
        assert mask.shape == theta["w"].shape, f"mask {tuple(mask.shape)} does not match w {tuple(theta['w'].shape)}"
        self._rekey(theta, ids)
        merged = {k: torch.add(self.base[k], self.tau[k], alpha=lam) for k in theta}
        merged["w"] = torch.where(mask, merged["w"], torch.zeros_like(merged["w"]))  # pruned stays exactly 0
        finite = all_finite(list(merged.values()))
        changed = sum(int(torch.count_nonzero(merged[k] != theta[k])) for k in theta)
        entries = sum(v.numel() for k, v in theta.items() if k != "w") + int(torch.count_nonzero(mask))
        return MergeResult(theta=merged, changed=changed, entries=entries, finite=finite)

    def reset(self) -> None:
        """Forget the base and every folded task vector."""
        self.base, self.tau = {}, {}
        self.ids = torch.empty(0, dtype=torch.int64)
        self.tasks = 0

    def snapshot(self) -> tuple:
        """A cheap handle to the current state: fold/apply replace tensors, never write into them."""
        return dict(self.base), dict(self.tau), self.ids, self.tasks

    def restore(self, snap: tuple) -> None:
        """Go back to a ``snapshot()``."""
        base, tau, self.ids, self.tasks = snap
        self.base, self.tau = dict(base), dict(tau)

    # ------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Tensor]:
        """Named tensors (empty before the first fold)."""
        if not self.has_base:
            return {}
        out = {f"base.{k}": v for k, v in self.base.items()}
        out.update({f"tau.{k}": v for k, v in self.tau.items()})
        out["ids"] = self.ids
        out["tasks"] = torch.tensor([self.tasks], dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device | str = "cpu") -> None:
        """Restore ``state_dict()`` output; an empty dict means no base yet."""
        self.reset()
        if not state:
            return
        self.base = {k: state[f"base.{k}"].to(device) for k in NEURON_AXES}
        self.tau = {k: state[f"tau.{k}"].to(device) for k in NEURON_AXES}
        self.ids = state["ids"].cpu().to(torch.int64)
        self.tasks = int(state["tasks"][0])
