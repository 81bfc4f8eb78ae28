"""The plastic network: N recurrent neurons under a binary connection mask.

    u   = W_in x + b_in                      # (B, N) computed once per sample
    h_1 = act(u)                             # h_0 = 0
    h_k = act(u + h_{k-1} (W ⊙ M)ᵀ)          # k = 2..K
    y   = W_out h_K + b_out                  # (B, C) logits

W is stored dense and kept exactly zero wherever the mask M is off, so the
forward pass needs no masking. Gradients are written by hand (backprop
through the K iterations) into persistent buffers: no autograd graph and no
per-step allocation of parameter-sized tensors. The dense recurrent
gradient (before masking) is what RigL ranks absent connections by.

Every parameter is stored with a leading *copy* axis of size S: copy 0 is
the live network that trains, copy 1 (when present) its running average,
which predicts. One batched matmul runs both copies at once, so averaged
predictions cost far less than a second forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PARAM_NAMES = ("w_in", "b_in", "w", "w_out", "b_out")
LIVE = 0  # index of the training copy along the copy axis
# Axes along which each parameter is indexed by neuron (without the copy axis): growth
# reshapes along them, merges line stored history up with the live neurons along them.
NEURON_AXES: dict[str, tuple[int, ...]] = {"w_in": (0,), "b_in": (0,), "w": (0, 1), "w_out": (1,), "b_out": ()}


@dataclass(frozen=True)
class NetConfig:
    input_dim: int = 784  # features per sample (D)
    output_dim: int = 10  # classes (C)
    neurons: int = 400  # recurrent neurons (N)
    iterations: int = 5  # recurrent updates per sample (K)
    sparsity: float = 0.5  # initial fraction of absent recurrent connections
    activation: str = "relu"  # "relu" or "tanh"; both have f(0) = 0
    recurrent_scale: float = 0.5  # init std of W is scale / sqrt(active fan-in)

    def __post_init__(self) -> None:
        assert self.activation in ("relu", "tanh"), f"activation must be relu or tanh, got {self.activation!r}"
        assert 0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}"
        assert self.neurons >= 1 and self.iterations >= 1, "neurons and iterations must be positive"


@dataclass
class Trace:
    """What the backward pass needs from a forward pass over S copies."""

    x: Tensor  # (B, D) the (normalised) input
    h: Tensor  # (K, S, B, N) hidden state after each iteration, per copy
    logits: Tensor  # (S, B, C)


def init_params(cfg: NetConfig, generator: torch.Generator, copies: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    """Fresh parameters (torch.nn.Linear-style uniform init), each (copies, ...) with identical copies,
    and the initial (N, N) bool mask; on the CPU."""
    n, d, c = cfg.neurons, cfg.input_dim, cfg.output_dim

    def uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)

    mask = torch.rand((n, n), generator=generator) >= cfg.sparsity  # (N, N) True = connection present
    fan_in = max(1.0, n * (1.0 - cfg.sparsity))
    w = torch.randn((n, n), generator=generator) * (cfg.recurrent_scale / math.sqrt(fan_in))
    single = {
        "w_in": uniform((n, d), d),  # (N, D)
        "b_in": uniform((n,), d),  # (N,)
        "w": w * mask,  # (N, N), zero where the mask is off
        "w_out": uniform((c, n), n),  # (C, N)
        "b_out": uniform((c,), n),  # (C,)
    }
    params = {k: v.unsqueeze(0).repeat((copies,) + (1,) * v.dim()) for k, v in single.items()}
    return params, mask


def forward(theta: dict[str, Tensor], x: Tensor, cfg: NetConfig, ws: Workspace | None = None) -> Trace:
    """Run K iterations of every copy in ``theta`` (each (S, ...)) on the batch ``x`` (B, D).

    With a ``ws`` (and at most ``ws.max_rows`` rows) the trace is written into its buffers, through views
    made once: the same numbers, a third of the dispatched ops; valid until the next call of that shape.
    """
    assert x.dim() == 2 and x.shape[1] == cfg.input_dim, f"x must be (B, {cfg.input_dim}), got {tuple(x.shape)}"
    s, n = theta["w"].shape[0], theta["w"].shape[1]
    k, b = cfg.iterations, x.shape[0]
    f = ws.forward_buffers(theta, b, k) if ws is not None else None
    if f is not None:
        torch.baddbmm(f.b_in, x.expand(s, b, -1), f.w_in_t, out=f.u)  # (S, B, N)
        if cfg.activation == "relu":
            torch.clamp_min(f.u, 0.0, out=f.h_at[0])
            for i in range(1, k):
                torch.baddbmm(f.u, f.h_at[i - 1], f.w_t, out=f.h_at[i]).relu_()
        else:
            torch.tanh(f.u, out=f.h_at[0])
            for i in range(1, k):
                torch.baddbmm(f.u, f.h_at[i - 1], f.w_t, out=f.h_at[i]).tanh_()
        torch.baddbmm(f.b_out, f.h_at[k - 1], f.w_out_t, out=f.logits)  # (S, B, C)
        return Trace(x=x, h=f.h, logits=f.logits)
    h = torch.empty((k, s, b, n), dtype=x.dtype, device=x.device)  # (K, S, B, N)
    u = torch.baddbmm(theta["b_in"].unsqueeze(1), x.expand(s, b, -1), theta["w_in"].transpose(1, 2))  # (S, B, N)
    act_ = Tensor.relu_ if cfg.activation == "relu" else Tensor.tanh_
    if cfg.activation == "relu":
        torch.clamp_min(u, 0.0, out=h[0])
    else:
        torch.tanh(u, out=h[0])
    w_t = theta["w"].transpose(1, 2)  # (S, N, N)
    for i in range(1, k):
        act_(torch.baddbmm(u, h[i - 1], w_t, out=h[i]))
    logits = torch.baddbmm(theta["b_out"].unsqueeze(1), h[k - 1], theta["w_out"].transpose(1, 2))  # (S, B, C)
    return Trace(x=x, h=h, logits=logits)


def backward(
    live: dict[str, Tensor], trace: Trace, dlogits: Tensor, grads: dict[str, Tensor], cfg: NetConfig, ws: Workspace | None = None
) -> None:
    """Write dL/dθ of the live copy into ``grads`` given dL/dlogits (B, C) of that copy.

    ``live`` holds the live copy's parameters without the copy axis.
    ``grads["w"]`` receives the *dense* recurrent gradient: entries where the
    mask is off are filled too. Mask it before an optimizer step. With the ``ws`` the trace
    was made in, the same numbers through buffers and views made once.
    """
    g = ws.backward_buffers(live, trace, cfg.activation) if ws is not None else None
    if g is not None:
        torch.mm(dlogits.t(), g.h_last, out=grads["w_out"])  # (C, N)
        torch.sum(dlogits, dim=0, out=grads["b_out"])  # (C,)
        _da_into(g, dlogits, cfg)  # (K, B, N)
        if cfg.iterations > 1:
            g.h_prev.copy_(g.h_prev_src)  # the live copy's first K-1 states, contiguous
            torch.mm(g.da_rest_t, g.h_prev_flat, out=grads["w"])
        else:
            grads["w"].zero_()
        torch.sum(g.da, dim=0, out=g.du)  # (B, N)
        (torch.mul if g.du.shape[0] == 1 else torch.mm)(g.du_t, trace.x, out=grads["w_in"])  # (N, D)
        torch.sum(g.du, dim=0, out=grads["b_in"])  # (N,)
        return
    h, x = trace.h[:, LIVE], trace.x  # (K, B, N), (B, D)
    k, n = h.shape[0], h.shape[2]
    torch.mm(dlogits.t(), h[k - 1], out=grads["w_out"])  # (C, N)
    torch.sum(dlogits, dim=0, out=grads["b_out"])  # (C,)
    da = pre_activation_grads(live, trace, dlogits, cfg)  # (K, B, N)
    if k > 1:
        # All K-1 recurrent outer products in one GEMM: (N, (K-1)B) @ ((K-1)B, N).
        torch.mm(da[1:].reshape(-1, n).t(), h[:-1].reshape(-1, n), out=grads["w"])
    else:
        grads["w"].zero_()
    du = da.sum(dim=0)  # (B, N) u feeds every iteration
    if du.shape[0] == 1:  # a rank-1 outer product: broadcasting beats a k=1 GEMM
        torch.mul(du.t(), x, out=grads["w_in"])  # (N, D)
    else:
        torch.mm(du.t(), x, out=grads["w_in"])  # (N, D)
    torch.sum(du, dim=0, out=grads["b_in"])  # (N,)


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every entry of every tensor is finite: one norm per tensor, one host sync for all."""
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def pre_activation_grads(live: dict[str, Tensor], trace: Trace, dlogits: Tensor, cfg: NetConfig) -> Tensor:
    """dL/d(pre-activation) (K, B, N) of the live copy at every iteration, given dL/dlogits (B, C)."""
    h = trace.h[:, LIVE]  # (K, B, N)
    # act'(a) for every iteration at once, from the outputs: relu' = [h > 0], tanh' = 1 - h².
    slope = (h > 0).to(h.dtype) if cfg.activation == "relu" else 1.0 - h * h  # (K, B, N)
    da = torch.empty_like(h)
    dh = dlogits @ live["w_out"]  # (B, N)
    for i in range(h.shape[0] - 1, -1, -1):
        torch.mul(dh, slope[i], out=da[i])
        if i > 0:
            dh = da[i] @ live["w"]  # (B, N)
    return da


def _da_into(g: _Backward, dlogits: Tensor, cfg: NetConfig) -> None:
    """``pre_activation_grads`` into the workspace's ``da``: the same products, in the same order."""
    if cfg.activation == "relu":
        torch.gt(g.h_live, 0, out=g.slope)  # bool: dh * True = dh, dh * False = ±0, as the float slope gives
    else:
        torch.mul(g.h_live, g.h_live, out=g.slope).neg_().add_(1.0)  # 1 - h², rounded once as 1.0 - h * h is
    torch.mm(dlogits, g.w_out, out=g.dh)  # (B, N)
    for i in range(cfg.iterations - 1, -1, -1):
        torch.mul(g.dh, g.slope_at[i], out=g.da_at[i])
        if i > 0:
            torch.mm(g.da_at[i], g.w, out=g.dh)


@dataclass
class _Forward:
    """A forward pass's buffers for one (theta, B): outputs, and views of the weights made once."""

    u: Tensor  # (S, B, N)
    h: Tensor  # (K, S, B, N)
    h_at: list[Tensor]  # h[i], each (S, B, N)
    logits: Tensor  # (S, B, C)
    b_in: Tensor  # (S, 1, N)
    w_in_t: Tensor  # (S, D, N)
    w_t: Tensor  # (S, N, N)
    b_out: Tensor  # (S, 1, C)
    w_out_t: Tensor  # (S, N, C)


@dataclass
class _Backward:
    """A backward pass's buffers for one trace buffer and live copy."""

    h_live: Tensor  # (K, B, N) view of the trace
    h_last: Tensor  # (B, N) the last state of the live copy
    h_prev_src: Tensor  # (K-1, B, N) view
    h_prev: Tensor  # (K-1, B, N) contiguous copy
    h_prev_flat: Tensor  # ((K-1)B, N) view of it
    slope: Tensor  # (K, B, N) bool (relu) or float (tanh)
    slope_at: list[Tensor]
    da: Tensor  # (K, B, N)
    da_at: list[Tensor]
    da_rest_t: Tensor  # (N, (K-1)B) view of da[1:]
    dh: Tensor  # (B, N)
    du: Tensor  # (B, N)
    du_t: Tensor  # (N, B) view
    w_out: Tensor  # (C, N) live
    w: Tensor  # (N, N) live


class Workspace:
    """Buffers and views that ``forward``/``backward`` reuse at small batch sizes (the per-sample path).

    A step over one sample is a few dozen tiny kernels; making the same views and
    allocating the same outputs again costs as much as the arithmetic. Entries are
    keyed by the weights' storage and the batch size; ``clear`` (or a new
    workspace) when the weights are replaced. Outputs written here (a trace's
    ``h`` and ``logits``) are valid until the next pass of the same shape.
    """

    def __init__(self, max_rows: int = 64, max_entries: int = 8) -> None:
        self.max_rows = max_rows
        self.max_entries = max_entries
        self._forward: dict[tuple, _Forward] = {}
        self._backward: dict[tuple, _Backward] = {}

    def clear(self) -> None:
        self._forward.clear()
        self._backward.clear()

    def forward_buffers(self, theta: dict[str, Tensor], b: int, k: int) -> _Forward | None:
        if b > self.max_rows:
            return None
        key = (*(theta[name].data_ptr() for name in PARAM_NAMES), theta["w"].shape, b, k)
        f = self._forward.get(key)
        if f is None:
            if len(self._forward) >= self.max_entries:
                self.clear()
            w = theta["w"]
            s, n, c = w.shape[0], w.shape[1], theta["w_out"].shape[1]
            h = torch.empty((k, s, b, n), dtype=w.dtype, device=w.device)
            f = self._forward[key] = _Forward(
                u=torch.empty((s, b, n), dtype=w.dtype, device=w.device),
                h=h,
                h_at=list(h.unbind(0)),
                logits=torch.empty((s, b, c), dtype=w.dtype, device=w.device),
                b_in=theta["b_in"].unsqueeze(1),
                w_in_t=theta["w_in"].transpose(1, 2),
                w_t=w.transpose(1, 2),
                b_out=theta["b_out"].unsqueeze(1),
                w_out_t=theta["w_out"].transpose(1, 2),
            )
        return f

    def backward_buffers(self, live: dict[str, Tensor], trace: Trace, activation: str) -> _Backward | None:
        if trace.h.shape[2] > self.max_rows:
            return None
        key = (trace.h.data_ptr(), trace.h.shape, live["w"].data_ptr(), live["w_out"].data_ptr(), activation)
        g = self._backward.get(key)
        if g is None:
            if len(self._backward) >= self.max_entries:
                self.clear()
            h_live = trace.h[:, LIVE]  # (K, B, N)
            k, b, n = h_live.shape
            da = torch.empty_like(h_live, memory_format=torch.contiguous_format)
            slope = torch.empty(h_live.shape, dtype=torch.bool if activation == "relu" else h_live.dtype, device=h_live.device)
            h_prev = torch.empty((max(k - 1, 0), b, n), dtype=h_live.dtype, device=h_live.device)
            du = torch.empty((b, n), dtype=h_live.dtype, device=h_live.device)
            g = self._backward[key] = _Backward(
                h_live=h_live,
                h_last=h_live[k - 1],
                h_prev_src=h_live[:-1],
                h_prev=h_prev,
                h_prev_flat=h_prev.view(-1, n),
                slope=slope,
                slope_at=list(slope.unbind(0)),
                da=da,
                da_at=list(da.unbind(0)),
                da_rest_t=da[1:].reshape(-1, n).t(),
                dh=torch.empty((b, n), dtype=h_live.dtype, device=h_live.device),
                du=du,
                du_t=du.t(),
                w_out=live["w_out"],
                w=live["w"],
            )
        return g


def cross_entropy_grad(logits: Tensor, labels: Tensor, weight: Tensor | None, label_smoothing: float = 0.0) -> Tensor:
    """dL/dlogits (B, C) of the *summed* cross-entropy L = Σ_b weight_b · CE_b.

    Summing (not averaging) makes the learning rate a per-sample rate: a
    micro-batch of B samples moves the weights about as far as B single
    steps would (the linear scaling rule), so accuracy does not depend on how
    the worker happened to batch the stream. ``weight`` (B,) is 1 for samples
    to learn from and 0 for the others (unlabelled ones, whose ``labels``
    entry may be any valid class); ``None`` means every sample counts.
    """
    b, c = logits.shape
    grad = torch.softmax(logits, dim=1)  # (B, C)
    if label_smoothing:
        grad.sub_(label_smoothing / c)
    grad.scatter_add_(1, labels.unsqueeze(1), grad.new_full((b, 1), label_smoothing - 1.0))
    return grad if weight is None else grad.mul_(weight.unsqueeze(1))
