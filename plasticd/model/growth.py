"""Neuron growth and retirement as pure tensor surgery on a PlasticNet.

Every operation takes the parameters (each with the leading copy axis S,
see ``plastic_net``) and the (N, N) mask, and returns new ones plus an
``index`` (M,) int64: the old neuron each new position comes from, -1 for a
fresh neuron. The caller gathers everything else that is indexed by neuron
(usage statistics, optimizer moments, neuron ids) with the same ``index``,
through the one helper ``gather_neurons``, so all state follows one map.

Neuron j's *incoming* weights are row j of ``w_in``, ``b_in[j]`` and row j of
``w`` (mask row j); its *outgoing* weights are column j of ``w`` (mask
column j) and column j of ``w_out``. Every copy (the live weights and their
average) gets the same surgery, so training and predictions are both
preserved. Operations, each exact up to float rounding:

* ``divide``: Net2Net division. The child copies the parent's incoming
  weights; every outgoing weight of the parent (the self-connection and the
  connections to other children included) is shared as α : 1-α between
  parent and child. Both compute the same activation, so the sum is the
  old contribution for any α: α = 0.5 ± jitter breaks the symmetry exactly
  (the two then get gradients in the ratio α : 1-α and drift apart).
  Optional symmetric incoming noise (Firefly: θ±δ) is only first-order
  function-preserving, hence off by default.
* ``add_neurons``: new neurons with given incoming and outgoing weights;
  exact when one of the two sides is zero (see ``gradmax_directions``).
* ``retire``: drop neurons; exact when their outgoing weights are zero, or
  on every input on which they are inactive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from plasticd.model.plastic_net import NEURON_AXES

OUTGOING = {"w": 1, "w_out": 1}  # parameter -> axis whose entries are a neuron's outgoing weights


@dataclass(frozen=True)
class Resize:
    """A network of M neurons made from one of N: what every surgery returns and ``Engine.resize`` applies.

    Unpacks as ``theta, mask, index`` (``engine.resize(*resize)``).
    """

    theta: dict[str, Tensor]  # each (S, ...) sized for M neurons
    mask: Tensor  # (M, M) bool
    index: Tensor  # (M,) int64 on the CPU: the old neuron behind each new position, -1 for a fresh one

    def __iter__(self) -> Iterator[dict[str, Tensor] | Tensor]:
        return iter((self.theta, self.mask, self.index))


def gather_neurons(t: Tensor, axes: tuple[int, ...], index: Tensor, lead: int = 0) -> Tensor:
    """``t`` re-indexed along each neuron axis (after ``lead`` leading axes) by ``index`` (M,); -1 gives zeros."""
    if not axes:
        return t.clone()
    has_fresh = bool((index < 0).any())  # once, before moving to the device (no sync per axis)
    fresh = (index < 0).to(t.device)
    safe = index.clamp_min(0).to(t.device)
    for axis in axes:
        t = t.index_select(lead + axis, safe)
        if has_fresh:
            shape = [1] * t.dim()
            shape[lead + axis] = index.numel()
            t = t.masked_fill(fresh.view(shape), 0)
    return t.contiguous()


def remap(theta: dict[str, Tensor], mask: Tensor, index: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Parameters (each (S, ...)) and mask (N, N) gathered by ``index`` (M,): fresh neurons are all-zero and unconnected."""
    out = {k: gather_neurons(v, NEURON_AXES[k], index, lead=1) for k, v in theta.items()}
    return out, gather_neurons(mask, (0, 1), index)


def scale_outgoing(theta: dict[str, Tensor], scale: Tensor) -> None:
    """Multiply every neuron's outgoing weights (columns of w and w_out) by ``scale`` (N,), in place."""
    for name, axis in OUTGOING.items():
        shape = [1] * theta[name].dim()
        shape[1 + axis] = scale.numel()
        theta[name].mul_(scale.view(shape).to(theta[name]))


def divide(
    theta: dict[str, Tensor],
    mask: Tensor,
    parents: Tensor,
    jitter: float = 0.1,
    in_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> Resize:
    """Split each neuron in ``parents`` (P,) (distinct) into itself and a child appended at the end.

    Outgoing weights are shared α : 1-α with α ~ U(0.5 - jitter, 0.5 + jitter)
    per parent (exact). ``in_noise`` > 0 perturbs the incoming weights by
    δ ~ N(0, in_noise²·w²): the parent gets +(1-α)δ, the child -αδ, so the
    change is second order in δ (Firefly's θ±δ generalised to uneven shares).
    Returns (theta, mask, index) with M = N + P neurons.
    """
    n, p = mask.shape[0], parents.numel()
    assert parents.unique().numel() == p, "parents must be distinct"
    assert p == 0 or (0 <= int(parents.min()) and int(parents.max()) < n), f"parents must lie in [0, {n})"
    assert 0.0 <= jitter < 0.5, f"jitter must be in [0, 0.5), got {jitter}"
    parents = parents.to(torch.int64).cpu()
    index = torch.cat((torch.arange(n), parents))  # (N+P,)
    alpha = 0.5 + (torch.rand(p, generator=generator) * 2.0 - 1.0) * jitter  # (P,)
    scale = torch.ones(n + p)
    scale[parents] = alpha
    scale[n:] = 1.0 - alpha
    theta, mask = remap(theta, mask, index)
    scale_outgoing(theta, scale)
    if in_noise > 0.0:
        # Parent +(1-α)δ, child -αδ: the first-order terms α(1-α)δ·f' - (1-α)αδ·f' cancel for any α.
        for name in ("w_in", "b_in", "w"):
            t = theta[name]  # (S, N+P, ...)
            a = alpha.view((1, p) + (1,) * (t.dim() - 2)).to(t)
            noise = torch.randn(t[:, n:].shape, generator=generator).to(t) * in_noise * t[:, n:].abs()
            t[:, parents.to(t.device)] += (1.0 - a) * noise
            t[:, n:] -= a * noise
        theta["w"].mul_(mask)  # noise never creates a connection the mask lacks
    return Resize(theta, mask, index)


def add_neurons(
    theta: dict[str, Tensor],
    mask: Tensor,
    w_in: Tensor,
    b_in: Tensor,
    w_out: Tensor,
    w_col: Tensor,
    new_mask: tuple[Tensor, Tensor],
) -> Resize:
    """Append P neurons with incoming ``w_in`` (P, D), ``b_in`` (P,) and outgoing ``w_out`` (C, P), ``w_col`` (N, P).

    Their own recurrent row is zero. ``new_mask`` is (rows (P, N+P), columns (N, P)): the connections the new
    neurons receive and send. ``w_col`` is masked by the columns. Every copy gets the same values.
    """
    n, p = mask.shape[0], w_in.shape[0]
    rows, cols = new_mask
    assert rows.shape == (p, n + p) and cols.shape == (n, p), f"new_mask must be ((P, N+P), (N, P)) for P={p}, N={n}"
    index = torch.cat((torch.arange(n), torch.full((p,), -1, dtype=torch.int64)))
    theta, mask = remap(theta, mask, index)
    mask[n:] = rows.to(mask.device)
    mask[:n, n:] = cols.to(mask.device)
    theta["w_in"][:, n:] = w_in.to(theta["w_in"])
    theta["b_in"][:, n:] = b_in.to(theta["b_in"])
    theta["w_out"][:, :, n:] = w_out.to(theta["w_out"])
    theta["w"][:, :n, n:] = w_col.to(theta["w"]) * cols.to(theta["w"])
    return Resize(theta, mask, index)


def retire(theta: dict[str, Tensor], mask: Tensor, keep: Tensor) -> Resize:
    """Keep only the neurons where ``keep`` (N,) bool is True; every tensor is compacted (no dangling rows/columns)."""
    assert keep.dtype == torch.bool and keep.shape == (mask.shape[0],), "keep must be a (N,) bool tensor"
    index = torch.nonzero(keep.cpu()).squeeze(1)
    theta, mask = remap(theta, mask, index)
    return Resize(theta, mask, index)


def random_connections(n: int, p: int, density: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Mask rows (P, N+P) and columns (N, P) for P new neurons, each entry on with probability ``density``."""
    rows = torch.rand((p, n + p), generator=generator) < density
    cols = torch.rand((n, p), generator=generator) < density
    return rows, cols


# -------------------------------------------------------------------- signals


def gradient_load(da: Tensor) -> Tensor:
    """Each neuron's share (N,) of the squared pre-activation gradient over the buffer: who carries the error."""
    load = da.square().sum(dim=(0, 1))  # (N,)
    return load / load.sum().clamp_min(1e-30)


def gradmax_directions(xn: Tensor, da: Tensor, dlogits: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Top-``p`` singular directions of G = Zᵀ [x, 1] (N+C, D+1), Z = [Σ_{k≥2} da_k, dlogits] (B, N+C).

    G is the gradient of the loss with respect to a zero "shortcut" from the
    input (and a bias) straight to every position a new neuron would feed:
    the recurrent pre-activations of iterations 2..K and the logits.
    A new neuron with incoming v and outgoing o gets, at zero incoming
    weights (tanh), ‖∂L/∂v‖ = ‖Gᵀo‖, maximised by the left singular vectors
    (GradMax); at zero outgoing weights (relu, linearised), ‖∂L/∂o‖ ≈ ‖Gv‖,
    maximised by the right ones. Returns (left (P, N+C), right (P, D+1)), unit rows.
    """
    b = xn.shape[0]
    z = torch.cat((da[1:].sum(dim=0), dlogits), dim=1)  # (B, N+C)
    x1 = torch.cat((xn, xn.new_ones((b, 1))), dim=1)  # (B, D+1)
    g = z.t() @ x1  # (N+C, D+1)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    p = min(p, u.shape[1])
    return u[:, :p].t().contiguous(), vh[:p].contiguous()
