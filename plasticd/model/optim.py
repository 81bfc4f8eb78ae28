"""The optimizer and the surgery its per-element state needs when connections change.

Plain SGD is one multi-tensor update and keeps no state (Adam is the default: ``train.optimizer``).
Adam, AdamW and SGD with momentum call the very kernels torch.optim's fused
implementations call (``torch._fused_adam_``, ``torch._fused_adamw_``,
``torch._fused_sgd_``: one kernel per step on CPU and CUDA) with the same
arguments and the same state layout, so every number is bit-identical to
``torch.optim.Adam(..., fused=True)`` (tests/test_optim.py) — without
torch.optim's per-step bookkeeping, and without its first construction, which
imports torch._dynamo (~3 s of start-up). Gradients are assigned by hand.
Every change of the connection structure goes through ``reset_entries`` so a
rewired entry never keeps stale momentum: RigL's rule (new weights and their
moments start at zero).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

_STATE_SLOTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
FIRST_MOMENTS = ("exp_avg", "momentum_buffer")  # the slots that point along the recent update direction
ADAM_EPS = 1e-8  # torch.optim.Adam's default


@dataclass(frozen=True)
class OptimConfig:
    kind: str = "sgd"  # "sgd", "adam" or "adamw"
    lr: float = 5e-3  # learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decays
    momentum: float = 0.0  # SGD momentum
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw)


class PlainSGD:
    """``p -= lr * (grad + weight_decay * p)`` for every parameter, in one or two multi-tensor ops.

    torch.optim.SGD computes the same; its per-call bookkeeping costs about as
    much as the arithmetic when one sample is learned at a time.
    """

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[Tensor, dict] = {}  # no per-element state

    @torch.no_grad()
    def step(self) -> None:
        grads = cast(list[Tensor], [p.grad for p in self.params])  # every one assigned by the engine
        if self.weight_decay:
            torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
        torch._foreach_add_(self.params, grads, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"state": {}, "param_groups": [{"lr": self.lr, "weight_decay": self.weight_decay}]}

    def load_state_dict(self, state: dict) -> None:
        pass  # stateless: the learning rate comes from the settings


class FusedAdam:
    """Adam (L2 weight decay) or AdamW (decoupled) over ``params``: torch.optim.Adam/AdamW(fused=True)'s step.

    ``state[p]`` holds ``step`` (a float32 scalar tensor on ``p``'s device), ``exp_avg`` and
    ``exp_avg_sq``, created at the first step, exactly as torch.optim keeps them; ``param_groups[0]``
    holds ``lr`` and ``betas`` (``per_step`` sets them) and ``weight_decay``, ``eps``.
    """

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float], weight_decay: float, decoupled: bool) -> None:
        self.params = list(params)
        self.decoupled = decoupled
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "betas": betas, "weight_decay": weight_decay, "eps": ADAM_EPS}]
        self.state: defaultdict[Tensor, dict] = defaultdict(dict)

    def step(self) -> None:  # the parameters never require grad: no no_grad context per call
        group = self.param_groups[0]
        states = [self.state[p] for p in self.params]
        for p, st in zip(self.params, states, strict=True):
            if not st:  # lazy, as torch.optim: the moments exist once the first step ran
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        steps = [st["step"] for st in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        kernel(
            self.params,
            cast(list[Tensor], [p.grad for p in self.params]),  # every one assigned by the engine
            [st["exp_avg"] for st in states],
            [st["exp_avg_sq"] for st in states],
            [],
            steps,
            amsgrad=False,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=float(group["weight_decay"]),
            eps=float(group["eps"]),
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


class FusedSGD:
    """SGD with momentum: torch.optim.SGD(fused=True)'s step (``state[p]["momentum_buffer"]`` after the first)."""

    def __init__(self, params: list[Tensor], lr: float, momentum: float, weight_decay: float) -> None:
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.state: defaultdict[Tensor, dict] = defaultdict(dict)

    def step(self) -> None:  # the parameters never require grad: no no_grad context per call
        group = self.param_groups[0]
        buffers = [self.state[p].get("momentum_buffer") for p in self.params]
        first = all(b is None for b in buffers)
        if first:
            buffers = [torch.empty_like(p) for p in self.params]
        torch._fused_sgd_(
            self.params,
            cast(list[Tensor], [p.grad for p in self.params]),
            cast(list[Tensor], buffers),
            weight_decay=float(group["weight_decay"]),
            momentum=float(group["momentum"]),
            lr=float(group["lr"]),
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=first,
            grad_scale=None,
            found_inf=None,
        )
        for p, buf in zip(self.params, buffers, strict=True):
            self.state[p]["momentum_buffer"] = buf


Optimizer = FusedAdam | FusedSGD | PlainSGD


def build_optimizer(params: list[Tensor], cfg: OptimConfig) -> Optimizer:
    """An optimizer over ``params`` (leaf tensors whose ``.grad`` we fill by hand)."""
    if cfg.kind in ("adam", "adamw"):
        return FusedAdam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, decoupled=cfg.kind == "adamw")
    if cfg.kind == "sgd" and cfg.momentum == 0.0:
        return PlainSGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.kind == "sgd":
        return FusedSGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {cfg.kind!r}")


def state_tensors(opt: Optimizer, param: Tensor, slots: tuple[str, ...] = _STATE_SLOTS) -> list[Tensor]:
    """The per-element state tensors (of ``slots``) the optimizer keeps for ``param`` (empty before the first step)."""
    state = opt.state.get(param, {})
    return [state[slot] for slot in slots if isinstance(state.get(slot), Tensor)]


def reset_entries(opt: Optimizer, param: Tensor, flat_index: Tensor) -> None:
    """Zero every per-element optimizer state of ``param`` at ``flat_index`` (into ``param.view(-1)``)."""
    for slot in state_tensors(opt, param):
        slot.view(-1).index_fill_(0, flat_index, 0.0)


def zero_first_moments(opt: Optimizer, params: list[Tensor]) -> None:
    """Zero the first-moment state (``FIRST_MOMENTS``) of ``params``; second moments are kept."""
    for p in params:
        for moment in state_tensors(opt, p, FIRST_MOMENTS):
            moment.zero_()


def per_step(opt: Optimizer, cfg: OptimConfig, lr: float, samples: int) -> None:
    """Set the step's hyper-parameters so that a step over ``samples`` summed samples does what that many
    single-sample steps would, to first order — learning does not depend on how the stream was batched:

    * plain SGD: the gradient is a sum, so the learning rate stays per sample (the linear scaling rule);
    * SGD with momentum: the momentum decays per sample, ``momentum ** samples`` per step;
    * Adam/AdamW: the moments decay per sample, ``beta ** samples`` per step, and since Adam normalises
      the update, the rate grows with the square root of the samples (the square-root scaling rule for
      adaptive methods, Malladi et al., "On the SDEs and scaling rules for adaptive gradient algorithms",
      2022). With one sample per step every value is the configured one.
    """
    if isinstance(opt, PlainSGD):
        opt.lr = lr
        return
    for group in opt.param_groups:
        if cfg.kind == "sgd":
            group["lr"] = lr
            group["momentum"] = cfg.momentum**samples
        else:
            group["lr"] = lr * samples**0.5
            group["betas"] = (cfg.betas[0] ** samples, cfg.betas[1] ** samples)
